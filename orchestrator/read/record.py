"""What every reader yields: a `Record` (ID, residues, and for GenBank its annotated CDS)."""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True)
class Record:
    """One input record: `seq` holds the residues as in the file (case kept, no newlines).

    `cds` holds the annotated protein-coding regions of a GenBank record (training keeps only
    frames inside them, `orchestrator.chunk.coding`); None for formats that carry no annotations.
    """

    id: str
    seq: bytes
    cds: tuple[CodingRegion, ...] | None = None


Entry = tuple[str, bytes, str]  # (record ID, sequence, where: "FILE:LINE" or "FILE:record N")

_ACGT = b"ACGTacgt"


def count_ambiguous(seq: bytes) -> int:
    """Characters other than A C G T (either case): N, IUPAC codes, U, '-', ..."""
    return len(seq.translate(None, _ACGT))
