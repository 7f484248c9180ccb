"""Which kept frames of a chunk belong to an annotated protein: the training-set filter.

The original VirNucPro trained only on frames whose protein is part of an annotated CDS, so the
classifier learns from real genes rather than from open frames that occur by chance (a random
300-nt chunk keeps some frame ~0.8% of the time, REFERENCE.md section 3). A frame passes iff its
protein (a stop-free six-frame translation of the chunk) is a substring of the protein of a CDS
that overlaps the chunk. Pure functions: the GenBank reader (`orchestrator.read.genbank`) attaches
each record's annotated CDS as `Record.cds`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from orchestrator.read.record import CodingRegion, Record

if TYPE_CHECKING:
    from orchestrator.chunk.chunking import Chunk
    from orchestrator.chunk.frames import Frame

BIN_BP = 4096  # CodingIndex bin width: a chunk touches 1-2 bins, a bin holds a few genes


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


def kept_coding_frames(record: Record, chunks: Sequence[Chunk], frames: Sequence[Sequence[Frame]]
                       ) -> list[list[Frame]]:
    """Per chunk of `record`, its frames inside a CDS (`frames[k]`: the kept frames of chunk k).

    Raises ValueError for a record without annotations (not read from GenBank), where the filter
    would silently drop everything.
    """
    if record.cds is None:
        raise ValueError(f"record {record.id!r} has no CDS annotations; only GenBank input carries them")
    index = CodingIndex(record.cds)
    return [[frame for frame in chunk_frames if index.contains(frame.protein, chunk.start, chunk.end)]
            for chunk, chunk_frames in zip(chunks, frames, strict=True)]
