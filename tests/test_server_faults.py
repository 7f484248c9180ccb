"""A server that is missing, incomplete or goes away mid-run gets a bounded, clear answer.

No server: exit 3 naming the URL, within a bound (a bound, not a speed test). A model missing:
exit 3 naming it. A server restarted mid-run on the same ports: the run retries and completes
with the bytes of an undisturbed run. A server gone for longer than the retry deadline: exit 3
with the checkpoint kept; once it is back, the same command resumes and completes identically.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from predict_fixtures import (
    ROOT,
    crash,
    orchestrator_cmd,
    outputs_of,
    run_cli,
    wait_for_window,
    windows_done,
    write_coding_fasta,
    write_toy_classifier,
    write_toy_repository,
)
from timing import margin

from orchestrator.embed.triton.server import TritonServer, free_port

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    repo = write_toy_repository(root / "repo", delay=0.15)
    fasta = write_coding_fasta(root / "in.fa", records=24, length=2000, seed=13)
    clf = write_toy_classifier(root / "clf.safetensors")
    return root, repo, fasta, clf


def _args(fasta: Path, clf: Path, url: str) -> list[str]:
    return [str(fasta), "--chunk-size", "500", "--classifier", str(clf), "--server", url,
            "--window", "16", "--batch-size", "8"]


@pytest.fixture(scope="module")
def reference(toy):
    root, repo, fasta, clf = toy
    with TritonServer(repo) as server:
        proc = run_cli("predict", *_args(fasta, clf, server.grpc_url), "-o", str(root / "ref"))
    assert proc.returncode == 0, proc.stderr
    return outputs_of(root / "ref")








def test_no_server_exit_3_in_bounded_time(tmp_path, toy):
    _, _, fasta, clf = toy
    url = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    proc = run_cli("predict", *_args(fasta, clf, url), "-o", str(tmp_path / "o"), timeout=60)
    assert time.monotonic() - t0 < margin(30)
    assert proc.returncode == 3
    assert url in proc.stderr and "Traceback" not in proc.stderr


def test_missing_model_exit_3_names_it(tmp_path, toy):
    _, _, fasta, clf = toy
    repo = write_toy_repository(tmp_path / "repo", models=("dnabert_s",))
    with TritonServer(repo) as server:
        t0 = time.monotonic()
        proc = run_cli("predict", *_args(fasta, clf, server.grpc_url), "-o", str(tmp_path / "o"),
                       timeout=60)
        assert time.monotonic() - t0 < margin(30)
    assert proc.returncode == 3
    assert "esm2" in proc.stderr and server.grpc_url in proc.stderr


def _fixed_ports() -> dict[str, int]:
    return {"grpc_port": free_port(), "http_port": free_port(), "metrics_port": free_port()}


def test_server_restarted_mid_run_completes_identically(tmp_path, toy, reference):
    _, repo, fasta, clf = toy
    ports = _fixed_ports()
    out = tmp_path / "o"
    first = TritonServer(repo, **ports)
    with first:
        proc = subprocess.Popen(
            orchestrator_cmd("predict", *_args(fasta, clf, first.grpc_url), "-o", str(out)),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_window(proc, out)
        crash(first)
    # The server is gone now (killed, then cleaned up); bring a new one up on the same ports.
    time.sleep(1.0)
    try:
        with TritonServer(repo, **ports):
            _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "retrying" in err
    assert outputs_of(out) == reference
    retries = sum(m.get("retries", 0)
                  for m in json.loads((out / "run.json").read_text())["models"])
    assert retries >= 1


def test_server_gone_past_deadline_exit_3_then_resume(tmp_path, toy, reference):
    _, repo, fasta, clf = toy
    ports = _fixed_ports()
    out = tmp_path / "o"
    env = {"VIRNUCPRO_RETRY_DEADLINE": "2"}
    with TritonServer(repo, **ports) as server:
        url = server.grpc_url
        proc = subprocess.Popen(
            orchestrator_cmd("predict", *_args(fasta, clf, url), "-o", str(out)),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **env})
        wait_for_window(proc, out)
        crash(server)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, err
    assert url in err and "rerun" in err
    done = windows_done(out)
    assert done >= 1
    with TritonServer(repo, **ports):
        again = run_cli("predict", *_args(fasta, clf, url), "-o", str(out), env=env)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    assert outputs_of(out) == reference
