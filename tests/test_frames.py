"""Six-frame translation against a slow per-codon reference built on Biopython's translate."""

from __future__ import annotations

from itertools import product

from Bio.Data.CodonTable import standard_dna_table
from Bio.Seq import Seq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.chunk.chunking import Chunk
from orchestrator.chunk.frames import STANDARD_CODE, Frame, kept_frames, kept_frames_batch, scan


def whole(chunk_id: str, seq: bytes) -> Chunk:
    """A chunk that is a whole record of its own."""
    return Chunk(chunk_id, seq, 0, len(seq))

ACGT = set("ACGT")
SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"
         if a + b + c not in ("TAA", "TAG", "TGA")]


def revcomp(seq: str) -> str:
    return seq.upper().translate(str.maketrans("ACGT", "TGCA"))[::-1]


def reference(chunk_id: str, seq: str) -> list[Frame]:
    """REFERENCE.md section 3, one codon at a time."""
    s = seq.upper()
    out = []
    for strand, text in (("F", s), ("R", revcomp(s))):
        for f in range(3):
            codons = [text[i:i + 3] for i in range(f, len(text) - 2, 3)]
            protein = "".join(str(Seq(c).translate()) for c in codons if set(c) <= ACGT)
            if protein and "*" not in protein:
                out.append(Frame(f"{chunk_id}{strand}{f + 1}", text[f:f + 3 * len(protein) + 1],
                                 protein))
    return out


# Mostly ACGT (either case) with N, IUPAC codes, U, gaps; stop-free codon runs so frames survive.
letters = st.sampled_from("ACGTACGTACGTacgtNnRYKMSWUB-.")
codon_runs = st.lists(st.sampled_from(SENSE), max_size=40).map("".join)
pieces = st.one_of(st.text(letters, max_size=12), codon_runs,
                   codon_runs.map(revcomp), codon_runs.map(str.lower))
sequences = st.lists(pieces, max_size=6).map("".join)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences)
def test_matches_per_codon_reference(seq: str) -> None:
    assert kept_frames(whole("c", seq.encode())) == reference("c", seq)


@settings(max_examples=200, deadline=None)
@given(sequences)
def test_frame_properties(seq: str) -> None:
    frames = kept_frames(whole("c", seq.encode()))
    length = len(seq)
    for frame in frames:
        label = frame.frame_id[-2:]
        f = int(label[1]) - 1
        p = len(frame.protein)
        assert "*" not in frame.protein and p > 0
        assert p <= (length - f) // 3  # skipped codons only shorten it
        assert len(frame.nucleotide) == min(3 * p + 1, length - f)
        text = seq.upper() if label[0] == "F" else revcomp(seq)
        if set(text[f:f + 3 * ((length - f) // 3)]) <= ACGT:
            assert p == (length - f) // 3
    labels = [frame.frame_id[-2:] for frame in frames]
    assert labels == sorted(labels, key=["F1", "F2", "F3", "R1", "R2", "R3"].index)


@settings(max_examples=200, deadline=None)
@given(sequences)
def test_reverse_frames_are_forward_frames_of_reverse_complement(seq: str) -> None:
    own = {f.frame_id[-2:]: f for f in kept_frames(whole("c", seq.encode()))}
    other = {f.frame_id[-2:]: f for f in kept_frames(whole("c", revcomp(seq).encode()))}
    for i in "123":
        a, b = own.get("R" + i), other.get("F" + i)
        assert (a is None) == (b is None)
        if a and b:
            assert (a.nucleotide, a.protein) == (b.nucleotide, b.protein)


@settings(max_examples=80, deadline=None)
@given(st.lists(sequences, max_size=8))
def test_batch_equals_one_at_a_time(seqs: list[str]) -> None:
    chunks = [whole(f"s{i}", s.encode()) for i, s in enumerate(seqs)]
    assert kept_frames_batch(chunks) == [kept_frames(c) for c in chunks]


@settings(max_examples=200, deadline=None)
@given(sequences, st.lists(st.tuples(st.integers(0, 400), st.integers(0, 400)), max_size=8))
def test_scan_of_overlapping_windows_in_one_buffer(seq: str, cuts: list[tuple[int, int]]) -> None:
    """prepare scans chunks as windows of one shared buffer; each must match its own copy."""
    buf = seq.upper().encode()
    bounds = [(min(a, b, len(buf)), min(max(a, b), len(buf))) for a, b in cuts]
    got: list[list[tuple[str, str, str]]] = [[] for _ in bounds]
    for ci, fr, nt, aa in scan(buf, [b[0] for b in bounds], [b[1] for b in bounds]):
        got[ci].append((["F1", "F2", "F3", "R1", "R2", "R3"][fr], nt.decode(), aa.decode()))
    for (s, e), frames in zip(bounds, got, strict=True):
        expected = reference("", seq[s:e])
        assert frames == [(f.frame_id, f.nucleotide, f.protein) for f in expected]


def test_known_chunk() -> None:
    # ATG AAA TTT GGG: F1 = MKFG; all other frames hold a stop or are checked by the reference.
    frames = kept_frames(whole("x_chunk_1", b"atgaaatttggg"))
    assert frames[0] == Frame("x_chunk_1F1", "ATGAAATTTGGG", "MKFG")
    assert frames == reference("x_chunk_1", "atgaaatttggg")


def test_non_acgt_codons_are_skipped_not_stops() -> None:
    frames = {f.frame_id: f for f in kept_frames(whole("n", b"ATGNNNTAN" + b"AAA"))}
    # F1 codons: ATG NNN TAN AAA -> M, skip, skip, K
    assert frames["nF1"].protein == "MK"
    assert frames["nF1"].nucleotide == "ATGNNNT"  # s[0 : 3*2+1]: no longer aligned with codons


def test_empty_and_tiny_chunks_keep_nothing() -> None:
    for seq in (b"", b"A", b"AC", b"NNN", b"N" * 600):
        assert kept_frames(whole("t", seq)) == []
    assert kept_frames(whole("t", b"ATG")) == [Frame("tF1", "ATG", "M"), Frame("tR1", "CAT", "H")]


def test_written_out_code_is_ncbi_table_1() -> None:
    """STANDARD_CODE (written out for start-up time) is Biopython's standard table, codon by codon."""
    codons = ["".join(c) for c in product("ACGT", repeat=3)]
    expected = "".join(
        "*" if c in standard_dna_table.stop_codons else standard_dna_table.forward_table[c] for c in codons
    )
    assert STANDARD_CODE == expected
