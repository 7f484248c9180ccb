"""The windowed pipeline `predict` and `embed` share: read -> chunk -> frames -> embed, resumable.

Work is cut into windows of about `window` kept frames at chunk boundaries. Windows are submitted
to the embedding backend (Triton or in-process) ahead of time, up to `lookahead` beyond the
oldest unfinished one, and finished strictly in input order by the caller's `finish_window`,
which turns a window's vectors into checkpoint parts and commits them. A rerun skips finished
windows: their frames are regenerated (cheap) but not embedded again. Peak memory depends on the
window, not on the input size.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.checkpoint import Checkpoint
from orchestrator.chunking import chunk_sequence
from orchestrator.endpoints import ConnectionOptions
from orchestrator.errors import InputError
from orchestrator.frames import kept_frames_batch
from orchestrator.inputs import LengthStats, read_records, spool_stdin
from orchestrator.outputs import SequenceTally

log = logging.getLogger("orchestrator")

STDIN_SPOOL_NAME = "stdin.spool"
# Windows queued beyond the one being waited for: enough that the servers never wait for the
# client between windows, few enough that memory stays a small number of windows.
DEFAULT_LOOKAHEAD = 2


@dataclass
class RecordPart:
    """The stretch of one record that falls into a window: frames [start, end) of that window.

    `tally` is a fresh tally when the record starts in this window, None when it continues the
    record carried over from the previous window; `ends` marks the window where it finishes.
    """

    tally: SequenceTally | None
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


Embedded = tuple[np.ndarray, np.ndarray]  # a window's DNA and protein vectors, row per frame
# (record, its chunks, kept frames per chunk) -> the kept frames per chunk to embed
FrameFilter = Callable[[Any, list, list], list]


# Records are translated in groups of about this many bases: one vectorised kept_frames_batch
# call per group instead of one per record (short records are dominated by per-call overhead).
TRANSLATE_GROUP_BASES = 1 << 20


def translated(records: Iterator[Any], chunk_size: int) -> Iterator[tuple[Any, list, list]]:
    """(record, its chunks, kept frames per chunk), translation batched over record groups."""
    group: list[tuple[Any, list]] = []
    size = 0

    def flush() -> Iterator[tuple[Any, list, list]]:
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


def iter_windows(records: Iterator[Any], chunk_size: int, window_frames: int,
                 counters: Counters, on_bases: Any = None,
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
        part = RecordPart(SequenceTally.for_record(record.id, record.seq, len(chunks)),
                          len(current.frame_ids))
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


def open_backend(backend: str, *, servers: list[str], model_repository: str | None,
                  batch_size: int | None, max_in_flight: int | None,
                  connection: ConnectionOptions | None, priority: str | None = None) -> Any:
    if backend == "triton":
        from orchestrator.client import EmbeddingClient

        return EmbeddingClient(servers, batch_size=batch_size, max_in_flight=max_in_flight,
                               options=connection, priority=priority)
    if backend == "local":
        from orchestrator.local_backend import LocalBackend

        return LocalBackend(model_repository)
    raise InputError(f"unknown backend {backend!r} (triton or local)")


def check_args(chunk_size: int, window: int, batch_size: int | None,
                max_in_flight: int | None, lookahead: int, inputs: Sequence[str]) -> None:
    if not inputs:
        raise InputError("no input given")
    if chunk_size <= 0:
        raise InputError(f"--chunk-size must be positive, got {chunk_size}")
    if window <= 0:
        raise InputError(f"--window must be positive, got {window}")
    if lookahead < 0:
        raise InputError(f"--lookahead must be 0 or more, got {lookahead}")
    if batch_size is not None and batch_size <= 0:
        raise InputError(f"--batch-size must be positive, got {batch_size}")
    if max_in_flight is not None and max_in_flight <= 0:
        raise InputError(f"--max-in-flight must be positive, got {max_in_flight}")
    if list(inputs).count("-") > 1:
        raise InputError("stdin (-) can be given only once")


def spooled_inputs(inputs: list[str], paths: Any) -> list[str]:
    """Paths that can be read twice (scan, then predict): stdin and pipes are spooled first."""
    read_paths = []
    for i, p in enumerate(inputs):
        if p == "-":
            paths.state.mkdir(parents=True, exist_ok=True)
            read_paths.append(spool_stdin(str(paths.state / STDIN_SPOOL_NAME)))
        elif not os.path.exists(p):
            raise InputError(f"{p}: no such file")
        elif not os.path.isfile(p):  # a FIFO such as <(zcat x.gz): readable once only
            paths.state.mkdir(parents=True, exist_ok=True)
            dest = paths.state / f"input{i}.spool"
            try:
                with open(p, "rb") as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
            except OSError as exc:
                raise InputError(f"{p}: cannot read ({exc.strerror})") from exc
            read_paths.append(str(dest))
        else:
            read_paths.append(p)
    return read_paths


def progress_bar(enabled: bool, total: int, desc: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="bp", unit_scale=True, desc=desc, file=sys.stderr)


# Most records at most half a chunk long: the published classifiers were trained on 300/500 bp
# chunks and are unreliable far below that.
SHORT_RECORDS_WARN_FRACTION = 0.5


def warn_short_records(lengths: LengthStats, chunk_size: int) -> None:
    if lengths.n_short and lengths.fraction_short > SHORT_RECORDS_WARN_FRACTION:
        log.warning(
            "warning: %.0f%% of records (%d of %d with sequence) are %d bp or shorter, at most "
            "half of --chunk-size %d; the published classifiers are unreliable on sequences this "
            "short (a published evaluation measured ROC-AUC 0.56 on 150 bp windows with the "
            "300 model); assemble reads into contigs first if you can",
            100 * lengths.fraction_short, lengths.n_short, lengths.n - lengths.bins[0],
            lengths.short_length, chunk_size)


def run_windows(*, read_paths: list[str], paths: Any, ckpt: Checkpoint, backend: Any,
                 chunk_size: int, window: int, lookahead: int, done: int, progress: bool,
                 total_bases: int, finish_window: Callable[[Window, Embedded], None],
                 timings: dict[str, float], frame_filter: FrameFilter | None = None,
                 desc: str = "predict") -> tuple[Counters, int, int]:
    """The main loop: skip finished windows (frames regenerated, not embedded), embed the rest.

    `finish_window(window, (dna, protein))` turns a window's embeddings into its checkpoint parts
    and commits it; windows are finished in input order.
    """
    counters = Counters()
    bar = progress_bar(progress, total_bases, desc)
    frames_embedded = 0
    windows_run = 0

    def finish(w: Window, embeddings: Embedded) -> None:
        nonlocal frames_embedded, windows_run
        finish_window(w, embeddings)
        frames_embedded += len(w.frame_ids)
        windows_run += 1
        log.debug("window %d: %d frames", w.index, len(w.frame_ids))

    def wait_for(ticket: Any) -> Embedded:
        t0 = time.perf_counter()
        embeddings = ticket.result()
        timings["embed"] += time.perf_counter() - t0
        return embeddings

    # Windows whose requests are queued or in flight, oldest first. Up to 1 + lookahead at once:
    # the servers work on the next windows while the oldest one's last requests are in flight
    # and while this thread reads, translates, classifies and writes. Commits stay in order.
    in_flight: deque[tuple[Window, Any]] = deque()
    try:
        windows = iter_windows(read_records(read_paths), chunk_size, window, counters,
                               bar.update if bar is not None else None, frame_filter)
        while True:
            t0 = time.perf_counter()
            w = next(windows, None)
            timings["preprocess"] += time.perf_counter() - t0
            if w is None:
                break
            counters.windows += 1
            counters.frames += len(w.frame_ids)
            w.progress = {"frames": counters.frames, "records": counters.records}
            if w.index < done:
                continue
            ready = []
            while len(in_flight) > lookahead:
                oldest, ticket = in_flight.popleft()
                ready.append((oldest, wait_for(ticket)))
            in_flight.append((w, backend.submit(w.nucleotides, w.proteins)))
            for oldest, embeddings in ready:  # written while the servers embed what is queued
                finish(oldest, embeddings)
            while len(in_flight) > 1 and in_flight[0][1].done():
                oldest, ticket = in_flight.popleft()
                finish(oldest, wait_for(ticket))
        while in_flight:
            oldest, ticket = in_flight.popleft()
            finish(oldest, wait_for(ticket))
    finally:
        if bar is not None:
            bar.close()
    if ckpt.windows_done != counters.windows:
        raise InputError(f"{paths.outdir}: the checkpoint counts {ckpt.windows_done} windows but "
                         f"the input has {counters.windows}; rerun with --restart")
    return counters, frames_embedded, windows_run


