"""Real sequencing formats in: FASTQ (dnaio), SAM/BAM/CRAM (pysam), four compressions, sniffed.

Every format must give the records (and so the predictions) of the equivalent FASTA, and every
bad-input rule must hold for every format: exit 2 and one line naming the file and line/record.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import subprocess
import sys
from pathlib import Path

import pysam
import pytest
import zstandard
from predict_fixtures import (
    ROOT,
    outputs_of,
    run_cli,
    write_coding_fasta,
    write_toy_classifier,
)

from orchestrator.errors import InputError
from orchestrator.read.formats import detect_format, read_records
from orchestrator.read.record import Record
from orchestrator.read.scan import scan_inputs

COMPRESS = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}
COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


def revcomp(s: str) -> str:
    return s.translate(COMPLEMENT)[::-1]


def fasta_records(path: Path) -> list[Record]:
    return list(read_records([str(path)]))


def write_fastq(path: Path, records: list[Record]) -> Path:
    with open(path, "w") as fh:
        for r in records:
            fh.write(f"@{r.id} some description\n{r.seq.decode()}\n+\n{'I' * len(r.seq)}\n")
    return path


def write_alignments(path: Path, records: list[Record], mode: str = "wb", *,
                     paired: bool = False, aligned: bool = False) -> Path:
    """Unaligned (as viral pipelines hand reads over) or aligned, reverse strand for odd records.

    Aligned files also hold a secondary and a supplementary copy of the first read, which a
    reader must skip.
    """
    header: dict = {"HD": {"VN": "1.6", "SO": "unsorted"}}
    if aligned:
        header["SQ"] = [{"SN": "contig", "LN": 1_000_000}]
    with pysam.AlignmentFile(str(path), mode, header=header) as out:
        for i, r in enumerate(records):
            seq = r.seq.decode()
            seg = pysam.AlignedSegment(out.header)
            name, mate = (r.id[:-2], r.id[-1]) if paired else (r.id, "")
            seg.query_name = name
            flag = 0 if aligned else 4
            if paired:
                flag |= 1 | (64 if mate == "1" else 128)
            if aligned:
                seg.reference_id, seg.reference_start, seg.mapping_quality = 0, 100 * i, 60
                seg.cigartuples = [(0, len(seq))] if seq else None
                if i % 2:
                    flag |= 16
                    seq = revcomp(seq)
            seg.flag = flag
            seg.query_sequence = seq or None
            out.write(seg)
            if aligned and i == 0:
                for extra in (256, 2048):
                    copy = pysam.AlignedSegment.fromstring(seg.to_string(), out.header)
                    copy.flag = flag | extra
                    out.write(copy)
    return path


@pytest.fixture(scope="module")
def reads(tmp_path_factory) -> tuple[Path, list[Record]]:
    root = tmp_path_factory.mktemp("inputs")
    fasta = write_coding_fasta(root / "reads.fa", records=30, length=700, seed=5)
    with open(fasta, "a") as fh:  # N runs, an empty record, and one shorter than a codon
        fh.write(">withN\nACGTNNNNNNACGTACGATCGATCGTAGCTAGCTGATCGATCGNACGT\n>empty\n>tiny\nAC\n")
    return fasta, fasta_records(fasta)


def test_every_format_and_compression_reads_the_fasta_records(tmp_path, reads) -> None:
    fasta, records = reads
    files = {"fastq": write_fastq(tmp_path / "r.fq", records),
             "bam": write_alignments(tmp_path / "r.bam", records),
             "sam": write_alignments(tmp_path / "r.sam", records, "w"),
             "cram": write_alignments(tmp_path / "r.cram", records, "wc"),
             "fasta": fasta}
    for kind, path in list(files.items()):
        if kind in ("fasta", "fastq"):
            for comp, fn in COMPRESS.items():
                # names that lie: the bytes decide
                target = tmp_path / f"{kind}-{comp}.txt"
                target.write_bytes(fn(path.read_bytes()))
                files[f"{kind}+{comp}"] = target
    files["sam+gzip"] = tmp_path / "r.sam.gz"
    files["sam+gzip"].write_bytes(gzip.compress(files["sam"].read_bytes()))
    for label, path in files.items():
        kind, _, comp = label.partition("+")
        fmt = detect_format(str(path))
        assert (fmt.kind, fmt.compression) == (kind, comp or None), label
        assert fasta_records(path) == records, label


def test_aligned_and_paired_reads_keep_their_identity(tmp_path, reads) -> None:
    _, records = reads
    records = [r for r in records if r.seq]
    aligned = write_alignments(tmp_path / "a.bam", records, aligned=True)
    assert fasta_records(aligned) == records  # reverse-strand reads turned back, extra copies skipped
    mates = [Record(f"{r.id}/{1 + i % 2}", r.seq) for i, r in enumerate(records)]
    paired = write_alignments(tmp_path / "p.bam", mates, paired=True)
    got = fasta_records(paired)
    assert got == mates and len({r.id for r in got}) == len(got)


def test_mixed_inputs_are_one_sample_and_duplicates_are_named(tmp_path, reads) -> None:
    _, records = reads
    fq = tmp_path / "a.fq.zst"
    fq.write_bytes(COMPRESS["zstd"](write_fastq(tmp_path / "a.fq", records[:10]).read_bytes()))
    bam = write_alignments(tmp_path / "b.bam", records[10:])
    assert list(read_records([str(fq), str(bam)])) == records
    summary = scan_inputs([str(fq), str(bam)], short_length=250)
    assert (summary.n_records, summary.n_bases) == (len(records), sum(len(r.seq) for r in records))
    assert summary.lengths.n_short == 2  # the N record (51 bp) and "tiny"; the empty one is not
    dup = write_alignments(tmp_path / "dup.bam", records[:1])
    with pytest.raises(InputError, match=rf"duplicate record IDs: {records[0].id} "
                       rf"\({fq}:1, {dup}: record 1\)"):
        scan_inputs([str(fq), str(dup)])


def _error(path: Path) -> str:
    with pytest.raises(InputError) as info:
        scan_inputs([str(path)])
    text = str(info.value)
    assert "\n" not in text and str(path) in text
    return text


def test_bad_inputs_name_file_and_line_in_every_format(tmp_path, reads) -> None:
    _, records = reads
    fq = write_fastq(tmp_path / "ok.fq", records[:3]).read_bytes()
    lines = fq.split(b"\n")
    bad_qual = tmp_path / "qual.fq"
    bad_qual.write_bytes(b"\n".join(lines[:7] + [lines[7][:-1]] + lines[8:]))
    assert ":8: not valid FASTQ" in _error(bad_qual) and "qualities" in _error(bad_qual)
    truncated = tmp_path / "trunc.fq"
    truncated.write_bytes(b"\n".join(lines[:10]) + b"\n")
    assert "trunc.fq:" in _error(truncated) and "not valid FASTQ" in _error(truncated)
    for comp, fn in COMPRESS.items():
        cut = tmp_path / f"cut.{comp}"
        data = fn(fq)
        cut.write_bytes(data[: len(data) - 12])
        assert "cannot read input" in _error(cut), comp
    junk = tmp_path / "junk.fq"
    junk.write_bytes(b"@r1\nACGT\n+\nII\x00\x01\x02\n")
    assert "not valid FASTQ" in _error(junk)
    bam = write_alignments(tmp_path / "ok.bam", records).read_bytes()
    cut_bam = tmp_path / "cut.bam"
    cut_bam.write_bytes(bam[: len(bam) // 2])
    assert "cannot read alignment file" in _error(cut_bam)
    sam_xz = tmp_path / "x.sam.xz"
    sam_xz.write_bytes(lzma.compress(write_alignments(tmp_path / "x.sam", records, "w").read_bytes()))
    assert "xz-compressed SAM is not supported" in _error(sam_xz)
    binary = tmp_path / "binary.gz"
    binary.write_bytes(gzip.compress(bytes(range(256)) * 4))
    assert "binary content" in _error(binary)


@pytest.mark.server
@pytest.mark.parametrize("text", ["ACGT[PAD]ACGT", "ACGT1ACGT", "ACGT#ACGT", "ACGT<mask>"])
def test_characters_the_encoder_refuses_are_refused_up_front(tmp_path, text: str) -> None:
    """Text that a tokenizer would read as a special token (or that is not DNA) never gets as far
    as a server: exit 2 naming the file, line, record and position; gaps and stops are fine."""
    fasta = tmp_path / "in.fa"
    fasta.write_text(f">ok\nACGT-ACGT.AC*\n>bad one\nACGTAC\n{text}\n")
    with pytest.raises(InputError, match=rf"in.fa:3: record 'bad': character '{re.escape(text[4])}' at "
                       r"position 11 of its sequence is not allowed"):
        scan_inputs([str(fasta)])
    fq = write_fastq(tmp_path / "in.fq", [Record("r1", b"ACGT"), Record("r2", text.encode())])
    with pytest.raises(InputError, match=r"in.fq:5: record 'r2': character .* position 5 "):
        scan_inputs([str(fq)])
    proc = run_cli("predict", str(fasta), "-o", str(tmp_path / "out"), "--chunk-size", "300",
                   "--classifier", "none.pth", "--server", "localhost:1")
    assert proc.returncode == 2 and "record 'bad'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.server
def test_stdin_takes_fastq_but_not_bam(tmp_path, reads) -> None:
    _, records = reads
    code = "from orchestrator.read.formats import read_records; print(len(list(read_records(['-']))))"
    fq = gzip.compress(write_fastq(tmp_path / "s.fq", records).read_bytes())
    out = subprocess.run([sys.executable, "-c", code], input=fq, capture_output=True, cwd=ROOT,
                         check=True).stdout
    assert int(out) == len(records)
    bam = write_alignments(tmp_path / "s.bam", records).read_bytes()
    proc = subprocess.run([sys.executable, "-c", code], input=bam, capture_output=True, cwd=ROOT)
    assert proc.returncode != 0 and b"stdin holds BAM" in proc.stderr


@pytest.mark.server
def test_predictions_are_byte_identical_to_the_fasta_run(tmp_path, reads, toy_server) -> None:
    fasta, records = reads
    clf = write_toy_classifier(tmp_path / "clf.safetensors")
    fq = tmp_path / "reads.fq.xz"
    fq.write_bytes(lzma.compress(write_fastq(tmp_path / "reads.fq", records).read_bytes()))
    head = tmp_path / "head.fq.bz2"
    head.write_bytes(bz2.compress(write_fastq(tmp_path / "head.fq", records[:12]).read_bytes()))
    tail = write_alignments(tmp_path / "tail.cram", records[12:], "wc")
    runs = {"fasta": [fasta], "fastq.xz": [fq], "bam": [write_alignments(tmp_path / "r.bam", records)],
            "fastq.bz2+cram": [head, tail]}
    results = {}
    for label, inputs in runs.items():
        out = tmp_path / label
        proc = run_cli("predict", *map(str, inputs), "-o", str(out), "--chunk-size", "300",
                       "--classifier", str(clf), "--server", toy_server.grpc_url, "--window", "64",
                       "--no-report")
        assert proc.returncode == 0, proc.stderr
        results[label] = outputs_of(out)
    for label, files in results.items():
        assert files == results["fasta"], label
    assert results["fasta"]["prediction_results.txt"].count(b"\n") > 60


@pytest.mark.server
def test_short_reads_warn_once_with_the_fraction(tmp_path, toy_server) -> None:
    recs = [Record(f"read{i}", b"ATGGCTGCTAAAGGTCTGGCTGAAATCGTT" * 5) for i in range(40)]
    recs.append(Record("contig", b"ATGGCTGCTAAAGGT" * 100))
    fq = write_fastq(tmp_path / "short.fq", recs)
    clf = write_toy_classifier(tmp_path / "clf.safetensors")
    out = tmp_path / "out"
    proc = run_cli("predict", str(fq), "-o", str(out), "--chunk-size", "300", "--classifier",
                   str(clf), "--server", toy_server.grpc_url, "--no-report")
    assert proc.returncode == 0, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "unreliable" in line]
    assert len(warnings) == 1 and "98% of records (40 of 41" in warnings[0], proc.stderr
    import json

    lengths = json.loads((out / "run.json").read_text())["input_lengths"]
    assert (lengths["n"], lengths["n_short"], lengths["min"], lengths["max"]) == (41, 40, 150, 1500)
    assert sum(b["count"] for b in lengths["histogram"]) == 41
