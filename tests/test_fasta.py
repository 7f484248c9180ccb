"""The streaming FASTA reader: Biopython's records, gzip/stdin, and one-line errors for bad input."""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from Bio import SeqIO
from golden_data import GOLDEN

from orchestrator.errors import InputError
from orchestrator.read import fasta
from orchestrator.read.formats import read_records
from orchestrator.read.record import Record
from orchestrator.read.scan import scan_inputs

ROOT = Path(__file__).resolve().parents[1]
INPUTS = [GOLDEN / "pub_mixed_500.fa", GOLDEN / "pub_mixed_300.fa", GOLDEN / "pub_edge_500.fa",
          GOLDEN / "broad_fixtures" / "test_with_orfs.fa",
          GOLDEN / "broad_fixtures" / "test_sequences_small.fa"]
TRICKY = (b">a some description\r\nAC GT\r\n\r\nTT\r>b\rGG\r\n>c\tafter a tab\n\n>d\nAAA\n"
          b">\nCC\n>e  \t x\nac\tgt\n\n\n>f\n>g last\nNNNN")


def biopython(path: Path) -> list[Record]:
    return [Record(r.id, str(r.seq).encode()) for r in SeqIO.parse(path, "fasta")]


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: p.name)
def test_golden_inputs_match_biopython(path: Path) -> None:
    assert list(read_records([str(path)])) == biopython(path)


@pytest.mark.parametrize("block", [1, 2, 7, 61, 4096])
def test_block_boundaries_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   block: int) -> None:
    """Headers, CRLF pairs and sequence lines cut by a block boundary parse the same."""
    monkeypatch.setattr(fasta, "BLOCK", block)
    tricky = tmp_path / "tricky.fa"
    tricky.write_bytes(TRICKY)
    for path in (tricky, INPUTS[2]):
        assert list(read_records([str(path)])) == biopython(path)


def test_descriptions_tabs_blank_lines_crlf_and_lone_cr(tmp_path: Path) -> None:
    path = tmp_path / "t.fa"
    path.write_bytes(TRICKY)
    records = list(read_records([str(path)]))
    assert records == biopython(path)
    assert [r.id for r in records] == ["a", "b", "c", "d", "", "e", "f", "g"]
    assert records[0].seq == b"ACGTTT" and records[2].seq == b"" and records[5].seq == b"acgt"


def test_gzip_is_sniffed_not_guessed_from_the_name(tmp_path: Path) -> None:
    raw = INPUTS[0].read_bytes()
    for name in ("x.fa.gz", "x_without_suffix.fa"):
        (tmp_path / name).write_bytes(gzip.compress(raw))
        assert list(read_records([str(tmp_path / name)])) == biopython(INPUTS[0])
    (tmp_path / "plain.gz").write_bytes(raw)  # a .gz name on a plain file: read as plain
    assert list(read_records([str(tmp_path / "plain.gz")])) == biopython(INPUTS[0])


def test_several_inputs_are_one_stream() -> None:
    paths = [str(INPUTS[3]), str(INPUTS[4])]
    assert list(read_records(paths)) == biopython(INPUTS[3]) + biopython(INPUTS[4])


@pytest.mark.server
def test_stdin_and_spool(tmp_path: Path) -> None:
    code = ("import sys; from orchestrator.read.formats import read_records\n"
            "from orchestrator.read.scan import scan_inputs; from orchestrator.read.sources import spool_stdin\n"
            "p = spool_stdin(sys.argv[1]); s = scan_inputs([p])\n"
            "print(s.n_records, s.n_bases, sum(len(r.seq) for r in read_records([p])))")
    raw = gzip.compress(INPUTS[0].read_bytes())
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "spool")], input=raw,
                         capture_output=True, cwd=ROOT, check=True).stdout.split()
    assert out == [b"60", b"128130", b"128130"]
    assert (tmp_path / "spool").read_bytes() == raw
    code = "from orchestrator.read.formats import read_records; print(len(list(read_records(['-']))))"
    out = subprocess.run([sys.executable, "-c", code], input=INPUTS[1].read_bytes(),
                         capture_output=True, cwd=ROOT, check=True).stdout
    assert out.strip() == b"60"


def test_empty_input_and_empty_record(tmp_path: Path) -> None:
    (tmp_path / "empty.fa").write_bytes(b"")
    (tmp_path / "blank.fa").write_bytes(b"\n\n  \n")
    assert list(read_records([str(tmp_path / "empty.fa"), str(tmp_path / "blank.fa")])) == []
    (tmp_path / "e.fa").write_bytes(b">empty\n>next\nACGT\n>last")
    assert list(read_records([str(tmp_path / "e.fa")])) == [
        Record("empty", b""), Record("next", b"ACGT"), Record("last", b"")]


def message(paths: list[str]) -> str:
    with pytest.raises(InputError) as info:
        list(read_records(paths))
    text = str(info.value)
    assert "\n" not in text
    return text


def test_bad_inputs_name_file_and_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.fa")
    assert message([missing]).startswith(f"{missing}: cannot read input")
    binary = tmp_path / "image.fa"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    assert message([str(binary)]).startswith(f"{binary}:3: binary content")
    late_nul = tmp_path / "late.fa"
    late_nul.write_bytes(b">a\nACGT\n>b\nAC\x00GT\n")
    assert message([str(late_nul)]) == f"{late_nul}:4: binary content, not a text FASTA file"
    text = tmp_path / "notes.txt"
    text.write_bytes(b"\n\nhello world\n>a\nACGT\n")
    assert message([str(text)]) == f"{text}:3: not FASTA (expected a '>' header line)"
    truncated = tmp_path / "cut.fa.gz"
    truncated.write_bytes(gzip.compress(INPUTS[0].read_bytes())[:500])
    assert message([str(truncated)]).startswith(f"{truncated}: cannot read input")
    latin1 = tmp_path / "latin1.fa"
    latin1.write_bytes(b">ok\nACGT\n>caf\xe9\nACGT\n")
    assert message([str(latin1)]) == f"{latin1}:3: header is not UTF-8 text"
    non_ascii = tmp_path / "x.fa"
    non_ascii.write_bytes(b">ok\nAC\n>s\nAC\xc3\xa9GT\n")
    assert message([str(non_ascii)]).startswith(f"{non_ascii}:3: sequence holds non-ASCII")
    assert message([str(INPUTS[3]), str(text)]).startswith(f"{text}:3:")  # the second input


def test_scan_inputs_counts_and_checksums(tmp_path: Path) -> None:
    gz = tmp_path / "a.fa.gz"
    gz.write_bytes(gzip.compress(INPUTS[3].read_bytes()))
    summary = scan_inputs([str(gz), str(INPUTS[4])])
    assert (summary.n_records, summary.n_bases) == (2 + 11, 345 + 5500)
    assert summary.sha256 == {str(gz): hashlib.sha256(gz.read_bytes()).hexdigest(),
                              str(INPUTS[4]): hashlib.sha256(INPUTS[4].read_bytes()).hexdigest()}


def test_scan_inputs_names_duplicates(tmp_path: Path) -> None:
    a, b = tmp_path / "a.fa", tmp_path / "b.fa"
    a.write_bytes(b">x one\nAC\n>y\nGG\n>x two\nTT\n")
    b.write_bytes(b">z\nAA\n>y\nCC\n")
    with pytest.raises(InputError) as info:
        scan_inputs([str(a), str(b)])
    assert str(info.value).startswith(
        f"duplicate record IDs: x ({a}:1, {a}:5), y ({a}:3, {b}:3)")
    assert scan_inputs([str(b)]).n_records == 2
