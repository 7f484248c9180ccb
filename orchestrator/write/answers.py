"""Per-sequence answers of a finished run: calls, viral regions and the chunk-score track.

They are derived after the original's files are assembled, from two streams in input order: the
records (`sequence_summary.tsv`: ID and length) and the chunk maxima table the run keeps in its
state folder (`ID, chunk number, max_score_0, max_score_1` as printed). A streaming join holds one
record at a time, so memory does not grow with the input; and since no model is involved, new
thresholds on a finished run (`predict` rerun with other call options) re-derive these files
in seconds instead of re-embedding (`predict` rerun with other call options, or `orchestrator
call` with no server at all). The same pass writes the calls in Broad's contig-table layout and
the MultiQC custom-content files, whose counts need the whole run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
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
from orchestrator.write.external import ExternalSort
from orchestrator.write.formats import (
    BEDGRAPH_HEADER,
    BROAD_CALLS_HEADER,
    CALLS_HEADER,
    MULTIQC_COLUMNS,
    REGIONS_BED_HEADER,
    REGIONS_HEADER,
    format_bedgraph_rows,
    format_broad_call_row,
    format_call_row,
    format_multiqc_calls,
    format_multiqc_summary,
    format_region_rows,
    natural_sort_key,
)
from orchestrator.write.paths import OutputPaths


@dataclass(frozen=True)
class RecordChunks:
    """A record's ID, length, chunk bounds, scored chunks and their virus scores as printed;
    its chunk and kept-frame counts from the summary."""

    seq_id: str
    length: int
    bounds: list[tuple[int, int]]
    chunks: list[ChunkScore]
    scores_printed: list[str]
    n_chunks: int = 0
    n_frames: int = 0


@dataclass
class RunTally:
    """The whole run's counts for the MultiQC files: records, chunks, frames, calls per class and
    tier, viral regions and their length."""

    counts: Counter[str] = field(default_factory=Counter)

    def values(self) -> dict[str, int]:
        return {name: self.counts[name] for name in MULTIQC_COLUMNS}


def _records(summary: Path) -> Iterator[tuple[str, int, int, int]]:
    """(ID, length, chunks, kept frames) per summary row."""
    with open(summary, encoding="utf-8", newline="") as fh:
        next(fh, None)
        for line in fh:
            seq_id, length, n_chunks, _scored, n_frames, _ = line.split("\t", 5)
            yield seq_id, int(length), int(n_chunks), int(n_frames)


def _chunk_rows(table: Path) -> Iterator[list[str]]:
    with open(table, encoding="utf-8", newline="") as fh:
        for line in fh:
            yield line.rstrip("\n").split("\t")  # ID, chunk number, max_score_0, max_score_1


def record_chunks(paths: OutputPaths, chunk_size: int) -> Iterator[RecordChunks]:
    """Each record with its scored chunks in order, joining the two ordered streams."""
    rows = _chunk_rows(paths.chunk_table)
    pending = next(rows, None)
    for seq_id, length, n_chunks, n_frames in _records(paths.summary):
        maxima: dict[int, tuple[float, float]] = {}
        printed: list[str] = []
        while pending is not None and pending[0] == seq_id:
            maxima[int(pending[1])] = (float(pending[2]), float(pending[3]))
            printed.append(pending[3])
            pending = next(rows, None)
        bounds = chunk_bounds(length, chunk_size)
        yield RecordChunks(seq_id, length, bounds, scored_chunks(maxima, bounds), printed,
                           n_chunks, n_frames)
    if pending is not None:
        raise RuntimeError(f"chunk table row for {pending[0]!r} matches no record in order")


def _split_broad(line: str) -> tuple[str, str]:
    """(ID, row) of a Broad row as sorted: `LENGTH ID` before the row (IDs hold no line break)."""
    length, rest = line.split(" ", 1)
    return rest[:int(length)], rest[int(length):]


def _broad_key(line: str) -> list[int | str]:
    return natural_sort_key(_split_broad(line)[0])


def _broad_row(line: str) -> str:
    return _split_broad(line)[1]


def write_answers(paths: OutputPaths, chunk_size: int, settings: CallSettings, sample: str
                  ) -> RunTally:
    """sequence_calls.tsv, viral_regions.tsv/.bed, chunk_scores.bedgraph, Broad's contig table
    and the MultiQC files, in one pass.

    Each is written beside its target and renamed only when all are complete, so a failure
    half-way leaves the previous files as they were. Broad's table is sorted at the end (natural
    order needs them all), in bounded memory: runs beyond `external.SORT_RUN_LINES` rows are
    spilled into the state folder.
    """
    headers = {paths.calls: CALLS_HEADER, paths.regions: REGIONS_HEADER,
               paths.regions_bed: REGIONS_BED_HEADER, paths.bedgraph: BEDGRAPH_HEADER}
    tally = RunTally()
    counts = tally.counts
    with ExitStack() as stack:
        broad = ExternalSort(_broad_key, paths.state)
        stack.callback(broad.close)
        handles = {target: stack.enter_context(atomic_open(target))
                   for target in (*headers, paths.broad_calls, paths.multiqc, paths.multiqc_calls)}
        for target, header in headers.items():
            handles[target].write(header)
        calls, regions = handles[paths.calls], handles[paths.regions]
        bed, track = handles[paths.regions_bed], handles[paths.bedgraph]
        for r in record_chunks(paths, chunk_size):
            call = call_sequence(r.chunks, settings)
            calls.write(format_call_row(r.seq_id, r.length, call))
            counts.update(records=1, chunks=r.n_chunks, frames_kept=r.n_frames)
            counts[call.call] += 1
            if call.confidence is not None:
                counts[call.confidence] += 1
            broad_row = format_broad_call_row(r.seq_id, call)
            if broad_row is not None:
                broad.add(f"{len(r.seq_id)} {r.seq_id}{broad_row}")
            if r.chunks:
                found = find_regions(r.chunks, settings)
                counts.update(viral_regions=len(found),
                              viral_region_bp=sum(g.end - g.start for g in found))
                tsv_rows, bed_rows = format_region_rows(r.seq_id, found)
                regions.write(tsv_rows)
                bed.write(bed_rows)
                track.write(format_bedgraph_rows(r.seq_id, r.scores_printed,
                                                 track_intervals(r.chunks, r.bounds)))
        out = handles[paths.broad_calls]
        out.write(BROAD_CALLS_HEADER)
        out.writelines(_broad_row(line) for line in broad.sorted_lines())  # stable: ties in input order
        values = tally.values()
        handles[paths.multiqc].write(format_multiqc_summary(sample, values))
        handles[paths.multiqc_calls].write(format_multiqc_calls(sample, values))
    return tally
