"""Input readers: what each format and compression costs per base, measured side by side.

Writes (once, cached under bench/data/) the same seeded reads as FASTA, FASTQ (plain, gzip, zstd),
unaligned BAM and CRAM, then times `orchestrator.read.formats.read_records` over each (the pass predict
makes; the scan pass costs the same) and Biopython's FASTA parser (what the original uses) as the
baseline. Prints Mbp/s, the ratio to our FASTA reader, and checks every format gives the same
records.

    python bench/bench_inputs.py [--reads 200000] [--length 150]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
DATA = HERE / "data"


def _write_inputs(reads: int, length: int) -> dict[str, Path]:
    import pysam
    import zstandard

    tag = f"reads{reads}x{length}"
    files = {"FASTA": DATA / f"{tag}.fa", "FASTQ": DATA / f"{tag}.fq",
             "FASTQ gzip": DATA / f"{tag}.fq.gz", "FASTQ zstd": DATA / f"{tag}.fq.zst",
             "BAM (unaligned)": DATA / f"{tag}.bam", "CRAM (unaligned)": DATA / f"{tag}.cram"}
    if all(p.exists() for p in files.values()):
        return files
    DATA.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    seqs = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, size=(reads, length))]
    names = [f"read{i}" for i in range(reads)]
    with open(files["FASTA"], "wb") as fa, open(files["FASTQ"], "wb") as fq:
        for name, row in zip(names, seqs, strict=True):
            seq = row.tobytes()
            fa.write(b">%s\n%s\n" % (name.encode(), seq))
            fq.write(b"@%s\n%s\n+\n%s\n" % (name.encode(), seq, b"I" * length))
    raw = files["FASTQ"].read_bytes()
    files["FASTQ gzip"].write_bytes(gzip.compress(raw, 6))
    files["FASTQ zstd"].write_bytes(zstandard.ZstdCompressor(level=3).compress(raw))
    header = {"HD": {"VN": "1.6", "SO": "unsorted"}}
    quals = pysam.qualitystring_to_array("I" * length)
    for key, mode in (("BAM (unaligned)", "wb"), ("CRAM (unaligned)", "wc")):
        with pysam.AlignmentFile(str(files[key]), mode, header=header) as out:
            for name, row in zip(names, seqs, strict=True):
                seg = pysam.AlignedSegment(out.header)
                seg.query_name, seg.flag = name, 4
                seg.query_sequence = row.tobytes().decode()
                seg.query_qualities = quals
                out.write(seg)
    return files


def _time(fn) -> tuple[float, str, int]:
    t0 = time.perf_counter()
    digest, bases = fn()
    return time.perf_counter() - t0, digest, bases


def _ours(path: Path):
    from orchestrator.read.formats import read_records

    def run() -> tuple[str, int]:
        h = hashlib.sha256()
        bases = 0
        for r in read_records([str(path)]):
            h.update(r.id.encode() + b"\0" + r.seq + b"\n")
            bases += len(r.seq)
        return h.hexdigest(), bases
    return run


def _biopython(path: Path):
    from Bio import SeqIO

    def run() -> tuple[str, int]:
        h = hashlib.sha256()
        bases = 0
        for r in SeqIO.parse(str(path), "fasta"):
            seq = bytes(r.seq)
            h.update(r.id.encode() + b"\0" + seq + b"\n")
            bases += len(seq)
        return h.hexdigest(), bases
    return run


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=200_000)
    ap.add_argument("--length", type=int, default=150)
    args = ap.parse_args(argv)
    files = _write_inputs(args.reads, args.length)
    runs = [("FASTA, Biopython (the original's parser)", _biopython(files["FASTA"]))]
    runs += [(f"{label}, orchestrator.read.formats", _ours(path)) for label, path in files.items()]
    figures: dict[str, dict] = {}
    reference = None
    fasta_rate = None
    print(f"{args.reads} reads of {args.length} bp ({args.reads * args.length / 1e6:.0f} Mbp)")
    print(f"{'input':48s} {'seconds':>8s} {'Mbp/s':>8s} {'vs our FASTA':>12s}")
    for label, fn in runs:
        seconds, digest, bases = min((_time(fn) for _ in range(2)), key=lambda r: r[0])
        if reference is None:
            reference = digest
        same = digest == reference
        rate = bases / seconds / 1e6
        if label.startswith("FASTA, orchestrator"):
            fasta_rate = rate
        figures[label] = {"seconds": round(seconds, 3), "mbp_per_s": round(rate, 2),
                          "same_records": same}
    for label, f in figures.items():
        ratio = f["mbp_per_s"] / fasta_rate if fasta_rate else float("nan")
        f["vs_our_fasta"] = round(ratio, 2)
        flag = "" if f["same_records"] else "  RECORDS DIFFER"
        print(f"{label:48s} {f['seconds']:8.2f} {f['mbp_per_s']:8.1f} {ratio:11.2f}x{flag}")
    if not all(f["same_records"] for f in figures.values()):
        raise SystemExit("bench_inputs: formats gave different records")
    return figures


if __name__ == "__main__":
    main()
