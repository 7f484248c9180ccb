"""Preprocessing benchmark: `orchestrator prepare` vs the original's per-codon approach.

Generates (once, cached under bench/data/) a seeded ~30 Mbp FASTA of 1-20 kbp records that mixes
random DNA with stop-free coding-like stretches, so that frames are kept as in real data. Runs
`bench/original_prepare.py` and `orchestrator prepare` as subprocesses (process start included),
checks the three output files are byte-identical and prints Mbp/s, frames/s and the speed-up.

    python bench/bench_prepare.py [--mbp 30] [--chunk-size 500]
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SEED = 20250101
STOPS = {"TAA", "TAG", "TGA"}
SENSE = np.array([a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"
                  if a + b + c not in STOPS])


def _record(rng: np.random.Generator, length: int) -> str:
    """Random DNA interleaved with stretches that are stop-free on one strand or the other."""
    parts, size = [], 0
    while size < length:
        seg = int(rng.integers(300, 6000))
        if rng.random() < 0.85:
            coding = "".join(rng.choice(SENSE, seg // 3 + 1))
            if rng.random() < 0.5:
                coding = coding[::-1].translate(str.maketrans("ACGT", "TGCA"))
            parts.append(coding)
        else:
            parts.append("".join(rng.choice(list("ACGT"), seg)))
        size += len(parts[-1])
    seq = "".join(parts)[:length]
    if rng.random() < 0.1:  # some soft-masking and N runs, as in real assemblies
        cut = int(rng.integers(0, length))
        seq = seq[:cut] + seq[cut : cut + 300].lower() + seq[cut + 300 :]
        seq = seq[: length // 2] + "N" * 30 + seq[length // 2 + 30 :]
    return seq[:length]


def make_input(mbp: float) -> Path:
    """The cached benchmark FASTA of about `mbp` megabases (same bytes for the same size)."""
    path = DATA / f"bench_{mbp:g}mbp.fa"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    target, total, n = int(mbp * 1e6), 0, 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as out:
        while total < target:
            length = int(rng.integers(1000, 20001))
            seq = _record(rng, length)
            n += 1
            out.write(f">bench_{n} length={length}\n")
            out.write("\n".join(seq[i : i + 60] for i in range(0, length, 60)) + "\n")
            total += length
    tmp.rename(path)
    return path


def _timed(cmd: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=HERE.parent, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns its figures (also printed)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbp", type=float, default=30.0)
    parser.add_argument("--chunk-size", type=int, default=500, choices=(300, 500))
    args = parser.parse_args(argv or [])
    src = make_input(args.mbp)
    work = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        ours, orig = work / "ours", work / "orig"
        t_ours = _timed([sys.executable, "-m", "orchestrator", "prepare", str(src), "-o",
                         str(ours), "--chunk-size", str(args.chunk_size), "-q", "--no-progress"])
        t_orig = _timed([sys.executable, str(HERE / "original_prepare.py"), str(src), str(orig),
                         str(args.chunk_size)])
        names = sorted(p.name for p in orig.iterdir())
        identical = names == sorted(p.name for p in ours.iterdir()) and all(
            filecmp.cmp(orig / n, ours / n, shallow=False) for n in names)
        protein = next(p for p in ours.iterdir() if p.suffix == ".faa")
        frames = protein.read_bytes().count(b">")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mbp = sum(len(line) - 1 for line in src.open("rb") if not line.startswith(b">")) / 1e6
    figures = {
        "input_mbp": round(mbp, 2), "chunk_size": args.chunk_size, "kept_frames": frames,
        "original_s": round(t_orig, 2), "ours_s": round(t_ours, 2),
        "original_mbp_per_s": round(mbp / t_orig, 2), "ours_mbp_per_s": round(mbp / t_ours, 2),
        "original_frames_per_s": round(frames / t_orig), "ours_frames_per_s": round(frames / t_ours),
        "speedup": round(t_orig / t_ours, 1), "identical_output": identical,
    }
    for key, value in figures.items():
        print(f"{key:>22}: {value}")
    if not identical:
        print("ERROR: outputs differ from the original's", file=sys.stderr)
    return figures


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1:])["identical_output"] else 1)
