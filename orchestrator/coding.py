"""Which kept frames of a chunk belong to an annotated protein: the training-set filter.

The original VirNucPro trained only on frames whose protein is part of an annotated CDS, so the
classifier learns from real genes rather than from open frames that occur by chance (a random
300-nt chunk keeps some frame ~0.8% of the time, REFERENCE.md section 3). A frame passes iff its
protein (a stop-free six-frame translation of the chunk) is a substring of the protein of a CDS
that overlaps the chunk. Pure functions: the GenBank reader (`orchestrator.inputs`) attaches
`cds_proteins(record)` to each record as `Record.cds`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from orchestrator.chunking import chunk_bounds

if TYPE_CHECKING:
    from Bio.Seq import Seq
    from Bio.SeqFeature import SeqFeature
    from Bio.SeqRecord import SeqRecord

    from orchestrator.fasta import Record
    from orchestrator.frames import Frame

PSEUDO_QUALIFIERS = ("pseudo", "pseudogene")  # no protein made: their "translation" is not a gene
BIN_BP = 4096  # CodingIndex bin width: a chunk touches 1-2 bins, a bin holds a few genes


@dataclass(frozen=True)
class CodingRegion:
    """One annotated CDS: outer bounds [start, end) on the record (0-based), strand, protein.

    `strand` is 1 or -1, None when the parts of a joined location disagree. For a join across the
    origin of a circular genome the bounds span the whole record.
    """

    start: int
    end: int
    strand: int | None
    protein: str


def _translation(feature: SeqFeature, nucleotides: Seq) -> str:
    """The feature's protein when it has no /translation: its /codon_start and /transl_table kept."""
    qualifiers = feature.qualifiers
    try:
        offset = int(qualifiers.get("codon_start", ["1"])[0]) - 1
        table = int(qualifiers.get("transl_table", ["1"])[0])
        coding = nucleotides[offset:]
        coding = coding[: len(coding) - len(coding) % 3]  # no partial-codon warning
        return str(coding.translate(table=table, cds=False)).removesuffix("*")
    except (ValueError, KeyError) as exc:  # KeyError: no such genetic code
        raise ValueError(f"CDS at {feature.location}: cannot translate it ({exc!r}); check its "
                         "/codon_start and /transl_table") from None


def cds_proteins(record: SeqRecord) -> list[CodingRegion]:
    """The record's protein-coding CDS features with their proteins, in feature-table order.

    The /translation qualifier is authoritative (it knows alternative starts, slippage, selenocysteine);
    without one the extracted sequence is translated. Pseudogenes and features that point into other
    records are skipped. Raises ValueError for a CDS that cannot be translated.
    """
    regions = []
    for feature in record.features:
        if feature.type != "CDS" or feature.location is None:
            continue
        if any(q in feature.qualifiers for q in PSEUDO_QUALIFIERS):
            continue
        try:
            nucleotides = feature.extract(record.seq)
        except ValueError:  # a part on another record, e.g. join(AB012345.1:1..50,10..90)
            continue
        translation = feature.qualifiers.get("translation")
        protein = translation[0] if translation else _translation(feature, nucleotides)
        location = feature.location
        regions.append(CodingRegion(int(location.start), int(location.end), location.strand, protein))
    return regions


class CodingIndex:
    """CDS filed under every BIN_BP-wide bin they touch, so a query only looks at nearby CDS.

    A bacterial genome has thousands of CDS and tens of thousands of chunks; a scan of all CDS per
    frame would be quadratic.
    """

    def __init__(self, regions: Iterable[CodingRegion]) -> None:
        self._bins: defaultdict[int, list[CodingRegion]] = defaultdict(list)
        for region in regions:
            for b in range(region.start // BIN_BP, (region.end - 1) // BIN_BP + 1):
                self._bins[b].append(region)

    def contains(self, protein: str, start: int, end: int) -> bool:
        """True iff `protein` is part of the protein of a CDS that overlaps [start, end)."""
        for b in range(start // BIN_BP, (end - 1) // BIN_BP + 1):
            for region in self._bins.get(b, ()):
                if region.start < end and region.end > start and protein in region.protein:
                    return True
        return False


def kept_coding_frames(record: Record, chunk_size: int, frames: Sequence[Sequence[Frame]]) -> list[list[Frame]]:
    """Per chunk of `record` (cut as `chunk_sequence(record, chunk_size)`), its frames inside a CDS.

    `frames[k]` are the kept frames of chunk k (`kept_frames_batch`); the chunks' coordinates come
    from `chunk_bounds`, since chunks do not carry them. Raises ValueError for a record without
    annotations (not read from GenBank), where the filter would silently drop everything.
    """
    if record.cds is None:
        raise ValueError(f"record {record.id!r} has no CDS annotations; only GenBank input carries them")
    index = CodingIndex(record.cds)
    bounds = chunk_bounds(len(record.seq), chunk_size)
    return [[frame for frame in chunk_frames if index.contains(frame.protein, start, end)]
            for (start, end), chunk_frames in zip(bounds, frames, strict=True)]
