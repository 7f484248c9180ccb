"""Records -> chunks -> kept frames, cut into windows: the unit of embedding and of resume.

Work is cut into windows of about `window` kept frames at chunk boundaries (a chunk's frames never
span two windows; a record may). Each window knows which records start, continue or end in it,
so the writer can carry a record's tally across windows. Peak memory depends on the window, not
on the input size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from orchestrator.chunk.chunking import Chunk, chunk_sequence
from orchestrator.chunk.frames import Frame, kept_frames_batch
from orchestrator.read.record import Record, count_ambiguous


@dataclass(frozen=True)
class RecordFacts:
    """What the per-record summary needs to know of a record besides its scores."""

    seq_id: str
    length: int
    n_chunks: int
    n_ambiguous_bases: int


@dataclass
class RecordPart:
    """The stretch of one record that falls into a window: frames [start, end) of that window.

    `record` is set when the record starts in this window, None when it continues the record
    carried over from the previous window; `ends` marks the window where it finishes.
    """

    record: RecordFacts | None
    start: int
    end: int = -1
    ends: bool = False


@dataclass
class Window:
    """Kept frames of a run of chunks; `chunk_ids[k]` owns frames from `chunk_starts[k]` on."""

    index: int
    frame_ids: list[str] = field(default_factory=list)
    nucleotides: list[str] = field(default_factory=list)
    proteins: list[str] = field(default_factory=list)
    parts: list[RecordPart] = field(default_factory=list)
    chunk_ids: list[str] = field(default_factory=list)
    chunk_starts: list[int] = field(default_factory=list)
    progress: dict[str, int] = field(default_factory=dict)  # run totals up to this window


@dataclass
class Counters:
    records: int = 0
    bases: int = 0
    chunks: int = 0
    frames: int = 0
    windows: int = 0


# (record, its chunks, kept frames per chunk) -> the kept frames per chunk to embed
FrameFilter = Callable[[Record, list[Chunk], list[list[Frame]]], list[list[Frame]]]


# Records are translated in groups of about this many bases: one vectorised kept_frames_batch
# call per group instead of one per record (short records are dominated by per-call overhead).
TRANSLATE_GROUP_BASES = 1 << 20


def translated(records: Iterator[Record], chunk_size: int
               ) -> Iterator[tuple[Record, list[Chunk], list[list[Frame]]]]:
    """(record, its chunks, kept frames per chunk), translation batched over record groups."""
    group: list[tuple[Record, list[Chunk]]] = []
    size = 0

    def flush() -> Iterator[tuple[Record, list[Chunk], list[list[Frame]]]]:
        frames = kept_frames_batch([c for _, chunks in group for c in chunks])
        i = 0
        for rec, chunks in group:
            yield rec, chunks, frames[i:i + len(chunks)]
            i += len(chunks)

    for record in records:
        group.append((record, chunk_sequence(record, chunk_size)))
        size += len(record.seq)
        if size >= TRANSLATE_GROUP_BASES:
            yield from flush()
            group = []
            size = 0
    if group:
        yield from flush()


def iter_windows(records: Iterator[Record], chunk_size: int, window_frames: int,
                 counters: Counters, on_bases: Callable[[int], object] | None = None,
                 frame_filter: FrameFilter | None = None) -> Iterator[Window]:
    """Group kept frames into windows of >= `window_frames` frames, cut before a chunk.

    `frame_filter(record, chunks, frames per chunk)` narrows the kept frames further (embed's
    --cds-frames-only); predict keeps every stop-free frame, as the original does.
    """
    current = Window(0)
    for record, chunks, chunk_frames in translated(records, chunk_size):
        if frame_filter is not None:
            chunk_frames = frame_filter(record, chunks, chunk_frames)
        if len(current.frame_ids) >= window_frames:
            yield current
            current = Window(current.index + 1)
        counters.records += 1
        counters.bases += len(record.seq)
        counters.chunks += len(chunks)
        facts = RecordFacts(record.id, len(record.seq), len(chunks), count_ambiguous(record.seq))
        part = RecordPart(facts, len(current.frame_ids))
        current.parts.append(part)
        for chunk, frames in zip(chunks, chunk_frames, strict=True):
            if len(current.frame_ids) >= window_frames:
                part.end = len(current.frame_ids)
                yield current
                current = Window(current.index + 1)
                part = RecordPart(None, 0)
                current.parts.append(part)
            if frames:
                current.chunk_ids.append(chunk.id)
                current.chunk_starts.append(len(current.frame_ids))
            for frame in frames:
                current.frame_ids.append(frame.frame_id)
                current.nucleotides.append(frame.nucleotide)
                current.proteins.append(frame.protein)
        part.end = len(current.frame_ids)
        part.ends = True
        if on_bases is not None:
            on_bases(len(record.seq))
    if current.parts:
        yield current
