"""Helpers for the predict tests: a toy model repository, a classifier for it, golden paths.

The toy `dnabert_s`/`esm2` models are numpy-only Python-backend models that honour the Triton
contract (SEQUENCE strings in, EMBEDDING float32 rows out) and load in about a second, so tests
that restart servers stay fast; the real encoders are used where the numbers matter.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import margin

# The toy models and inputs live with the toy-cluster harness (python -m simulation run --real).
from simulation.toy import (  # noqa: F401
    TOY_CONFIG,
    TOY_MODEL,
    TOY_WIDTH,
    write_coding_fasta,
    write_toy_classifier,
    write_toy_repository,
)

ROOT = Path(__file__).resolve().parents[1]


def orchestrator_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", *args]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300
            ) -> subprocess.CompletedProcess[str]:
    """`python -m orchestrator ARGS` as a real subprocess (exit codes, signals, RSS)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(orchestrator_cmd(*args), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=full_env)


_TRACED_PEAK = """\
import sys, tracemalloc
tracemalloc.start()
from orchestrator.commands.cli import main
code = main(sys.argv[1:])
print(f"PEAK {code} {tracemalloc.get_traced_memory()[1]}")
"""


def traced_peak_bytes(args: list[str]) -> int:
    """Peak bytes a `python -m orchestrator ARGS` run allocated (tracemalloc: Python objects and
    numpy buffers), imports included; asserts exit 0."""
    proc = subprocess.run([sys.executable, "-c", _TRACED_PEAK, *args], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PEAK")]
    assert lines, proc.stderr
    _, code, peak = lines[-1].split()
    assert code == "0", proc.stderr
    return int(peak)


def rows_executed(grpc_url: str) -> dict[str, int]:
    """Rows each model executed since its server started (Triton's statistics, inference_count)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        return {m: int(client.get_inference_statistics(m, as_json=True)["model_stats"][0]
                       .get("inference_count", 0) or 0) for m in ("dnabert_s", "esm2")}
    finally:
        client.close()


# VIRNUCPRO_TEST_DISCOVERY=file: predict_args hands the servers over as a file:/// endpoint list
# (re-read during the run) instead of --server values, to run the fault tests with discovery on.
TEST_DISCOVERY_ENV = "VIRNUCPRO_TEST_DISCOVERY"


def predict_args(fasta: Path, clf: Path, *servers: str) -> list[str]:
    """predict's arguments for the multi-server tests: small windows and requests of 8 rows, so a
    run spans many requests; one --server per endpoint. (No -o: each test adds its own.)"""
    args = [str(fasta), "--chunk-size", "500", "--classifier", str(clf), "--window", "16",
            "--batch-size", "8"]
    if servers and os.environ.get(TEST_DISCOVERY_ENV) == "file":
        listing = Path(tempfile.mkdtemp(prefix="endpoints")) / "servers.txt"
        listing.write_text("".join(f"{u}\n" for s in servers for u in s.split(",")))
        return [*args, "--server", f"file://{listing}"]
    for s in servers:
        args += ["--server", s]
    return args


def start_predict(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`orchestrator predict ARGS` in the background (extra environment on top of ours), as a
    terminal starts it: with SIGINT's default action, even where the test run itself ignores it
    (a shell's background job does), so a test's SIGINT is Ctrl-C."""
    return subprocess.Popen(orchestrator_cmd("predict", *args), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})}, preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stderr_of(proc: subprocess.Popen[str], timeout: float = 180) -> str:
    """Wait for a background run and return its stderr; a run past `timeout` is killed."""
    try:
        return proc.communicate(timeout=timeout)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def outputs_of(outdir: Path) -> dict[str, bytes]:
    """The result files' bytes (run.json holds timings and report.html the finish time, so they
    are not byte-compared)."""
    names = ("prediction_results.txt", "prediction_results_highestscore.csv",
             "sequence_summary.tsv", "sequence_calls.tsv", "viral_regions.tsv",
             "viral_regions.bed", "chunk_scores.bedgraph")
    return {n: (outdir / n).read_bytes() for n in names}


def windows_done(outdir: Path, state: Path | None = None) -> int:
    """Finished windows in the checkpoint manifest (0 before the first commit); `state`: the
    checkpoint folder when it is not OUTDIR's (embed keeps it beside its output file)."""
    manifest = (state or outdir / ".virnucpro_state") / "manifest.json"
    try:
        return json.loads(manifest.read_text())["windows_done"]
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def wait_for_window(proc: subprocess.Popen, outdir: Path, windows: int = 1,
                    state: Path | None = None) -> None:
    """Block until the running predict or embed `proc` has committed `windows` windows."""
    deadline = time.monotonic() + margin(120)
    while windows_done(outdir, state) < windows:
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)


def crash(server) -> None:
    """SIGKILL a TritonServer, as when a node dies: the outage starts at once, mid-run (a graceful
    stop lets in-flight work finish and could let a short run complete first)."""
    server.process.kill()
    server.process.wait()
