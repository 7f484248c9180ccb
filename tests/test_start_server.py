"""`predict --start-server`: a run that brings its own tritonserver and leaves nothing behind.

Each test runs the real CLI as a subprocess, reads the private server's pid from the log, and
after the run checks by that pid (never by name) that the server and every process of its group
(the Python backend's stubs) are gone, and that no shared-memory region of the run is left in
/dev/shm. The server is a real tritonserver; the interrupted runs use toy models that sleep per
request so that the signal arrives mid-run.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
from predict_fixtures import (
    outputs_of,
    run_cli,
    start_predict,
    stderr_of,
    wait_for_window,
    write_coding_fasta,
    write_toy_classifier,
    write_toy_repository,
)

pytestmark = pytest.mark.server

PID = re.compile(r"private tritonserver for this run: pid (\d+)")


def _server_pid(stderr: str) -> int:
    m = PID.search(stderr)
    assert m, stderr
    return int(m.group(1))


def _alive_in_group(pgid: int) -> list[int]:
    """Processes (not zombies) whose process group is `pgid` (the server and its stubs)."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            alive.append(int(entry.name))
    return alive


def _assert_nothing_left(server_pid: int, client_pid: int) -> None:
    assert _alive_in_group(server_pid) == []
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)
    assert not list(Path("/dev/shm").glob(f"virnucpro_{client_pid}_*"))


def test_start_server_runs_end_to_end_on_the_demo_repository(tmp_path, demo_artifacts,
                                                             triton_server) -> None:
    """Same bytes as a run against a standing server of the same repository; nothing left."""
    fasta = write_coding_fasta(tmp_path / "in.fa", records=3, length=900, seed=3)
    clf = str(demo_artifacts / "classifiers" / "500_model.pth")
    args = [str(fasta), "--chunk-size", "500", "--classifier", clf]
    standing = run_cli("predict", *args, "--server", triton_server.grpc_url,
                       "-o", str(tmp_path / "standing"))
    assert standing.returncode == 0, standing.stderr
    proc = start_predict([*args, "--start-server", "--model-repository",
                          str(demo_artifacts / "model_repository"), "-o", str(tmp_path / "own")])
    err = stderr_of(proc, timeout=600)
    assert proc.returncode == 0, err
    _assert_nothing_left(_server_pid(err), proc.pid)
    assert outputs_of(tmp_path / "own") == outputs_of(tmp_path / "standing")


@pytest.fixture(scope="module")
def slow_job(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("start_server")
    repo = write_toy_repository(root / "repo", delay=0.2)
    # 25 windows, one at a time (no look-ahead), 0.2 s or more each: the run goes on for seconds
    # after its first window is committed, so the signal lands mid-run however the threads are
    # scheduled (20 records with look-ahead once finished 1 s after its first window, first)
    fasta = write_coding_fasta(root / "in.fa", records=100, length=2000, seed=4)
    clf = write_toy_classifier(root / "clf.safetensors")
    return [str(fasta), "--chunk-size", "500", "--classifier", str(clf), "--window", "16",
            "--lookahead", "0", "--batch-size", "8", "--start-server", "--model-repository",
            str(repo)]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_mid_run_stops_the_private_server(tmp_path, slow_job, sig, code) -> None:
    out = tmp_path / "out"
    proc = start_predict([*slow_job, "-o", str(out)])
    wait_for_window(proc, out)
    os.kill(proc.pid, sig)
    err = stderr_of(proc)
    assert proc.returncode == code, err
    _assert_nothing_left(_server_pid(err), proc.pid)
    # the interrupted run resumes with a new private server
    rerun = start_predict([*slow_job, "-o", str(out)])
    err = stderr_of(rerun)
    assert rerun.returncode == 0, err
    assert "resuming" in err
    _assert_nothing_left(_server_pid(err), rerun.pid)


def test_error_after_start_stops_the_private_server(tmp_path, slow_job) -> None:
    """A classifier of the wrong width fails after the server is up: exit 2, nothing left."""
    wrong = write_toy_classifier(tmp_path / "wrong.safetensors", width=24)
    args = list(slow_job)
    args[args.index("--classifier") + 1] = str(wrong)
    proc = start_predict([*args, "-o", str(tmp_path / "out")])
    err = stderr_of(proc)
    assert proc.returncode == 2, err
    _assert_nothing_left(_server_pid(err), proc.pid)


def test_start_server_refuses_bad_combinations(tmp_path, slow_job) -> None:
    out = str(tmp_path / "out")
    no_repo = [a for a in slow_job if a != "--model-repository"]
    no_repo.remove(slow_job[slow_job.index("--model-repository") + 1])
    for extra, base in ((["--server", "127.0.0.1:1"], slow_job), ([], no_repo),
                        (["--backend", "local"], slow_job)):
        proc = run_cli("predict", *base, *extra, "-o", out)
        assert proc.returncode == 2, proc.stderr
        assert "--start-server" in proc.stderr.strip().splitlines()[-1]
        assert not PID.search(proc.stderr)
