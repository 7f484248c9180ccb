"""Benchmark of deduplication at the real widths: rows sent, time, peak RSS and client CPU.

A toy server whose two models return rows of 1664 float32 each (3328 per frame, the width of the
real 768 + 2560) and take a fixed time per request whatever its rows (like a GPU pass; no dynamic
batching, so one request = one execute) serves 150 bp reads where 0%, 50% and 90% of the reads
repeat another read of the set or its reverse complement (half each), shuffled over the whole
file (far beyond the look-ahead). The classifier is a random MLP of the published shape at that
width. For each set `predict` runs with dedup (the default: the answer cache) and with
`--no-dedup`, side by side:
- rows each model executed (Triton's own statistics, the width probe subtracted) and the run's
  time (the window loop, from run.json, and the process's wall time); goal at 50% repeats:
  <= 0.55x the rows and <= 0.6x the time of --no-dedup;
- peak RSS of the predict process (ru_maxrss); goal at 0% repeats: dedup <= 1.05x --no-dedup;
- client CPU per frame on the 0% set (nothing to reuse: dedup's pure cost), the best of `rounds`
  alternating runs each; goal: dedup costs at most 5% more;
- the answer cache's size for 1M and 10M reads without repeats at the default --dedup-memory,
  projected from the frames per read measured here (and the worst case, 6) with the cache's
  sizing rule, which is checked against the sizes the runs report.
Outputs with and without dedup are compared byte for byte.
Run alone: `.venv/bin/python bench/bench_dedup.py [--reads N] [--delay S] [--rounds R]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_predict import RUN_WRAPPER  # noqa: E402
from predict_fixtures import outputs_of, rows_executed, write_toy_classifier, write_toy_repository  # noqa: E402

from orchestrator.embed.contract import MODELS  # noqa: E402
from orchestrator.embed.triton.server import TritonServer  # noqa: E402
from orchestrator.pipeline.answers import FIRST_SLOTS  # noqa: E402
from orchestrator.pipeline.options import (  # noqa: E402
    ANSWER_GENERATIONS,
    ANSWER_MAX_LOAD,
    ANSWER_SLOT_BYTES,
    DEFAULT_DEDUP_MEMORY,
)

READ_LENGTH = 150
HALF_WIDTH = 1664  # each toy model's row: 2 x 1664 = 768 + 2560 = 3328 float32 per frame
BATCH = 64
INSTANCES = 2
WINDOW = 1024  # several windows per set: repeats sit in other windows than their first copy
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
    """One predict process (under the RSS wrapper): rows executed, times, CPU, peak RSS."""
    before = rows_executed(url)
    cmd = ["predict", str(fasta), "-o", str(outdir), "--chunk-size", str(READ_LENGTH),
           "--classifier", str(clf), "--server", url, "--window", str(WINDOW), "--restart",
           "--no-report", "-q"] + ([] if dedup else ["--no-dedup"])
    proc = subprocess.run([sys.executable, "-c", RUN_WRAPPER, sys.executable, "-m", "orchestrator",
                           *cmd], cwd=ROOT, capture_output=True, text=True)
    measured = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}
    if proc.returncode != 0 or measured.get("code") != 0:
        raise RuntimeError(f"predict failed ({measured.get('code')}): {proc.stderr[-2000:]}")
    after = rows_executed(url)
    rec = json.loads((outdir / "run.json").read_text())
    t = rec["timings"]
    frames = rec["counts"]["frames"]
    answers = rec["dedup"]["answers"]
    return {
        "frames": frames,
        "rows": {m: after[m] - before[m] - PROBE_ROWS[m] for m in MODELS},
        "loop_s": round(t["preprocess"] + t["embed"] + t["classify"] + t["write"], 2),
        "process_wall_s": round(measured["wall_s"], 2),
        "peak_rss_mb": round(measured["peak_rss_mb"], 1),
        "client_cpu_us_per_frame": round(1e6 * rec["throughput"]["client_cpu_seconds"] / frames, 1),
        "hit_rate": rec["dedup"]["hit_rate"],
        "answers": None if answers is None else {
            k: answers[k] for k in ("reused", "entries", "bytes", "peak_bytes", "evictions")},
    }


def projected_cache(distinct_frames: int, memory: int = DEFAULT_DEDUP_MEMORY) -> dict:
    """The answer cache's bytes and evictions once `distinct_frames` have entered it: the sizing
    rule of `AnswerCache` (the first generation starts at FIRST_SLOTS and doubles at 3/4 load up
    to its bound, later ones start at the bound; a full one becomes the old generation, the one
    before it is dropped)."""
    max_slots = memory // (ANSWER_GENERATIONS * ANSWER_SLOT_BYTES)
    current, count, old, old_count, evicted = min(FIRST_SLOTS, max_slots), 0, 0, 0, 0
    left = distinct_frames
    while left:
        room = int(ANSWER_MAX_LOAD * current) - count
        if room <= 0:
            if current < max_slots:
                current = min(2 * current, max_slots)
            else:
                evicted += old_count
                old, old_count = current, count
                current, count = max_slots, 0
            continue
        step = min(room, left)
        count, left = count + step, left - step
    return {"distinct_frames": distinct_frames, "bytes": (current + old) * ANSWER_SLOT_BYTES,
            "entries_held": count + old_count, "evicted": evicted, "memory_bytes": memory}


def measure(n_reads: int, delay: float, rounds: int) -> dict:
    DATA.mkdir(parents=True, exist_ok=True)
    clf = write_toy_classifier(DATA / "toy_classifier_3328.safetensors", width=2 * HALF_WIDTH)
    figures: dict = {"date": date.today().isoformat(), "machine": machine(), "reads": n_reads,
                     "read_length": READ_LENGTH, "floats_per_frame": 2 * HALF_WIDTH,
                     "window": WINDOW, "delay_s_per_request": delay, "request_rows": BATCH,
                     "instances_per_model": INSTANCES, "sets": {}}
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        repo = write_toy_repository(Path(tmp) / "repo", delay=delay, instances=INSTANCES,
                                    max_batch_size=BATCH, dynamic_batching=False, width=HALF_WIDTH)
        with TritonServer(repo) as server:
            print(f"bench_dedup: toy server up ({delay} s per request of {BATCH} rows, "
                  f"{INSTANCES} instances per model, {2 * HALF_WIDTH} floats per frame)", flush=True)
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
                    "peak_rss_ratio": round(on["peak_rss_mb"] / off["peak_rss_mb"], 3),
                    "identical_outputs": outputs["dedup"] == outputs["no_dedup"],
                    "projection_check": {"measured_bytes": on["answers"]["bytes"],
                                         "projected_bytes": projected_cache(
                                             on["answers"]["entries"])["bytes"]},
                }
                if fraction == 0.0:
                    entry["client_cpu"] = client_cpu(server.grpc_url, fasta, clf, Path(tmp),
                                                     runs, rounds)
                    figures["frames_per_read"] = round(off["frames"] / n_reads, 3)
                figures["sets"][f"{round(100 * fraction)}% repeats"] = entry
                print(f"  {round(100 * fraction)}% repeats: rows {entry['rows_ratio']}, "
                      f"time {entry['loop_time_ratio']}x, peak RSS {entry['peak_rss_ratio']}x",
                      flush=True)
    # Frames per read as measured here (these reads keep the frames without a stop codon), and
    # the worst case: all six frames of every read distinct.
    projected = {}
    for per_read, label in ((figures["frames_per_read"], "as measured"), (6, "6 frames per read")):
        for n in (10**6, 10**7):
            projected[f"{n // 10**6}M reads, {label}"] = projected_cache(round(n * per_read))
    projected["10M reads, 6 frames per read, --dedup-memory 4G"] = projected_cache(6 * 10**7, 4 << 30)
    figures["projected_cache"] = projected
    return figures


def client_cpu(url: str, fasta: Path, clf: Path, tmp: Path, first: dict, rounds: int) -> dict:
    """Client CPU per frame with and without dedup: the best of `rounds` alternating runs."""
    cpu = {label: [first[label]["client_cpu_us_per_frame"]] for label in ("dedup", "no_dedup")}
    rss = {label: [first[label]["peak_rss_mb"]] for label in ("dedup", "no_dedup")}
    for _ in range(rounds - 1):
        for label, dedup in (("no_dedup", False), ("dedup", True)):
            r = run(url, fasta, clf, tmp / f"cpu_{label}", dedup)
            cpu[label].append(r["client_cpu_us_per_frame"])
            rss[label].append(r["peak_rss_mb"])
    best = {k: min(v) for k, v in cpu.items()}
    return {"us_per_frame": cpu, "best": best, "peak_rss_mb": rss,
            "dedup_extra": round(best["dedup"] / best["no_dedup"] - 1, 3)}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores usable, {platform.system()}"


def summary_lines(f: dict) -> list[str]:
    lines = [f"{f['date']}, {f['machine']}; {f['reads']} reads of {f['read_length']} bp per set, "
             f"{f['floats_per_frame']} floats per frame, window {f['window']}, "
             f"{f['delay_s_per_request']} s per request of {f['request_rows']} rows"]
    for name, e in f["sets"].items():
        on, off = e["runs"]["dedup"], e["runs"]["no_dedup"]
        goal = "   (goal <= 0.55x rows, <= 0.6x time)" if name.startswith("50%") else ""
        lines.append(
            f"{name}: {off['frames']} frames; rows dnabert_s {on['rows']['dnabert_s']} vs "
            f"{off['rows']['dnabert_s']} ({e['rows_ratio']['dnabert_s']}x), esm2 "
            f"{on['rows']['esm2']} vs {off['rows']['esm2']} ({e['rows_ratio']['esm2']}x); loop "
            f"{on['loop_s']} s vs {off['loop_s']} s ({e['loop_time_ratio']}x), process "
            f"{on['process_wall_s']} s vs {off['process_wall_s']} s; peak RSS "
            f"{on['peak_rss_mb']} MB vs {off['peak_rss_mb']} MB ({e['peak_rss_ratio']}x); cache "
            f"{on['answers']['entries']} entries, {on['answers']['bytes']} B (projected "
            f"{e['projection_check']['projected_bytes']} B); identical outputs: "
            f"{e['identical_outputs']}{goal}")
        if "client_cpu" in e:
            c = e["client_cpu"]
            lines.append(f"{name}: client CPU per frame, best of {len(c['us_per_frame']['dedup'])}: "
                         f"dedup {c['best']['dedup']} us, --no-dedup {c['best']['no_dedup']} us; "
                         f"{100 * c['dedup_extra']:+.1f}%   (goal <= +5%); peak RSS all runs "
                         f"dedup {c['peak_rss_mb']['dedup']} MB, --no-dedup "
                         f"{c['peak_rss_mb']['no_dedup']} MB   (goal <= 1.05x)")
    lines.append(f"frames per read (0% set): {f['frames_per_read']}")
    for name, p in f["projected_cache"].items():
        lines.append(f"projected answer cache, {name}: {p['distinct_frames']} distinct frames -> "
                     f"{p['bytes'] / 1e6:.0f} MB, {p['entries_held']} held, {p['evicted']} evicted "
                     f"(bound {p['memory_bytes'] >> 20} MiB)")
    return lines


def main(n_reads: int = 6000, delay: float = 0.05, rounds: int = 5) -> dict:
    figures = measure(n_reads, delay, rounds)
    print(json.dumps(figures, indent=2))
    print("\nsummary:")
    print("\n".join(summary_lines(figures)))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=6000, help="reads per set (default 6000)")
    parser.add_argument("--delay", type=float, default=0.05,
                        help="seconds per request of up to 64 rows (default 0.05)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating runs for the client CPU figure (default 5)")
    args = parser.parse_args()
    main(args.reads, args.delay, args.rounds)
