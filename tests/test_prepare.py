"""`orchestrator prepare` writes the original's three files byte for byte, and fails cleanly."""

from __future__ import annotations

import gzip
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from golden_data import GOLDEN

from orchestrator.commands import prepare
from orchestrator.commands.cli import main
from orchestrator.commands.prepare import input_stem, run_prepare

ROOT = Path(__file__).resolve().parents[1]
SETS = [("pub_mixed_500", 500), ("pub_mixed_300", 300), ("pub_edge_500", 500),
        ("broad_fixtures/test_with_orfs", 500), ("broad_fixtures/test_sequences_small", 500)]
SUFFIXES = ("_chunked{n}.fa", "_identified_nucleotide.fa", "_identified_protein.faa")


def expected(name: str, size: int) -> list[bytes]:
    """Golden bytes; BROAD ships no identified files for test_sequences_small: they are empty."""
    files = [GOLDEN / (name + s.format(n=size)) for s in SUFFIXES]
    return [f.read_bytes() if f.exists() else b"" for f in files]


def written(outdir: Path, stem: str, size: int) -> list[bytes]:
    return [(outdir / (stem + s.format(n=size))).read_bytes() for s in SUFFIXES]


@pytest.mark.parametrize(("name", "size"), SETS, ids=[s[0] for s in SETS])
def test_golden_byte_identical(tmp_path: Path, name: str, size: int) -> None:
    rc = main(["prepare", str(GOLDEN / f"{name}.fa"), "-o", str(tmp_path), "--chunk-size",
               str(size), "-q"])
    assert rc == 0
    assert written(tmp_path, Path(name).name, size) == expected(name, size)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        Path(name).name + s.format(n=size) for s in SUFFIXES)  # no temporary file left


def test_small_batches_and_long_records_cut_into_pieces(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches that end inside a record (a run of its chunks) give the same bytes."""
    monkeypatch.setattr(prepare, "BATCH_BASES", 700)
    stats = run_prepare(inputs=[str(GOLDEN / "pub_mixed_500.fa")], outdir=tmp_path,
                        chunk_size=500)
    assert written(tmp_path, "pub_mixed_500", 500) == expected("pub_mixed_500", 500)
    assert (stats["records"], stats["chunks"], stats["frames"]) == (60, 285, 384)
    assert stats["bases"] == 128130 and stats["seconds"] >= 0


@pytest.mark.server
def test_subprocess_gzip_on_stdin(tmp_path: Path) -> None:
    data = gzip.compress((GOLDEN / "pub_mixed_300.fa").read_bytes())
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "prepare", "-", "-o",
                           str(tmp_path), "--chunk-size", "300"],
                          input=data, capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert written(tmp_path, "stdin", 300) == expected("pub_mixed_300", 300)


def test_several_inputs_are_one_sample(tmp_path: Path) -> None:
    a = GOLDEN / "broad_fixtures" / "test_with_orfs.fa"
    b = GOLDEN / "pub_edge_500.fa"
    both = tmp_path / "both.fa"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    assert main(["prepare", str(a), str(b), "-o", str(tmp_path / "two"), "--chunk-size", "500",
                 "-q"]) == 0
    assert main(["prepare", str(both), "-o", str(tmp_path / "one"), "--chunk-size", "500",
                 "-q"]) == 0
    assert written(tmp_path / "two", "test_with_orfs", 500) == written(tmp_path / "one", "both", 500)


def test_empty_input_writes_three_empty_files(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                              ) -> None:
    empty = tmp_path / "nothing.fasta"
    empty.write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        stats = run_prepare(inputs=[str(empty)], outdir=tmp_path / "out", chunk_size=500)
    assert written(tmp_path / "out", "nothing", 500) == [b"", b"", b""]
    assert stats["records"] == 0 and "no FASTA records" in caplog.text


def test_empty_record_is_skipped_without_crash(tmp_path: Path) -> None:
    src = tmp_path / "e.fa"
    src.write_bytes(b">empty\n>tiny\nATG\n>blank\n")
    stats = run_prepare(inputs=[str(src)], outdir=tmp_path, chunk_size=300)
    assert written(tmp_path, "e", 300) == [b">tiny_chunk_1\nATG\n", b">tiny_chunk_1F1\nATG\n"
                                           b">tiny_chunk_1R1\nCAT\n", b">tiny_chunk_1F1\nM\n"
                                           b">tiny_chunk_1R1\nH\n"]
    assert (stats["records"], stats["empty_records"], stats["chunks"]) == (3, 2, 1)


def run_cli(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str]:
    rc = main(args)
    return rc, capsys.readouterr().err


def test_bad_input_exit_2_one_line_no_partial_files(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    binary = tmp_path / "blob.fa"
    binary.write_bytes(b">a\nACGT\n" + bytes(range(256)))
    notfasta = tmp_path / "notes.fa"
    notfasta.write_bytes(b"hello\n>a\nACGT\n")
    cases = [(binary, f"{binary}:3: binary content"), (notfasta, f"{notfasta}:1: not FASTA"),
             (tmp_path / "missing.fa", f"{tmp_path / 'missing.fa'}: cannot read input")]
    for path, text in cases:
        rc, err = run_cli(["prepare", str(path), "-o", str(out), "--chunk-size", "500"], capsys)
        assert rc == 2
        assert err.count("\n") == 1 and text in err and "Traceback" not in err
        assert not out.exists() or list(out.iterdir()) == []  # nothing under a final name


@pytest.mark.server
def test_subprocess_binary_exit_2(tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\x00\x01\x02" * 100)
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "prepare", str(blob), "-o",
                           str(tmp_path / "o"), "--chunk-size", "500"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"orchestrator: error: {blob}:1: binary content, not a text FASTA file"]


@pytest.mark.parametrize(("path", "stem"), [
    ("reads.fa", "reads"), ("dir/reads.fasta.gz", "reads"), ("x.fna", "x"), ("x.FA.GZ", "x"),
    ("a.b.fa", "a.b"), ("reads", "reads"), ("reads.fq", "reads.fq"), ("-", "stdin"),
    ("dir.fa/s.fa", "s"), (".fa", ".fa"),
])
def test_input_stem(path: str, stem: str) -> None:
    assert input_stem(path) == stem


def test_progress_bar_counts_input_bytes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = GOLDEN / "pub_edge_500.fa"
    run_prepare(inputs=[str(src)], outdir=tmp_path, chunk_size=500, progress=True)
    assert written(tmp_path, "pub_edge_500", 500) == expected("pub_edge_500", 500)
    assert f"{src.stat().st_size / 1000:.1f}k" in capsys.readouterr().err.replace("kB", "k")


def test_memory_does_not_grow_with_input(tmp_path: Path) -> None:
    """Batches of about a megabase: a 4x larger input must not raise peak allocations much."""
    import tracemalloc

    import numpy as np

    rng = np.random.default_rng(7)
    peaks = []
    for mbp in (2, 8):
        src = tmp_path / f"r{mbp}.fa"
        bases = np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, mbp * 10**6)].tobytes()
        src.write_bytes(b"".join(b">r%d\n%s\n" % (i, bases[i * 5000:(i + 1) * 5000])
                                 for i in range(mbp * 200)))
        tracemalloc.start()
        run_prepare(inputs=[str(src)], outdir=tmp_path / f"o{mbp}", chunk_size=500)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.3 * peaks[0], peaks
