"""Helpers for the predict tests: a toy model repository, a classifier for it, golden paths.

The toy `dnabert_s`/`esm2` models are numpy-only Python-backend models that honour the Triton
contract (SEQUENCE strings in, EMBEDDING float32 rows out) and load in about a second, so tests
that restart servers stay fast; the real encoders are used where the numbers matter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from timing import margin

ROOT = Path(__file__).resolve().parents[1]
TOY_WIDTH = 8

TOY_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: {max_batch_size}
input [ {{ name: "SEQUENCE" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "EMBEDDING" data_type: TYPE_FP32 dims: [ {dims} ] }} ]
instance_group [ {{ kind: KIND_CPU count: {instances} }} ]
{batching}
{version_policy}
parameters [
  {{ key: "weights_sha256" value: {{ string_value: "toy-{name}{weights_tag}" }} }},
  {{ key: "record_parameters_to" value: {{ string_value: "{record_to}" }} }}{fair_share}{extra}
]
"""

# EMBEDDING row = letter frequencies of the sequence in 8 bins (a pure function of the string).
TOY_MODEL = """\
import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

DELAY = {delay}
SHIFT = {shift}  # added to every value: another model version gives other answers
REPEAT = {repeat}  # the 8 bins repeated: wider rows for memory tests
HANG_AFTER = {hang_after}  # from this execute() on, never return (a hung instance); -1: never


def embed(s):
    b = np.frombuffer(s, dtype=np.uint8).astype(np.int64)
    hist = np.bincount(b % 8, minlength=8).astype(np.float32)
    return np.tile(hist / max(1, len(b)), REPEAT) + SHIFT


class TritonPythonModel:
    def initialize(self, args):
        params = json.loads(args["model_config"]).get("parameters", {{}})
        self.record_to = params.get("record_parameters_to", {{}}).get("string_value", "")

    def execute(self, requests):
        out = []
        self.batches = getattr(self, "batches", 0) + 1
        if 0 <= HANG_AFTER < self.batches:
            while True:
                time.sleep(60)
        if DELAY:
            time.sleep(DELAY)
        for r in requests:
            if self.record_to:  # request parameters: where Triton forwards gRPC headers
                with open(self.record_to, "a") as fh:
                    fh.write(r.parameters() + "\\n")
            x = pb_utils.get_input_tensor_by_name(r, "SEQUENCE").as_numpy().reshape(-1)
            e = np.stack([embed(s) for s in x]).astype(np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("EMBEDDING", e)]))
        return out
"""


