"""Embeddings per second through Triton (async gRPC, several requests in flight) vs in-process.

Same demo models, same inputs, same run: the in-process figure is `Embedder.embed` on the whole
input (the encoder's own token-budget batching, no serving cost); the Triton figure is a client
keeping `--in-flight` requests of `--rows` frames outstanding against a real tritonserver on this
machine, where client and server share the cores. Like predict's client, it sends length-sorted
requests (each request pads little). DESIGN.md target: ratio >= 0.7 on CPU.

    .venv/bin/python bench/bench_triton.py [--artifacts DIR] [--frames N] [--rows R] [--in-flight K]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from encoders import load_embedder  # noqa: E402
from encoders.common import Embedder  # noqa: E402
from encoders.repository import token_budget, weights_for  # noqa: E402
from orchestrator.embed.triton.server import TritonServer  # noqa: E402

KINDS = ("dnabert_s", "esm2")
# Frame lengths as VirNucPro produces them from 300/500 bp chunks: nucleotide slices of up to
# 500 bp, proteins of up to ~166 aa.
LENGTHS = {"dnabert_s": (240, 500), "esm2": (80, 166)}
LETTERS = {"dnabert_s": "ACGT", "esm2": "ACDEFGHIKLMNPQRSTVWY"}


def make_inputs(kind: str, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    lo, hi = LENGTHS[kind]
    letters = np.array(list(LETTERS[kind]))
    return ["".join(rng.choice(letters, int(rng.integers(lo, hi + 1)))) for _ in range(n)]


def load_local(repo: Path, kind: str) -> Embedder:
    """The encoder in this process, with the weights and settings the served model uses."""
    weights, params = weights_for(repo, kind)
    embedder = load_embedder(kind, weights, precision=params["precision"],
                             token_budget=token_budget(params))
    embedder.embed(["ACDEF" * 10] * 8)  # warm-up: first-call allocations, thread pools
    return embedder


def in_process_rate(embedder: Embedder, seqs: list[str]) -> float:
    """Frames/s of one `embed` call over all inputs (its own sorting and token budget)."""
    start = time.perf_counter()
    embedder.embed(seqs)
    return len(seqs) / (time.perf_counter() - start)


def triton_rate(url: str, kind: str, seqs: list[str], rows: int, in_flight: int) -> float:
    """Frames/s through Triton with at most `in_flight` async requests of `rows` frames."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    slots = threading.Semaphore(in_flight)
    errors: list[str] = []

    def done(result: object, error: object) -> None:
        if error is not None:
            errors.append(str(error))
        slots.release()

    def run(batch_seqs: Sequence[str]) -> float:
        start = time.perf_counter()
        ordered = sorted(batch_seqs, key=len)
        for i in range(0, len(ordered), rows):
            part = ordered[i : i + rows]
            inp = grpcclient.InferInput("SEQUENCE", [len(part), 1], "BYTES")
            inp.set_data_from_numpy(np.array([[s.encode()] for s in part], dtype=object))
            slots.acquire()
            client.async_infer(kind, [inp], callback=partial(done))
        for _ in range(in_flight):  # wait for the last responses
            slots.acquire()
        for _ in range(in_flight):
            slots.release()
        return time.perf_counter() - start

    try:
        elapsed = run(seqs)
    finally:
        client.close()
    if errors:
        raise RuntimeError(f"{kind}: {len(errors)} requests failed, first: {errors[0]}")
    return len(seqs) / elapsed


def build_demo(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "export", "demo", "--out", str(out)], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Run the comparison; print a table; return the figures (bench/run.py collects them)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, help="exported artifacts (default: fresh demo build)")
    ap.add_argument("--frames", type=int, default=1500, help="frames per model (default 1500)")
    ap.add_argument("--rows", type=int, default=64, help="frames per request (default 64)")
    ap.add_argument("--in-flight", type=int, default=4, help="outstanding requests (default 4)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="alternating rounds; the best of each path counts (default 3)")
    args = ap.parse_args(argv)

    local: dict[str, float] = {}
    served: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        artifacts = args.artifacts or build_demo(Path(tmp) / "artifacts")
        repo = artifacts / "model_repository"
        inputs = {kind: make_inputs(kind, args.frames, seed=i) for i, kind in enumerate(KINDS)}
        embedders = {kind: load_local(repo, kind) for kind in KINDS}
        with TritonServer(repo, ready_timeout=300) as server:
            for kind in KINDS:  # warm-up of the served models
                triton_rate(server.grpc_url, kind, inputs[kind][:256], args.rows, args.in_flight)
            # Alternate the two paths so a noisy neighbour on a shared machine hits both alike.
            for _ in range(args.repeat):
                for kind in KINDS:
                    rate = in_process_rate(embedders[kind], inputs[kind])
                    local[kind] = max(local.get(kind, 0.0), rate)
                    rate = triton_rate(server.grpc_url, kind, inputs[kind], args.rows,
                                       args.in_flight)
                    served[kind] = max(served.get(kind, 0.0), rate)

    figures: dict[str, object] = {
        "frames": args.frames, "rows_per_request": args.rows, "in_flight": args.in_flight,
        "repeat": args.repeat,
    }
    print(f"{'model':<10} {'in-process /s':>14} {'Triton /s':>12} {'ratio':>7}")
    for kind in KINDS:
        ratio = served[kind] / local[kind]
        print(f"{kind:<10} {local[kind]:>14.0f} {served[kind]:>12.0f} {ratio:>7.2f}")
        figures[kind] = {"in_process_per_s": round(local[kind], 1),
                         "triton_per_s": round(served[kind], 1), "ratio": round(ratio, 3)}
    print("(demo models; target: Triton >= 0.7x in-process on CPU)")
    return figures


if __name__ == "__main__":
    main()
