"""Benchmark of read sets: client memory and CPU as a sample grows by reads, with and without dedup.

A sequencing run is tens to hundreds of millions of short reads, so the client's memory must not
grow with the number of reads. Generated sets of 100K, 300K and 1M reads of 150 bp (stop-free
codons in frame 1, so most reads keep a frame; all distinct: dedup has nothing to reuse and shows
its pure cost) go through `predict` against one toy tritonserver at the real widths (768 + 2,560
floats per frame as two rows of 1,664, no delay: the client is the bottleneck), chunk size 300,
each set with the default dedup (the answer cache) and with `--no-dedup`. Printed side by side:
- peak RSS of the predict process (ru_maxrss) and its growth in bytes per read between sizes
  (goal: <= 16 B/read with --no-dedup; with dedup, no more than the answer cache's own peak
  bytes as run.json reports them, plus 10%);
- client CPU per read (run.json's client_cpu_seconds: the run, process start-up excluded) and
  dedup's extra CPU against --no-dedup (goal <= +5% on these sets without repeats);
- frames per second end to end (client and server share the machine's cores);
- whether both modes wrote the same bytes (sha256 of each result file);
- the deduplication layer's own CPU per frame, timed in-process on the same windows with a backend
  that answers at once (what dedup adds, without the noise of whole runs on a shared machine),
  against the client CPU per frame of the --no-dedup run.
Run alone: `.venv/bin/python bench/bench_reads.py [--reads 100000,300000,1000000]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_dedup import machine  # noqa: E402
from bench_predict import RUN_WRAPPER  # noqa: E402
from predict_fixtures import write_toy_classifier, write_toy_repository  # noqa: E402

from orchestrator.embed.triton.server import TritonServer  # noqa: E402

READ_LENGTH = 150
CHUNK_SIZE = 300
HALF_WIDTH = 1664  # each toy model's row: 2 x 1664 = 768 + 2560 = 3328 float32 per frame
BATCH = 64
INSTANCES = 2
DEFAULT_SIZES = (100_000, 300_000, 1_000_000)
SENSE = np.array([a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"
                  if a + b + c not in ("TAA", "TAG", "TGA")], dtype="S3")
RESULT_FILES = ("prediction_results.txt", "prediction_results_highestscore.csv",
                "sequence_summary.tsv", "sequence_calls.tsv", "viral_regions.tsv")
GOAL_BYTES_PER_READ = 16


def write_read_set(path: Path, n_reads: int, seed: int = 1, block: int = 100_000) -> Path:
    """`n_reads` FASTA reads of 150 bp made of stop-free codons, IDs read00000000.., in blocks of
    `block` reads (bounded memory, deterministic for a seed and a block size)."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        for start in range(0, n_reads, block):
            n = min(block, n_reads - start)
            seqs = SENSE[rng.integers(0, len(SENSE), size=(n, READ_LENGTH // 3))]
            rows = seqs.view(f"S{READ_LENGTH}").reshape(n)
            fh.write(b"".join(b">read%08d\n%s\n" % (start + i, s) for i, s in enumerate(rows)))
    return path


def digest_outputs(outdir: Path) -> dict[str, str]:
    """sha256 of each result file, streamed (run.json and report.html hold times)."""
    out = {}
    for name in RESULT_FILES:
        h = hashlib.sha256()
        with open(outdir / name, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        out[name] = h.hexdigest()
    return out


def run(url: str, fasta: Path, clf: Path, outdir: Path, dedup: bool) -> dict:
    """One predict process under the RSS wrapper: peak RSS, CPU, frames/s, the cache's bytes."""
    cmd = ["predict", str(fasta), "-o", str(outdir), "--chunk-size", str(CHUNK_SIZE),
           "--classifier", str(clf), "--server", url, "--restart", "--no-report", "-q"]
    cmd += [] if dedup else ["--no-dedup"]
    proc = subprocess.run([sys.executable, "-c", RUN_WRAPPER, sys.executable, "-m", "orchestrator",
                           *cmd], cwd=ROOT, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    measured = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0 or measured.get("code") != 0:
        raise RuntimeError(f"predict failed ({measured.get('code')}): {proc.stderr[-2000:]}")
    rec = json.loads((outdir / "run.json").read_text())
    answers = (rec.get("dedup") or {}).get("answers") or {}
    return {
        "frames": rec["counts"]["frames"],
        "peak_rss_mb": round(measured["peak_rss_mb"], 1),
        "process_cpu_s": round(measured["cpu_s"], 2),
        "client_cpu_s": rec["throughput"]["client_cpu_seconds"],
        "wall_s": round(measured["wall_s"], 1),
        "frames_per_s": rec["throughput"]["frames_per_s"],
        "cache_bytes": answers.get("bytes", 0),
        "cache_peak_bytes": answers.get("peak_bytes", 0),
        "outputs": digest_outputs(outdir),
    }


class _InstantTicket:
    zeros = np.zeros((0, HALF_WIDTH), dtype=np.float32)

    def __init__(self, n_dna: int, n_protein: int) -> None:
        if len(self.zeros) < max(n_dna, n_protein):
            _InstantTicket.zeros = np.zeros((max(n_dna, n_protein), HALF_WIDTH), dtype=np.float32)
        self.vectors = (self.zeros[:n_dna], self.zeros[:n_protein])

    def done(self) -> bool:
        return True

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vectors


class _InstantBackend:
    """Answers every request at once with zero vectors: the layer above it is all that is timed."""

    widths = (HALF_WIDTH, HALF_WIDTH)

    def submit(self, nucleotides: list[str], proteins: list[str]) -> _InstantTicket:
        return _InstantTicket(len(nucleotides), len(proteins))


def dedup_layer_cost(fasta: Path, lookahead: int = 2) -> dict:
    """CPU seconds of predict's dedup layer (answer cache + per-model string dedup) over all the
    windows of `fasta`, and of the same windows through the layer switched off (--no-dedup)."""
    from collections import deque

    from orchestrator.chunk.windows import Counters, iter_windows
    from orchestrator.pipeline.answers import AnswerCache
    from orchestrator.pipeline.dedup import DeduplicatingBackend
    from orchestrator.pipeline.options import DEFAULT_DEDUP_MEMORY, DEFAULT_WINDOW
    from orchestrator.read.formats import read_records

    def classify(dna: np.ndarray, _prot: np.ndarray) -> np.ndarray:
        return np.zeros((len(dna), 2), dtype=np.float32)

    windows = list(iter_windows(read_records([str(fasta)]), CHUNK_SIZE, DEFAULT_WINDOW, Counters()))
    seconds = {}
    for label in ("no_dedup", "dedup"):
        backend = DeduplicatingBackend(_InstantBackend(), 0, enabled=label == "dedup")
        cache = AnswerCache(DEFAULT_DEDUP_MEMORY) if label == "dedup" else None
        in_flight: deque = deque()
        t0 = time.process_time()
        for w in windows:
            if cache is not None:
                in_flight.append(cache.submit(backend, w.nucleotides, w.proteins))
            else:
                in_flight.append(backend.submit(w.nucleotides, w.proteins))
            while len(in_flight) > lookahead or (w is windows[-1] and in_flight):
                ticket = in_flight.popleft()
                if cache is not None:
                    ticket.result().answers(classify)
                else:
                    classify(*ticket.result())
        seconds[label] = time.process_time() - t0
    frames = sum(len(w.frame_ids) for w in windows)
    return {"frames": frames, "cpu_s": {k: round(v, 3) for k, v in seconds.items()},
            "us_per_frame": round(1e6 * (seconds["dedup"] - seconds["no_dedup"]) / frames, 2)}


MODES = {"no_dedup": False, "dedup": True}


def measure(sizes: tuple[int, ...], modes: tuple[str, ...] = tuple(MODES)) -> dict:
    DATA.mkdir(parents=True, exist_ok=True)
    clf = write_toy_classifier(DATA / "toy_classifier_3328.safetensors", width=2 * HALF_WIDTH)
    figures: dict = {"date": date.today().isoformat(), "machine": machine(),
                     "read_length": READ_LENGTH, "chunk_size": CHUNK_SIZE,
                     "floats_per_frame": 2 * HALF_WIDTH, "sizes": {}}
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        repo = write_toy_repository(Path(tmp) / "repo", instances=INSTANCES, max_batch_size=BATCH,
                                    dynamic_batching=False, width=HALF_WIDTH)
        with TritonServer(repo) as server:
            print(f"bench_reads: toy server up (no delay, {2 * HALF_WIDTH} floats per frame)",
                  flush=True)
            for n in sizes:
                fasta = write_read_set(Path(tmp) / f"reads_{n}.fa", n)
                runs = {}
                for label in modes:
                    runs[label] = run(server.grpc_url, fasta, clf, Path(tmp) / f"out_{label}",
                                      MODES[label])
                    r = runs[label]
                    print(f"  {n} reads, {label}: peak RSS {r['peak_rss_mb']} MB, client CPU "
                          f"{r['client_cpu_s']} s, {r['frames_per_s']} frames/s", flush=True)
                runs["dedup_layer"] = dedup_layer_cost(fasta)
                fasta.unlink()
                if len(modes) == len(MODES):
                    layer = runs["dedup_layer"]
                    runs["identical_outputs"] = runs["dedup"]["outputs"] == runs["no_dedup"]["outputs"]
                    layer["share_of_client_cpu"] = round(
                        layer["us_per_frame"] * 1e-6 * layer["frames"] / runs["no_dedup"]["client_cpu_s"], 4)
                figures["sizes"][n] = runs
    if len(modes) == len(MODES):
        figures["slopes"] = slopes(figures["sizes"])
    return figures


def slopes(by_size: dict) -> dict:
    """Peak RSS growth in bytes per read between consecutive sizes and first to last; with dedup
    also the growth beyond the answer cache's own peak growth (what the goal bounds)."""
    sizes = sorted(by_size)
    pairs = list(zip(sizes, sizes[1:], strict=False))
    if len(sizes) > 2:
        pairs.append((sizes[0], sizes[-1]))
    out = {}
    for a, b in pairs:
        entry = {}
        for label in ("no_dedup", "dedup"):
            ra, rb = by_size[a][label], by_size[b][label]
            entry[label] = round((rb["peak_rss_mb"] - ra["peak_rss_mb"]) * 2**20 / (b - a), 1)
        da, db = by_size[a]["dedup"], by_size[b]["dedup"]
        entry["cache_peak_growth_mb"] = round((db["cache_peak_bytes"] - da["cache_peak_bytes"]) / 2**20, 1)
        entry["dedup_growth_mb"] = round(db["peak_rss_mb"] - da["peak_rss_mb"], 1)
        out[f"{a}->{b}"] = entry
    return out


def summary_lines(f: dict) -> list[str]:
    lines = [f"{f['date']}, {f['machine']}; reads of {f['read_length']} bp, chunk size "
             f"{f['chunk_size']}, {f['floats_per_frame']} floats per frame, toy server, no delay",
             f"{'reads':>9} {'frames':>9} | {'peak RSS MB':>15} | {'client CPU us/read':>19} | "
             f"{'dedup CPU':>9} | {'frames/s':>15} | {'cache MB':>8} | same bytes",
             f"{'':>9} {'':>9} | {'no-dedup  dedup':>15} | {'no-dedup   dedup':>19} | {'':>9} | "
             f"{'no-dedup  dedup':>15} | {'':>8} |"]
    for n, runs in sorted(f["sizes"].items()):
        off, on = runs["no_dedup"], runs["dedup"]
        cpu_off, cpu_on = (1e6 * r["client_cpu_s"] / n for r in (off, on))
        lines.append(
            f"{n:>9} {off['frames']:>9} | {off['peak_rss_mb']:>7.0f} {on['peak_rss_mb']:>7.0f} | "
            f"{cpu_off:>9.1f} {cpu_on:>9.1f} | {100 * (cpu_on / cpu_off - 1):>+8.1f}% | "
            f"{off['frames_per_s']:>7.0f} {on['frames_per_s']:>7.0f} | "
            f"{on['cache_peak_bytes'] / 2**20:>8.1f} | {runs['identical_outputs']}")
    for n, runs in sorted(f["sizes"].items()):
        layer = runs["dedup_layer"]
        lines.append(f"{n} reads: the dedup layer alone costs {layer['us_per_frame']} us per frame "
                     f"(in-process, instant backend), {100 * layer['share_of_client_cpu']:.1f}% of the "
                     f"--no-dedup run's client CPU (goal <= 5%)")
    for pair, s in f["slopes"].items():
        lines.append(f"peak RSS growth {pair}: --no-dedup {s['no_dedup']} B/read (goal <= "
                     f"{GOAL_BYTES_PER_READ}); dedup {s['dedup']} B/read, {s['dedup_growth_mb']} MB "
                     f"against the cache's own {s['cache_peak_growth_mb']} MB (goal <= +10%)")
    return lines


def main(sizes: tuple[int, ...] = DEFAULT_SIZES, modes: tuple[str, ...] = tuple(MODES)) -> dict:
    figures = measure(sizes, modes)
    for runs in figures["sizes"].values():
        for label in modes:
            runs[label].pop("outputs")
    print(json.dumps(figures, indent=2))
    if len(modes) < len(MODES):
        return figures
    print("\nsummary:")
    print("\n".join(summary_lines(figures)))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", default=",".join(map(str, DEFAULT_SIZES)),
                        help="comma-separated read counts (default 100000,300000,1000000)")
    parser.add_argument("--modes", default="no_dedup,dedup",
                        help="which runs per size (default no_dedup,dedup; the side-by-side summary "
                             "needs both)")
    args = parser.parse_args()
    main(tuple(int(x) for x in args.reads.split(",")), tuple(args.modes.split(",")))
