"""Resume: a run killed mid-way continues from its last finished window, byte for byte.

The server is a real tritonserver with toy models that sleep a little per request, so the run
takes a few seconds and can be killed between windows; the checkpoint logic does not care what
the embeddings are.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from golden_data import GOLDEN
from predict_fixtures import (
    ROOT,
    orchestrator_cmd,
    outputs_of,
    run_cli,
    write_coding_fasta,
    write_toy_classifier,
)
from timing import margin

pytestmark = pytest.mark.server

WINDOW = "16"


@pytest.fixture(scope="module")
def job(tmp_path_factory, slow_server):
    """Input, classifier and the bytes of an uninterrupted run (the reference)."""
    root = tmp_path_factory.mktemp("resume_job")
    fasta = write_coding_fasta(root / "in.fa", records=24, length=2000, seed=11)
    clf = write_toy_classifier(root / "clf.safetensors")
    args = [str(fasta), "--chunk-size", "500", "--classifier", str(clf), "--server",
            slow_server.grpc_url, "--window", WINDOW, "--batch-size", "8"]
    ref = root / "ref"
    proc = run_cli("predict", *args, "-o", str(ref))
    assert proc.returncode == 0, proc.stderr
    windows = json.loads((ref / "run.json").read_text())["counts"]["windows"]
    assert windows >= 4
    return args, outputs_of(ref), windows


def _manifest(outdir: Path) -> dict:
    try:
        return json.loads((outdir / ".virnucpro_state" / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}


def _start_and_interrupt(args: list[str], outdir: Path, sig: int) -> int:
    """Start predict, wait until one window is checkpointed, send `sig`; returns the exit code.

    On an unexpected code, stderr is printed so the failure shows why.
    """
    proc = subprocess.Popen(orchestrator_cmd("predict", *args, "-o", str(outdir)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + margin(120)
    try:
        while _manifest(outdir).get("windows_done", 0) < 1:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "no window was checkpointed in time"
            time.sleep(0.02)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        if proc.returncode not in (-signal.SIGKILL, 143):
            print(err)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def _no_partial_results(outdir: Path) -> None:
    names = {p.name for p in outdir.iterdir()}
    assert not names & {"prediction_results.txt", "prediction_results_highestscore.csv",
                        "sequence_summary.tsv", "run.json"}, names
    assert not [n for n in names if n.endswith(".tmp")], names


def test_kill_9_then_rerun_is_byte_identical(tmp_path, job):
    args, reference, windows = job
    out = tmp_path / "out"
    code = _start_and_interrupt(args, out, signal.SIGKILL)
    assert code == -signal.SIGKILL
    done = _manifest(out)["windows_done"]
    assert 1 <= done < windows, "the kill must land mid-run"
    _no_partial_results(out)

    proc = run_cli("predict", *args, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "resuming" in proc.stderr
    assert outputs_of(out) == reference
    resumed = json.loads((out / "run.json").read_text())["resumed"]
    assert resumed["resumed"] is True and resumed["windows_reused"] >= done


def test_sigterm_exits_143_keeps_windows_and_resumes(tmp_path, job):
    args, reference, _ = job
    out = tmp_path / "out"
    assert _start_and_interrupt(args, out, signal.SIGTERM) == 143
    assert _manifest(out)["windows_done"] >= 1
    _no_partial_results(out)
    proc = run_cli("predict", *args, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert outputs_of(out) == reference


def test_changed_parameter_refused_and_restart_works(tmp_path, job):
    args, reference, _ = job
    out = tmp_path / "out"
    assert _start_and_interrupt(args, out, signal.SIGKILL) == -signal.SIGKILL
    changed = [a if a != WINDOW else "32" for a in args]
    proc = run_cli("predict", *changed, "-o", str(out))
    assert proc.returncode == 2
    assert "window" in proc.stderr and "--restart" in proc.stderr
    # the request size decides how frames are batched on the server, so it is part of the run too
    other_batch = [a if a != "8" else "4" for a in args]
    proc = run_cli("predict", *other_batch, "-o", str(out))
    assert proc.returncode == 2 and "models" in proc.stderr
    proc = run_cli("predict", *changed, "-o", str(out), "--restart")
    assert proc.returncode == 0, proc.stderr
    assert "starting" in proc.stderr
    # The same command again finds a complete run and changes nothing.
    before = outputs_of(out)
    proc = run_cli("predict", *changed, "-o", str(out))
    assert proc.returncode == 0 and outputs_of(out) == before
    assert os.path.exists(out / "run.json")


def test_changed_input_refused(tmp_path, job):
    args, _, _ = job
    out = tmp_path / "out"
    assert _start_and_interrupt(args, out, signal.SIGKILL) == -signal.SIGKILL
    other = write_coding_fasta(tmp_path / "other.fa", records=3, length=900, seed=5)
    proc = run_cli("predict", str(other), *args[1:], "-o", str(out))
    assert proc.returncode == 2
    assert "inputs_sha256" in proc.stderr


def test_resume_with_demo_encoders_is_byte_identical(tmp_path, demo_artifacts, triton_server):
    """The same through the real encoder code (demo weights) served by the session server."""
    args = [str(GOLDEN / "pub_mixed_500.fa"), "--chunk-size", "500", "--classifier",
            str(Path(demo_artifacts) / "classifiers" / "500_model.pth"), "--server",
            triton_server.grpc_url, "--window", "64"]
    proc = run_cli("predict", *args, "-o", str(tmp_path / "ref"))
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert _start_and_interrupt(args, out, signal.SIGKILL) == -signal.SIGKILL
    assert 1 <= _manifest(out)["windows_done"] < 6
    proc = run_cli("predict", *args, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert outputs_of(out) == outputs_of(tmp_path / "ref")
