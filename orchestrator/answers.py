"""Per-sequence answers of a finished run: calls, viral regions and the chunk-score track.

They are derived after the original's files are assembled, from two streams in input order: the
records (`sequence_summary.tsv`: ID and length) and the chunk maxima table the run keeps in its
state folder (`ID, chunk number, max_score_0, max_score_1` as printed). A streaming join holds one
record at a time, so memory does not grow with the input; and since no model is involved, new
thresholds on a finished run (`predict` rerun with other call options) re-derive these files
in seconds instead of re-embedding.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from orchestrator.calls import (
    CallSettings,
    ChunkScore,
    call_sequence,
    find_regions,
    scored_chunks,
    track_intervals,
)
from orchestrator.outputs import (
    BEDGRAPH_HEADER,
    CALLS_HEADER,
    REGIONS_BED_HEADER,
    REGIONS_HEADER,
    OutputPaths,
    format_bedgraph_rows,
    format_call_row,
    format_region_rows,
)


def _records(summary: Path) -> Iterator[tuple[str, int]]:
    with open(summary, encoding="utf-8", newline="") as fh:
        next(fh, None)
        for line in fh:
            seq_id, length, _ = line.split("\t", 2)
            yield seq_id, int(length)


def _chunk_rows(table: Path) -> Iterator[tuple[str, int, float, float]]:
    with open(table, encoding="utf-8", newline="") as fh:
        for line in fh:
            seq_id, k, m0, m1 = line.rstrip("\n").split("\t")
            yield seq_id, int(k), float(m0), float(m1)


def record_chunks(paths: OutputPaths, chunk_size: int
                  ) -> Iterator[tuple[str, int, list[ChunkScore]]]:
    """(ID, length, scored chunks in order) per record, joining the two ordered streams."""
    rows = _chunk_rows(paths.chunk_table)
    pending = next(rows, None)
    for seq_id, length in _records(paths.summary):
        maxima: dict[int, tuple[float, float]] = {}
        while pending is not None and pending[0] == seq_id:
            maxima[pending[1]] = (pending[2], pending[3])
            pending = next(rows, None)
        yield seq_id, length, scored_chunks(maxima, length, chunk_size)
    if pending is not None:
        raise RuntimeError(f"chunk table row for {pending[0]!r} matches no record in order")


def write_answers(paths: OutputPaths, chunk_size: int, settings: CallSettings) -> None:
    """sequence_calls.tsv, viral_regions.tsv/.bed and chunk_scores.bedgraph, in one pass.

    Each is written to a temp file beside it and renamed only when all four are complete.
    """
    headers = {paths.calls: CALLS_HEADER, paths.regions: REGIONS_HEADER,
               paths.regions_bed: REGIONS_BED_HEADER, paths.bedgraph: BEDGRAPH_HEADER}
    temps: dict[Path, str] = {}
    handles = {}
    try:
        for target, header in headers.items():
            fd, temps[target] = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                                 suffix=".tmp")
            handles[target] = os.fdopen(fd, "w", encoding="utf-8", newline="")
            handles[target].write(header)
        calls, regions = handles[paths.calls], handles[paths.regions]
        bed, track = handles[paths.regions_bed], handles[paths.bedgraph]
        for seq_id, length, chunks in record_chunks(paths, chunk_size):
            calls.write(format_call_row(seq_id, length, call_sequence(chunks, settings)))
            if chunks:
                tsv_rows, bed_rows = format_region_rows(seq_id, find_regions(chunks, settings))
                regions.write(tsv_rows)
                bed.write(bed_rows)
                track.write(format_bedgraph_rows(seq_id, chunks,
                                                 track_intervals(chunks, length, chunk_size)))
        for fh in handles.values():
            fh.flush()
            os.fchmod(fh.fileno(), 0o644)
            os.fsync(fh.fileno())
            fh.close()
        for target, temp in temps.items():
            os.replace(temp, target)
    finally:
        for fh in handles.values():
            fh.close()
        for temp in temps.values():
            Path(temp).unlink(missing_ok=True)
