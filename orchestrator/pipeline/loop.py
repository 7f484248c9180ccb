"""The run loop `predict` and `embed` share: windows of frames to the backend, finished in order.

Windows are submitted to the embedding backend (Triton or in-process) ahead of time, up to
`lookahead` beyond the oldest unfinished one, and finished strictly in input order by the
caller's `finish_window`, which turns a window's vectors into checkpoint parts and commits them.
A rerun skips finished windows: their frames are regenerated (cheap) but not embedded again.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from orchestrator.chunk.windows import Counters, FrameFilter, Window, iter_windows
from orchestrator.embed.contract import EmbeddingBackend
from orchestrator.errors import InputError
from orchestrator.read.formats import read_records
from orchestrator.read.shard import Shard
from orchestrator.write.checkpoint import Checkpoint

log = logging.getLogger("orchestrator")


class Ticket(Protocol):
    """A submitted window: `result()` waits for what its finish needs, `done()` tells without waiting."""

    def result(self) -> Any: ...

    def done(self) -> bool: ...


def progress_bar(enabled: bool, total: int, desc: str) -> Any:
    """A tqdm bar over input bases on stderr, or None."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="bp", unit_scale=True, desc=desc, file=sys.stderr)


def run_windows(*, read_paths: list[str], ckpt: Checkpoint, backend: EmbeddingBackend | None,
                 chunk_size: int, window: int, lookahead: int, done: int, progress: bool,
                 total_bases: int, finish_window: Callable[[Window, Any], None],
                 timings: dict[str, float], frame_filter: FrameFilter | None = None,
                 desc: str = "predict",
                 submit_window: Callable[[Window], Ticket] | None = None,
                 shard: Shard | None = None) -> tuple[Counters, int, int]:
    """The main loop: skip finished windows (frames regenerated, not embedded), embed the rest.

    `finish_window(window, (dna, protein))` turns a window's embeddings into its checkpoint parts
    and commits it; windows are finished in input order. `submit_window(window)` replaces
    `backend.submit` where the vectors come from elsewhere (a saved run's embeddings file, which
    needs the window's frame IDs and position) or where a ticket's result is not the vectors
    (predict's answer cache); `finish_window` gets whatever its ticket's `result()` gives.
    `shard`: only that part of the records (split by `total_bases`, the whole sample's).
    """
    if submit_window is None:
        if backend is None:
            raise ValueError("run_windows needs a backend or submit_window")
        embedder = backend

        def submit_window(w: Window) -> Ticket:
            return embedder.submit(w.nucleotides, w.proteins)

    counters = Counters()
    bar = progress_bar(progress, total_bases // shard.count if shard else total_bases, desc)
    frames_embedded = 0
    windows_run = 0

    def finish(w: Window, embeddings: Any) -> None:
        nonlocal frames_embedded, windows_run
        finish_window(w, embeddings)
        frames_embedded += len(w.frame_ids)
        windows_run += 1
        log.debug("window %d: %d frames", w.index, len(w.frame_ids))

    def wait_for(ticket: Ticket) -> Any:
        t0 = time.perf_counter()
        embeddings = ticket.result()
        timings["embed"] += time.perf_counter() - t0
        return embeddings

    # Windows whose requests are queued or in flight, oldest first. Up to 1 + lookahead at once:
    # the servers work on the next windows while the oldest one's last requests are in flight
    # and while this thread reads, translates, classifies and writes. Commits stay in order.
    in_flight: deque[tuple[Window, Ticket]] = deque()
    try:
        records = read_records(read_paths)
        if shard is not None:
            records = shard.select(records, total_bases)
        windows = iter_windows(records, chunk_size, window, counters,
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
            in_flight.append((w, submit_window(w)))
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
        raise InputError(f"{ckpt.paths.outdir}: the checkpoint counts {ckpt.windows_done} windows but "
                         f"the input has {counters.windows}; rerun with --restart")
    return counters, frames_embedded, windows_run


