"""Benchmark of deduplication: rows sent, run time and client CPU with and without it.

A toy server whose models take a fixed time per request whatever its rows (like a GPU pass; no
dynamic batching, so one request = one execute) serves 150 bp reads where 0%, 50% and 90% of the
reads repeat another read of the set or its reverse complement (half each), shuffled. For each
set, `predict` runs with dedup (the default) and with `--no-dedup`, side by side:
- rows each model executed (Triton's own statistics, the width probe subtracted) and the run's
  time (the window loop, from run.json, and the process's wall time); goal at 50% repeats:
  <= 0.55x the rows and <= 0.6x the time of --no-dedup;
- client frames per CPU-second on the 0% set (nothing to reuse: dedup's pure cost), best of
  `rounds` alternating runs each; goal: dedup costs at most 10%.
Outputs with and without dedup are compared byte for byte.
Run alone: `.venv/bin/python bench/bench_dedup.py [--reads N] [--delay S] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from predict_fixtures import outputs_of, rows_executed, write_toy_classifier, write_toy_repository  # noqa: E402

from orchestrator.embed.contract import MODELS  # noqa: E402
from orchestrator.embed.triton.server import TritonServer  # noqa: E402

READ_LENGTH = 150
BATCH = 64
INSTANCES = 2
PROBE_ROWS = {"dnabert_s": 0, "esm2": 1}  # the toy esm2's width is asked once per run
COMPLEMENT = str.maketrans("ACGT", "TGCA")
SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"
         if a + b + c not in ("TAA", "TAG", "TGA")]


def make_reads(path: Path, n_reads: int, repeat_fraction: float, seed: int = 1) -> Path:
    """`n_reads` reads of 150 bp; `repeat_fraction` of them copy a distinct read or its reverse
    complement. Distinct reads are stop-free in frame 1, so every read keeps frames."""
    rng = np.random.default_rng(seed)
    n_distinct = max(1, round(n_reads * (1 - repeat_fraction)))
    distinct = []
    for _ in range(n_distinct):
        codons = rng.integers(0, len(SENSE), size=READ_LENGTH // 3)
        distinct.append("".join(SENSE[c] for c in codons))
    reads = list(distinct)
    for k in range(n_reads - n_distinct):
        s = distinct[int(rng.integers(0, n_distinct))]
        reads.append(s if k % 2 else s.translate(COMPLEMENT)[::-1])
    with open(path, "w") as fh:
        for i in rng.permutation(len(reads)):
            fh.write(f">read{i:07d}\n{reads[i]}\n")
    return path


def run(url: str, fasta: Path, clf: Path, outdir: Path, dedup: bool) -> dict:
    before = rows_executed(url)
    cmd = [sys.executable, "-m", "orchestrator", "predict", str(fasta), "-o", str(outdir),
           "--chunk-size", str(READ_LENGTH), "--classifier", str(clf), "--server", url,
           "--restart", "--no-report", "-q"] + ([] if dedup else ["--no-dedup"])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"predict failed ({proc.returncode}): {proc.stderr[-2000:]}")
    after = rows_executed(url)
    rec = json.loads((outdir / "run.json").read_text())
    t = rec["timings"]
    return {
        "frames": rec["counts"]["frames"],
        "rows": {m: after[m] - before[m] - PROBE_ROWS[m] for m in MODELS},
        "loop_s": round(t["preprocess"] + t["embed"] + t["classify"] + t["write"], 2),
        "process_wall_s": round(wall, 2),
        "frames_per_client_cpu_s": rec["throughput"]["frames_per_client_cpu_s"],
        "hit_rate": rec["dedup"]["hit_rate"],
    }


def measure(n_reads: int, delay: float, rounds: int) -> dict:
    DATA.mkdir(parents=True, exist_ok=True)
    clf = write_toy_classifier(DATA / "toy_classifier.safetensors")
    figures: dict = {"reads": n_reads, "read_length": READ_LENGTH, "delay_s_per_request": delay,
                     "request_rows": BATCH, "instances_per_model": INSTANCES, "sets": {}}
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        repo = write_toy_repository(Path(tmp) / "repo", delay=delay, instances=INSTANCES,
                                    max_batch_size=BATCH, dynamic_batching=False)
        with TritonServer(repo) as server:
            print(f"bench_dedup: toy server up ({delay} s per request of {BATCH} rows, "
                  f"{INSTANCES} instances per model)", flush=True)
            for fraction in (0.0, 0.5, 0.9):
                fasta = make_reads(Path(tmp) / f"reads_{fraction:g}.fa", n_reads, fraction)
                runs, outputs = {}, {}
                for label, dedup in (("no_dedup", False), ("dedup", True)):
                    out = Path(tmp) / f"out_{fraction:g}_{label}"
                    runs[label] = run(server.grpc_url, fasta, clf, out, dedup)
                    outputs[label] = outputs_of(out)
                on, off = runs["dedup"], runs["no_dedup"]
                entry = {
                    "runs": runs,
                    "rows_ratio": {m: round(on["rows"][m] / off["rows"][m], 3) for m in MODELS},
                    "loop_time_ratio": round(on["loop_s"] / off["loop_s"], 3),
                    "wall_time_ratio": round(on["process_wall_s"] / off["process_wall_s"], 3),
                    "identical_outputs": outputs["dedup"] == outputs["no_dedup"],
                }
                if fraction == 0.0:
                    cpu = {"dedup": [on["frames_per_client_cpu_s"]],
                           "no_dedup": [off["frames_per_client_cpu_s"]]}
                    for _ in range(rounds - 1):
                        for label, dedup in (("no_dedup", False), ("dedup", True)):
                            r = run(server.grpc_url, fasta, clf, Path(tmp) / f"cpu_{label}", dedup)
                            cpu[label].append(r["frames_per_client_cpu_s"])
                    best = {k: max(v) for k, v in cpu.items()}
                    entry["client_frames_per_cpu_s"] = {"all": cpu, "best": best,
                                                        "dedup_cost": round(1 - best["dedup"] / best["no_dedup"], 3)}
                figures["sets"][f"{round(100 * fraction)}% repeats"] = entry
                print(f"  {round(100 * fraction)}% repeats: rows {entry['rows_ratio']}, "
                      f"time {entry['loop_time_ratio']}x", flush=True)
    return figures


def summary_lines(f: dict) -> list[str]:
    lines = []
    for name, e in f["sets"].items():
        on, off = e["runs"]["dedup"], e["runs"]["no_dedup"]
        goal = "   (goal <= 0.55x rows, <= 0.6x time)" if name.startswith("50%") else ""
        lines.append(
            f"{name}: {off['frames']} frames; rows dnabert_s {on['rows']['dnabert_s']} vs "
            f"{off['rows']['dnabert_s']} ({e['rows_ratio']['dnabert_s']}x), esm2 "
            f"{on['rows']['esm2']} vs {off['rows']['esm2']} ({e['rows_ratio']['esm2']}x); loop "
            f"{on['loop_s']} s vs {off['loop_s']} s ({e['loop_time_ratio']}x), process "
            f"{on['process_wall_s']} s vs {off['process_wall_s']} s; hit rate {on['hit_rate']}; "
            f"identical outputs: {e['identical_outputs']}{goal}")
        if "client_frames_per_cpu_s" in e:
            c = e["client_frames_per_cpu_s"]
            lines.append(f"{name}: client frames per CPU-second, best of {len(c['all']['dedup'])}: "
                         f"dedup {c['best']['dedup']}, --no-dedup {c['best']['no_dedup']}; cost "
                         f"{100 * c['dedup_cost']:.1f}%   (goal <= 10%)")
    return lines


def main(n_reads: int = 12000, delay: float = 0.1, rounds: int = 5) -> dict:
    figures = measure(n_reads, delay, rounds)
    print(json.dumps(figures, indent=2))
    print("\nsummary:")
    print("\n".join(summary_lines(figures)))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=12000, help="reads per set (default 12000)")
    parser.add_argument("--delay", type=float, default=0.1,
                        help="seconds per request of up to 64 rows (default 0.1)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating runs for the client CPU figure (default 5)")
    args = parser.parse_args()
    main(args.reads, args.delay, args.rounds)
