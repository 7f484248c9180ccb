"""Chunking with the original VirNucPro overlap arithmetic (REFERENCE.md section 2).

The original spreads the total overlap R = n*c - L over n chunks instead of n-1, so about half of
all lengths end in a chunk shorter than c. The classifiers were trained on chunks cut this way, so
the quirk is kept on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.read.record import Record


@dataclass(frozen=True)
class Chunk:
    """A piece of a record: `id` is `{record_id}_chunk_{k}` (k from 1), `seq` keeps input case,
    and [start, end) is where it lies on the record (0-based, half-open)."""

    id: str
    seq: bytes
    start: int
    end: int


def chunk_bounds(length: int, chunk_size: int) -> list[tuple[int, int]]:
    """Half-open [start, end) of each chunk of a record of `length`; none for an empty record."""
    if length <= chunk_size:
        return [(0, length)] if length > 0 else []
    n = -(-length // chunk_size)
    overlap_total = n * chunk_size - length
    q = overlap_total // n
    wide = overlap_total - q * (n - 1)  # steps that overlap by q + 1 (may exceed n - 1)
    bounds = []
    start = 0
    for k in range(n):
        bounds.append((start, min(start + chunk_size, length)))
        start += chunk_size - (q + 1 if k < wide else q)
    return bounds


def chunk_sequence(record: Record, chunk_size: int) -> list[Chunk]:
    """The record's chunks in order, IDs `{record.id}_chunk_{k}`."""
    seq = record.seq
    return [Chunk(f"{record.id}_chunk_{k}", seq[s:e], s, e)
            for k, (s, e) in enumerate(chunk_bounds(len(seq), chunk_size), 1)]
