"""`orchestrator embed`: sequences in, every kept frame's DNABERT-S and ESM-2 vectors out (HDF5).

The same read -> chunk -> frames -> embed path as `predict` (same servers, windows, resume and
bad-input handling), ending in an embeddings file instead of a classifier. The vectors are the
expensive part of a run; kept, they let a user train (`orchestrator train`), evaluate and
re-classify without a GPU. Checkpoints live in a hidden folder beside the output,
`.OUT.h5.virnucpro_state/`; rerunning the same command resumes, a finished one is left alone.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.checkpoint import Checkpoint
from orchestrator.client import resolve_priority
from orchestrator.embeddings import PART_SUFFIX, assemble, header_for, write_part
from orchestrator.endpoints import ConnectionOptions, parse_servers
from orchestrator.errors import InputError
from orchestrator.inputs import scan_inputs
from orchestrator.outdir_lock import OutdirLock
from orchestrator.windows import (
    DEFAULT_LOOKAHEAD,
    Embedded,
    FrameFilter,
    Window,
    check_args,
    open_backend,
    run_windows,
    spooled_inputs,
    warn_short_records,
)

log = logging.getLogger("orchestrator")

STATE_SUFFIX = ".virnucpro_state"
CDS_FILTER = "stop-free, in an annotated CDS"


class EmbedPaths:
    """An embed run's output file, its run record and its checkpoint folder.

    Duck-types the parts of `outputs.OutputPaths` that `Checkpoint` uses; `outdir` is the output
    file itself, which is what messages should name.
    """

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output)
        self.outdir = self.output
        self.run_json = self.output.with_name(self.output.name + ".run.json")
        self.state = self.output.parent / f".{self.output.name}{STATE_SUFFIX}"

    def results(self) -> tuple[Path, ...]:
        return (self.output, self.run_json)

    def extra_outputs(self) -> tuple[Path, ...]:
        return ()


def run_embed(
    *,
    inputs: Sequence[str],
    output: str,
    chunk_size: int,
    label: str | None = None,
    cds_frames_only: bool = False,
    backend: str = "triton",
    server: str | Sequence[str] = "localhost:8001",
    model_repository: str | None = None,
    batch_size: int | None = None,
    max_in_flight: int | None = None,
    window: int = 4096,
    lookahead: int = DEFAULT_LOOKAHEAD,
    restart: bool = False,
    progress: bool = False,
    connection: ConnectionOptions | None = None,
    priority: str | None = None,
) -> dict[str, Any]:
    """Embed every kept frame of `inputs` into `output` (HDF5); returns the run record.

    `cds_frames_only`: keep only frames whose protein lies in an annotated CDS (GenBank inputs),
    the original's choice of training frames. `priority`: high, normal or low (default
    $VIRNUCPRO_PRIORITY, else normal), Triton's request priority.
    """
    check_args(chunk_size, window, batch_size, max_in_flight, lookahead, inputs)
    priority = resolve_priority(priority)
    if label is not None and not label.strip():
        raise InputError("--label must not be empty")
    servers = parse_servers([server] if isinstance(server, str) else server)
    paths = EmbedPaths(output)
    if paths.output.is_dir():
        raise InputError(f"{paths.output} is a folder; -o names the embeddings file (e.g. viral.h5)")
    if not paths.output.parent.is_dir():
        raise InputError(f"{paths.output.parent}: no such folder")
    paths.state.mkdir(exist_ok=True)
    with OutdirLock(paths.state):
        return _embed(inputs=list(inputs), paths=paths, chunk_size=chunk_size, label=label,
                      cds_frames_only=cds_frames_only, backend=backend, servers=servers,
                      model_repository=model_repository, batch_size=batch_size,
                      max_in_flight=max_in_flight, window=window, lookahead=lookahead,
                      restart=restart, progress=progress, connection=connection,
                      priority=priority)


def _embed(*, inputs: list[str], paths: EmbedPaths, chunk_size: int, label: str | None,
           cds_frames_only: bool, backend: str, servers: list[str], model_repository: str | None,
           batch_size: int | None, max_in_flight: int | None, window: int, lookahead: int,
           restart: bool, progress: bool, connection: ConnectionOptions | None,
           priority: str) -> dict[str, Any]:
    wall0 = time.perf_counter()
    ckpt = Checkpoint(paths)
    ckpt.refuse_foreign(restart)
    read_paths = spooled_inputs(inputs, paths)
    scan = scan_inputs(read_paths, short_length=chunk_size // 2)
    warn_short_records(scan.lengths, chunk_size)
    frame_filter = _cds_filter(read_paths, scan, chunk_size) if cds_frames_only else None
    digests = [scan.sha256[p] for p in read_paths]
    if scan.n_records == 0:
        raise InputError(f"no records in {', '.join(inputs)}; nothing to embed")

    be = open_backend(backend, servers=servers, model_repository=model_repository,
                       batch_size=batch_size, max_in_flight=max_in_flight, connection=connection,
                       priority=priority)
    try:
        models = be.models_info()
        header = header_for(chunk_size, models, inputs, digests, label=label,
                                   frame_filter=CDS_FILTER if cds_frames_only else "stop-free")
        fingerprint = {
            "command": "embed", "tool_version": header.tool_version, "inputs_sha256": digests,
            "chunk_size": chunk_size, "window": window, "backend": backend,
            "label": label, "frame_filter": header.frame_filter, "models": header.models,
        }
        done = ckpt.open(fingerprint, restart)
        if done < 0:
            log.info("%s is already complete; nothing to do (pass --restart to redo it)",
                     paths.output)
            return json.loads(paths.run_json.read_text())
        if done:
            log.info("resuming from window %d (%d finished windows reused from %s)",
                     done + 1, done, paths.state)
        timings = dict.fromkeys(("preprocess", "embed", "write"), 0.0)

        def finish(w: Window, embeddings: Embedded) -> None:
            t0 = time.perf_counter()
            write_part(ckpt.part(w.index, PART_SUFFIX), w.frame_ids, *embeddings)
            ckpt.commit_window(w.index, parts={}, carried_tally=None, counters=w.progress)
            timings["write"] += time.perf_counter() - t0

        counters, frames_embedded, windows_run = run_windows(
            read_paths=read_paths, paths=paths, ckpt=ckpt, backend=be, chunk_size=chunk_size,
            window=window, lookahead=lookahead, done=done, progress=progress,
            total_bases=scan.n_bases, finish_window=finish, timings=timings,
            frame_filter=frame_filter, desc="embed")
        endpoints = getattr(be, "endpoints_info", lambda: None)()
    finally:
        be.close()
    t0 = time.perf_counter()
    n = assemble(paths.output, header, ckpt.parts(PART_SUFFIX))
    timings["assemble"] = time.perf_counter() - t0
    wall = time.perf_counter() - wall0
    timings["total"] = wall
    record = {
        "tool": "virnucpro-triton orchestrator embed", "version": header.tool_version,
        "output": str(paths.output.resolve()), "inputs": inputs, "inputs_sha256": digests,
        "chunk_size": chunk_size, "label": label, "frame_filter": header.frame_filter,
        "backend": backend, "servers": servers if backend == "triton" else None,
        "priority": priority, "endpoints": endpoints, "models": header.models,
        "counts": {"records": counters.records, "bases": counters.bases, "chunks": counters.chunks,
                   "frames": n, "windows": counters.windows},
        "input_lengths": scan.lengths.to_dict(),
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "resumed": {"resumed": done > 0, "windows_reused": done, "windows_run": windows_run},
        "throughput": {"frames_embedded": frames_embedded,
                       "frames_per_s": round(frames_embedded / wall, 2) if wall > 0 else None},
    }
    ckpt.assemble([], record)
    for part in ckpt.parts(PART_SUFFIX):
        part.unlink(missing_ok=True)
    log.info("wrote %s: %d frames of %d records (%d chunks) in %.1f s", paths.output, n,
             counters.records, counters.chunks, wall)
    if n == 0:
        log.warning("warning: no frame was kept, so %s has no rows", paths.output)
    return record


def _cds_filter(read_paths: list[str], scan: Any, chunk_size: int) -> FrameFilter:
    """Keep frames whose protein lies in an annotated CDS; GenBank inputs only."""
    from orchestrator.coding import kept_coding_frames

    not_genbank = [p for p in read_paths if scan.formats[p].kind != "genbank"]
    if not_genbank:
        raise InputError(f"--cds-frames-only needs GenBank inputs (CDS annotations); "
                         f"{not_genbank[0]} is {scan.formats[not_genbank[0]].describe()}")
    return lambda record, _chunks, frames: kept_coding_frames(record, chunk_size, frames)
