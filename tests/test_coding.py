"""GenBank input and the training filter "frames inside an annotated CDS".

The genome below is synthetic but laid out like a real one: genes on both strands, a spliced gene,
a pseudogene, and intergenic DNA that includes a stop-free stretch in frame with a gene (so a chunk
across the gene's start keeps a frame that is not part of the protein). Which frames must survive
is decided by an oracle that knows each gene's codon positions, not by protein strings.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import random
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from Bio import SeqIO
from Bio.Seq import Seq
from Bio.SeqFeature import CompoundLocation, SeqFeature, SimpleLocation
from Bio.SeqRecord import SeqRecord

from orchestrator.chunk.chunking import chunk_bounds, chunk_sequence
from orchestrator.chunk.coding import CodingIndex, kept_coding_frames
from orchestrator.chunk.frames import Frame, kept_frames_batch
from orchestrator.errors import InputError
from orchestrator.read.formats import InputFormat, detect_format, read_records
from orchestrator.read.genbank import cds_proteins
from orchestrator.read.record import CodingRegion, Record
from orchestrator.read.scan import scan_inputs

ROOT = Path(__file__).resolve().parents[1]
COMPRESS = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda b: zstandard.ZstdCompressor().compress(b),
}
STOPS = ("TAA", "TAG", "TGA")
SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in STOPS]
GENOME_ID = "SYN1.1"
# Gene A (+), with a GTG start and a stop-free 210-bp stretch before it in its frame.
UPSTREAM, A_START, A_END = 239, 449, 1202
B_START, B_END = 1350, 2010  # gene B (-)
C_EXONS = ((2100, 2251), (2400, 2699))  # gene C (+), spliced: exon 1 is 151 bp, so exon 2 is in phase 1
D_START, D_END = 2700, 3000  # stop-free and annotated /pseudo


def revcomp(s: str) -> str:
    return str(Seq(s).reverse_complement())


def translate(s: str) -> str:
    return str(Seq(s).translate())


def synthetic_genome(a_translation: str | None = None) -> SeqRecord:
    """The 3,000-bp genome; gene A carries `a_translation` as its /translation (default: the right one)."""
    rng = random.Random(7)

    def dna(n: int) -> str:
        return "".join(rng.choice("ACGT") for _ in range(n))

    def orf(codons: int) -> str:
        return "".join(rng.choice(SENSE) for _ in range(codons))

    a = "GTG" + orf((A_END - A_START) // 3 - 2) + "TAA"
    b = "ATG" + orf((B_END - B_START) // 3 - 2) + "TAG"
    c_len = sum(e - s for s, e in C_EXONS)
    c = "ATG" + orf(c_len // 3 - 2) + "TGA"
    cut = C_EXONS[0][1] - C_EXONS[0][0]
    seq = (dna(UPSTREAM) + orf((A_START - UPSTREAM) // 3) + a + dna(B_START - A_END) + revcomp(b)
           + dna(C_EXONS[0][0] - B_END) + c[:cut] + dna(C_EXONS[1][0] - C_EXONS[0][1]) + c[cut:]
           + dna(D_START - C_EXONS[1][1]) + orf((D_END - D_START) // 3))
    assert len(seq) == D_END
    a_protein = "M" + translate(a[3:-3])  # an alternative start codon is read as M
    features = [
        SeqFeature(SimpleLocation(A_START, A_END, 1), type="CDS",
                   qualifiers={"translation": [a_translation or a_protein]}),
        SeqFeature(SimpleLocation(B_START, B_END, -1), type="CDS"),
        SeqFeature(CompoundLocation([SimpleLocation(s, e, 1) for s, e in C_EXONS]), type="CDS",
                   qualifiers={"transl_table": ["11"]}),
        SeqFeature(SimpleLocation(D_START, D_END, 1), type="CDS", qualifiers={"pseudo": [""]}),
        SeqFeature(SimpleLocation(A_START, A_END, 1), type="gene"),
    ]
    return SeqRecord(Seq(seq), id=GENOME_ID, name=GENOME_ID.split(".")[0], description="synthetic",
                     annotations={"molecule_type": "DNA"}, features=features)


def genbank_text(*records: SeqRecord) -> str:
    out = io.StringIO()
    SeqIO.write(records, out, "genbank")
    return out.getvalue()


def write_genbank(path: Path, *records: SeqRecord) -> Path:
    path.write_text(genbank_text(*records))
    return path


def gene_codons() -> list[set[tuple[int, ...]]]:
    """Per real gene, the genome positions of its sense codons (read in the gene's direction)."""
    genes = [range(A_START, A_END), range(B_END - 1, B_START - 1, -1),
             [p for s, e in C_EXONS for p in range(s, e)]]
    return [{tuple(g[i:i + 3]) for i in range(0, len(g) - 3, 3)} for g in genes]


def frame_codons(label: str, protein: str, start: int, end: int) -> list[tuple[int, ...]]:
    """Genome positions of each codon a frame of chunk [start, end) reads (all bases are ACGT)."""
    f = int(label[1]) - 1
    if label[0] == "F":
        return [(p, p + 1, p + 2) for p in range(start + f, start + f + 3 * len(protein), 3)]
    return [(p, p - 1, p - 2) for p in range(end - 1 - f, end - 1 - f - 3 * len(protein), -3)]


@pytest.fixture(scope="module")
def genome(tmp_path_factory: pytest.TempPathFactory) -> Record:
    path = write_genbank(tmp_path_factory.mktemp("gb") / "genome.gb", synthetic_genome())
    (record,) = read_records([str(path)])
    return record


def filtered(record: Record, size: int) -> tuple[list[list[Frame]], list[list[Frame]]]:
    """(kept frames, kept frames inside a CDS) per chunk, as the training path computes them."""
    chunks = chunk_sequence(record, size)
    frames = kept_frames_batch(chunks)
    return frames, kept_coding_frames(record, chunks, frames)


def label(frame: Frame) -> str:
    return frame.frame_id[-2:]


def labels(frames: list[Frame]) -> list[str]:
    return [label(f) for f in frames]


def _contains(protein: str, start: int, end: int, regions: list[CodingRegion]) -> bool:
    return CodingIndex(regions).contains(protein, start, end)


@pytest.mark.parametrize("size", [300, 150])
def test_exactly_the_frames_that_read_a_gene_in_its_own_frame_are_kept(genome: Record, size: int) -> None:
    genes = gene_codons()
    frames, kept = filtered(genome, size)
    for (start, end), before, after in zip(chunk_bounds(len(genome.seq), size), frames, kept, strict=True):
        expected = [f for f in before
                    if any(set(frame_codons(label(f), f.protein, start, end)) <= codons for codons in genes)]
        assert after == expected, (start, end)
    assert sum(map(len, kept)) >= {300: 3, 150: 10}[size]  # not vacuous


def test_strand_frame_straddles_and_pseudogene(genome: Record) -> None:
    frames, kept = filtered(genome, 300)
    assert labels(kept[3 - 1]) == ["F3"]  # [600, 900): inside A, whose codons start at 449 = 600 - 151
    assert labels(kept[6 - 1]) == ["R1"]  # [1500, 1800): inside B on the reverse strand
    assert "F3" in labels(kept[4 - 1])  # [900, 1200): ends inside A's stop codon, protein inside A's
    assert "F3" in labels(frames[2 - 1]) and "F3" not in labels(kept[2 - 1])  # [300, 600): upstream + A's start
    assert labels(kept[0]) == []  # [0, 300): intergenic
    assert labels(frames[10 - 1]) == ["F1"] and kept[10 - 1] == []  # [2700, 3000): the pseudogene

    frames, kept = filtered(genome, 150)
    assert "F3" in labels(kept[4 - 1])  # [450, 600): starts 1 bp after A's first base
    assert "F3" in labels(kept[17 - 1])  # [2400, 2550): exon 2 of C, read in phase with exon 1
    assert all("F1" in labels(frames[k]) and not kept[k] for k in (18, 19))  # the pseudogene
    c_protein = next(r.protein for r in genome.cds if r.start == C_EXONS[0][0])
    assert kept[17 - 1][0].protein in c_protein and kept[17 - 1][0].protein not in c_protein[:50]


def test_cds_list_read_from_genbank(genome: Record) -> None:
    a, b, c = genome.cds
    assert (a.start, a.end, a.strand) == (A_START, A_END, 1)
    assert (b.start, b.end, b.strand) == (B_START, B_END, -1)
    assert (c.start, c.end, c.strand) == (C_EXONS[0][0], C_EXONS[1][1], 1)
    seq = genome.seq.decode()
    assert a.protein[0] == "M" and translate(seq[A_START:A_START + 3]) == "V"  # /translation preferred
    assert a.protein[1:] == translate(seq[A_START + 3:A_END - 3])
    assert b.protein == translate(revcomp(seq[B_START:B_END]))[:-1]  # trailing * stripped
    assert c.protein == translate("".join(seq[s:e] for s, e in C_EXONS))[:-1]
    assert len(c.protein) == sum(e - s for s, e in C_EXONS) // 3 - 1


def test_a_wrong_translation_keeps_none_of_its_frames(tmp_path: Path) -> None:
    path = write_genbank(tmp_path / "w.gb", synthetic_genome(a_translation="M" + "W" * 249))
    (record,) = read_records([str(path)])
    _, kept = filtered(record, 300)
    assert [labels(k) for k in kept[1:4]] == [[], [], []]  # A's chunks
    assert labels(kept[6 - 1]) == ["R1"]  # B is untouched


def test_transl_table_codon_start_and_skipped_features() -> None:
    seq = "ATGTGAAAATGGTAA" + "GGG" * 5
    features = [SeqFeature(SimpleLocation(0, 15, 1), type="CDS", qualifiers=q) for q in (
        {"transl_table": ["4"]}, {"transl_table": ["11"]}, {}, {"codon_start": ["2"]},
        {"pseudogene": ["unprocessed"]})]
    features.append(SeqFeature(CompoundLocation([SimpleLocation(0, 9, 1),
                                                 SimpleLocation(0, 6, 1, ref="AB000001.1")]), type="CDS"))
    features.append(SeqFeature(SimpleLocation(0, 16, 1), type="CDS"))  # 16 bp: the partial codon is dropped
    record = SeqRecord(Seq(seq), id="T.1", features=features)
    proteins = [r.protein for r in cds_proteins(record)]
    assert proteins == ["MWKW", "M*KW", "M*KW", "CENG", "M*KW"]


def test_an_untranslatable_cds_names_the_record(tmp_path: Path) -> None:
    record = SeqRecord(Seq("ATGAAATAA"), id="T.1", annotations={"molecule_type": "DNA"},
                       features=[SeqFeature(SimpleLocation(0, 9, 1), type="CDS",
                                            qualifiers={"transl_table": ["99"]})])
    path = write_genbank(tmp_path / "t.gb", record)
    with pytest.raises(InputError, match=r"t.gb: record 1: record 'T.1': CDS at \[0:9\]\(\+\): cannot translate"):
        list(read_records([str(path)]))


def test_overlap_is_required_and_the_index_spans_bins() -> None:
    regions = [CodingRegion(100, 400, 1, "MKLV"), CodingRegion(0, 20_000, None, "QQWERT"),
               CodingRegion(8_000, 8_400, -1, "PPGA")]
    assert _contains("KL", 300, 600, regions)
    assert not _contains("KL", 400, 700, regions)  # the CDS ends where the chunk starts
    assert _contains("WER", 12_000, 12_300, regions)  # a CDS over many bins (origin-spanning join)
    assert _contains("PG", 8_150, 8_450, regions) and not _contains("PG", 8_400, 8_700, regions)
    index = CodingIndex(regions)
    assert index.contains("PPGA", 4_000, 8_200) and not index.contains("MKLVX", 0, 20_000)
    with pytest.raises(ValueError, match="no CDS annotations"):
        record = Record("x", b"ACGT")
        kept_coding_frames(record, chunk_sequence(record, 300), [[]])


def test_genbank_records_match_biopython(tmp_path: Path) -> None:
    records = [synthetic_genome(), SeqRecord(Seq("acgtNNacgt"), id="NC_000002.3", name="NC_000002",
                                             annotations={"molecule_type": "DNA"}),
               SeqRecord(Seq("GATTACA" * 30), id="NC_000003.1", name="NC_000003",
                         annotations={"molecule_type": "DNA"})]
    path = write_genbank(tmp_path / "multi.gbk", *records)
    got = list(read_records([str(path)]))
    with open(path) as fh:
        expected = list(SeqIO.parse(fh, "genbank"))
    assert [(r.id, r.seq) for r in got] == [(e.id, str(e.seq).encode()) for e in expected]
    assert [r.id for r in got] == [GENOME_ID, "NC_000002.3", "NC_000003.1"]
    assert [len(r.cds) for r in got] == [3, 0, 0]
    summary = scan_inputs([str(path)])
    assert (summary.n_records, summary.n_bases) == (3, 3000 + 10 + 210)
    assert summary.formats[str(path)].describe() == "genbank"
    assert summary.sha256[str(path)] == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("compression", [None, *COMPRESS])
def test_compressed_genbank_is_sniffed(tmp_path: Path, compression: str | None) -> None:
    raw = b"\n\n" + genbank_text(synthetic_genome()).encode()
    path = tmp_path / "genome.txt"
    path.write_bytes(COMPRESS[compression](raw) if compression else raw)
    assert detect_format(str(path)) == InputFormat("genbank", compression)
    (record,) = read_records([str(path)])
    assert record.id == GENOME_ID and len(record.seq) == 3000 and len(record.cds) == 3


def test_mixed_with_fasta_and_duplicates_named(tmp_path: Path) -> None:
    gb = write_genbank(tmp_path / "g.gb", synthetic_genome())
    fa = tmp_path / "f.fa"
    fa.write_text(">other\nACGTACGT\n")
    records = list(read_records([str(fa), str(gb)]))
    assert [(r.id, r.cds is None) for r in records] == [("other", True), (GENOME_ID, False)]
    summary = scan_inputs([str(gb), str(fa)])
    assert [f.kind for f in summary.formats.values()] == ["genbank", "fasta"] and summary.n_records == 2
    fa.write_text(f">other\nACGT\n>{GENOME_ID} same accession\nACGT\n")
    with pytest.raises(InputError, match=rf"duplicate record IDs: {GENOME_ID} \(.*g.gb: record 1, .*f.fa:3\)"):
        scan_inputs([str(gb), str(fa)])


def test_a_record_without_sequence_is_refused(tmp_path: Path) -> None:
    text = genbank_text(synthetic_genome())
    locus = genbank_text(SeqRecord(Seq("N" * 3000), id="NZ_AAAA00000000.1", name="NZ_AAAA00000000",
                                   annotations={"molecule_type": "DNA"})).splitlines()[0]
    master = (f"{locus}\nACCESSION   NZ_AAAA00000000\nVERSION     NZ_AAAA00000000.1\n"
              "CONTIG      join(NZ_AAAA01000001.1:1..3000)\n//\n")
    path = tmp_path / "wgs.gb"
    path.write_text(text + master)
    with pytest.raises(InputError, match=r"wgs.gb: record 2: record 'NZ_AAAA00000000.1' has no sequence "
                                         r"\(a CONTIG/WGS master record\?\); download the full record"):
        scan_inputs([str(path)])


@pytest.mark.parametrize(("text", "reason"), [
    (genbank_text(synthetic_genome()).splitlines()[0] + "\ngarbage here\n", "not valid GenBank"),
    ("LOCUS garbage\n\0\1\n", "no complete record"),
    (genbank_text(synthetic_genome())[:2000], "not valid GenBank"),
])
def test_garbage_after_locus_names_the_file(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "bad.gb"
    path.write_text(text)
    assert detect_format(str(path)).kind == "genbank"
    with pytest.raises(InputError, match=rf"bad.gb.*{reason}"):
        list(read_records([str(path)]))


@pytest.mark.server
def test_stdin_takes_genbank(tmp_path: Path) -> None:
    code = ("from orchestrator.read.formats import read_records\n"
            "print([(r.id, len(r.seq), len(r.cds)) for r in read_records(['-'])])")
    data = gzip.compress(genbank_text(synthetic_genome()).encode())
    out = subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, cwd=ROOT, check=True)
    assert out.stdout.decode().strip() == f"[('{GENOME_ID}', 3000, 3)]"