def write_toy_repository(root: Path, delay: float = 0.0,
                         models: tuple[str, ...] = ("dnabert_s", "esm2"),
                         max_batch_size: int = 16, instances: int = 1, weights_tag: str = "",
                         record_parameters_to: Path | None = None,
                         dynamic_batching: bool = True, width: int = TOY_WIDTH,
                         priority_levels: bool = True, max_queue_size: int | None = None,
                         max_in_flight_per_instance: int | None = None,
                         hang_after: int | None = None, precision: str | None = None,
                         versions: tuple[int, ...] = (1,)) -> Path:
    """dnabert_s (fixed width in the config) and esm2 (width -1: the client must probe).

    `delay` seconds of sleep per execute() make a run slow enough to interrupt mid-way;
    `instances` per model; `weights_tag` changes the weights_sha256 the config declares;
    `record_parameters_to` makes the models append each request's parameters to that file;
    without `dynamic_batching` every request is one execute() (a fixed `delay` per request);
    `width` (a multiple of 8) widens both models' rows;
    `priority_levels`: declare 3 request priority levels, default 2, as the shipped configs do;
    `max_queue_size`: cap the queue (requests beyond it are rejected: load shedding);
    `max_in_flight_per_instance`: the fair-share parameter of the shipped configs;
    `hang_after`: each model instance hangs forever from its (hang_after+1)-th execute() on;
    `precision`: the config's precision parameter (as the shipped configs state fp32/fp16);
    `versions`: version folders served side by side (version_policy all); version V adds V-1 to
    every value and declares weights_sha256_V (version 1: the checksum of a one-version toy), so
    each version answers and identifies differently.
    """
    batching = ""
    if dynamic_batching:
        levels = "priority_levels: 3 default_priority_level: 2" if priority_levels else ""
        queue = (f"default_queue_policy {{ max_queue_size: {max_queue_size} "
                 "timeout_action: REJECT }" if max_queue_size is not None else "")
        batching = f"dynamic_batching {{ max_queue_delay_microseconds: 1000 {levels} {queue} }}"
    fair_share = ("" if max_in_flight_per_instance is None else
                  ',\n  { key: "max_in_flight_per_instance" value: { string_value: "'
                  f'{max_in_flight_per_instance}" }} }}')
    for name, dims in (("dnabert_s", str(width)), ("esm2", "-1")):
        if name not in models:
            continue
        extra = ""
        if precision is not None:
            extra += f',\n  {{ key: "precision" value: {{ string_value: "{precision}" }} }}'
        if versions != (1,):
            extra += "".join(f',\n  {{ key: "weights_sha256_{v}" value: {{ string_value: '
                             f'"toy-{name}{weights_tag}{"" if v == 1 else f"-v{v}"}" }} }}'
                             for v in versions)
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "config.pbtxt").write_text(TOY_CONFIG.format(
            name=name, dims=dims, max_batch_size=max_batch_size, instances=instances,
            weights_tag=weights_tag, record_to=record_parameters_to or "", batching=batching,
            fair_share=fair_share, extra=extra,
            version_policy="version_policy: { all { } }" if versions != (1,) else ""))
        for v in versions:
            (root / name / str(v)).mkdir(parents=True, exist_ok=True)
            (root / name / str(v) / "model.py").write_text(
                TOY_MODEL.format(delay=float(delay), repeat=width // TOY_WIDTH, shift=v - 1,
                                 hang_after=-1 if hang_after is None else hang_after))
    return root


def write_toy_classifier(path: Path, width: int = 2 * TOY_WIDTH, seed: int = 7) -> Path:
    """A random MLP of the published shape (input width -> 512 -> 2) as safetensors."""
    from orchestrator.classify.classifier import save_classifier_safetensors

    rng = np.random.default_rng(seed)
    state = {
        "hidden_layer.weight": rng.normal(0, 1.0, size=(512, width)).astype(np.float32),
        "hidden_layer.bias": rng.normal(0, 0.5, size=512).astype(np.float32),
        "bn1.weight": np.ones(512, np.float32),
        "bn1.bias": np.zeros(512, np.float32),
        "bn1.running_mean": np.zeros(512, np.float32),
        "bn1.running_var": np.ones(512, np.float32),
        "bn1.num_batches_tracked": np.array(0, np.int64),
        "output_layer.weight": rng.normal(0, 0.05, size=(2, 512)).astype(np.float32),
        "output_layer.bias": np.zeros(2, np.float32),
    }
    save_classifier_safetensors(state, path)
    return path


def write_coding_fasta(path: Path, records: int, length: int, seed: int = 1) -> Path:
    """Records made of stop-free codons (every chunk keeps frames), deterministic."""
    rng = np.random.default_rng(seed)
    sense = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"
             if a + b + c not in ("TAA", "TAG", "TGA")]
    with open(path, "w") as fh:
        for i in range(records):
            codons = rng.integers(0, len(sense), size=length // 3 + 1)
            seq = "".join(sense[c] for c in codons)[:length]
            fh.write(f">rec{i:05d}\n")
            for j in range(0, len(seq), 60):
                fh.write(seq[j:j + 60] + "\n")
    return path


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
    """`orchestrator predict ARGS` in the background (extra environment on top of ours)."""
    return subprocess.Popen(orchestrator_cmd("predict", *args), cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {})})


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
