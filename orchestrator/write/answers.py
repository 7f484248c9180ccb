"""Per-sequence answers of a finished run: calls, viral regions and the chunk-score track.

They are derived after the original's files are assembled, from two streams in input order: the
records (`sequence_summary.tsv`: ID and length) and the chunk maxima table the run keeps in its
state folder (`ID, chunk number, max_score_0, max_score_1` as printed). A streaming join holds one
record at a time, so memory does not grow with the input; and since no model is involved, new
thresholds on a finished run (`predict` rerun with other call options) re-derive these files
in seconds instead of re-embedding.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from orchestrator.atomic import atomic_open
from orchestrator.chunk.chunking import chunk_bounds
from orchestrator.classify.calls import (
    CallSettings,
    ChunkScore,
    call_sequence,
    find_regions,
    scored_chunks,
    track_intervals,
)
from orchestrator.write.formats import (
    BEDGRAPH_HEADER,
    CALLS_HEADER,
    REGIONS_BED_HEADER,
    REGIONS_HEADER,
    format_bedgraph_rows,
    format_call_row,
    format_region_rows,
)
from orchestrator.write.paths import OutputPaths


@dataclass(frozen=True)
class RecordChunks:
    """A record's ID, length, chunk bounds, scored chunks and their virus scores as printed."""

    seq_id: str
    length: int
    bounds: list[tuple[int, int]]
    chunks: list[ChunkScore]
    scores_printed: list[str]


def _records(summary: Path) -> Iterator[tuple[str, int]]:
    with open(summary, encoding="utf-8", newline="") as fh:
        next(fh, None)
        for line in fh:
            seq_id, length, _ = line.split("\t", 2)
            yield seq_id, int(length)


def _chunk_rows(table: Path) -> Iterator[list[str]]:
    with open(table, encoding="utf-8", newline="") as fh:
        for line in fh:
            yield line.rstrip("\n").split("\t")  # ID, chunk number, max_score_0, max_score_1


def record_chunks(paths: OutputPaths, chunk_size: int) -> Iterator[RecordChunks]:
    """Each record with its scored chunks in order, joining the two ordered streams."""
    rows = _chunk_rows(paths.chunk_table)
    pending = next(rows, None)
    for seq_id, length in _records(paths.summary):
        maxima: dict[int, tuple[float, float]] = {}
        printed: list[str] = []
        while pending is not None and pending[0] == seq_id:
            maxima[int(pending[1])] = (float(pending[2]), float(pending[3]))
            printed.append(pending[3])
            pending = next(rows, None)
        bounds = chunk_bounds(length, chunk_size)
        yield RecordChunks(seq_id, length, bounds, scored_chunks(maxima, bounds), printed)
    if pending is not None:
        raise RuntimeError(f"chunk table row for {pending[0]!r} matches no record in order")


def write_answers(paths: OutputPaths, chunk_size: int, settings: CallSettings) -> None:
    """sequence_calls.tsv, viral_regions.tsv/.bed and chunk_scores.bedgraph, in one pass.

    Each is written beside its target and renamed only when all four are complete.
    """
    headers = {paths.calls: CALLS_HEADER, paths.regions: REGIONS_HEADER,
               paths.regions_bed: REGIONS_BED_HEADER, paths.bedgraph: BEDGRAPH_HEADER}
    with ExitStack() as stack:
        handles = {target: stack.enter_context(atomic_open(target)) for target in headers}
        for target, header in headers.items():
            handles[target].write(header)
        calls, regions = handles[paths.calls], handles[paths.regions]
        bed, track = handles[paths.regions_bed], handles[paths.bedgraph]
        for r in record_chunks(paths, chunk_size):
            calls.write(format_call_row(r.seq_id, r.length, call_sequence(r.chunks, settings)))
            if r.chunks:
                tsv_rows, bed_rows = format_region_rows(r.seq_id, find_regions(r.chunks, settings))
                regions.write(tsv_rows)
                bed.write(bed_rows)
                track.write(format_bedgraph_rows(r.seq_id, r.scores_printed,
                                                 track_intervals(r.chunks, r.bounds)))
