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
from pathlib import Path
from typing import Any

from orchestrator.chunk.coding import kept_coding_frames
from orchestrator.chunk.windows import FrameFilter, Window
from orchestrator.embed.contract import Embedded
from orchestrator.errors import InputError
from orchestrator.pipeline.loop import run_windows
from orchestrator.pipeline.options import PipelineOptions
from orchestrator.pipeline.setup import (
    ScannedInputs,
    announce,
    open_run_backend,
    scan_run_inputs,
    server_list,
)
from orchestrator.write.checkpoint import Checkpoint
from orchestrator.write.embeddings import PART_SUFFIX, assemble, header_for, write_part
from orchestrator.write.lock import OutdirLock

log = logging.getLogger("orchestrator")

STATE_SUFFIX = ".virnucpro_state"
CDS_FILTER = "stop-free, in an annotated CDS"


class EmbedPaths:
    """An embed run's output file, its run record and its checkpoint folder.

    Duck-types the parts of `write.paths.OutputPaths` that `Checkpoint` uses; `outdir` is the output
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


def run_embed(options: PipelineOptions, *, output: str, label: str | None = None,
              cds_frames_only: bool = False) -> dict[str, Any]:
    """Embed every kept frame of the inputs into `output` (HDF5); returns the run record.

    `cds_frames_only`: keep only frames whose protein lies in an annotated CDS (GenBank inputs),
    the original's choice of training frames.
    """
    options.check()
    if label is not None and not label.strip():
        raise InputError("--label must not be empty")
    servers = server_list(options)
    paths = EmbedPaths(output)
    if paths.output.is_dir():
        raise InputError(f"{paths.output} is a folder; -o names the embeddings file (e.g. viral.h5)")
    if not paths.output.parent.is_dir():
        raise InputError(f"{paths.output.parent}: no such folder")
    paths.state.mkdir(exist_ok=True)
    with OutdirLock(paths.state):
        return _embed(options, paths=paths, servers=servers, label=label,
                      cds_frames_only=cds_frames_only)


def _embed(options: PipelineOptions, *, paths: EmbedPaths, servers: list[str], label: str | None,
           cds_frames_only: bool) -> dict[str, Any]:
    wall0 = time.perf_counter()
    chunk_size = options.chunk_size
    ckpt = Checkpoint(paths)
    inputs = scan_run_inputs(options, ckpt, paths.state)
    scan = inputs.scan
    frame_filter = _cds_filter(inputs) if cds_frames_only else None
    if scan.n_records == 0:
        raise InputError(f"no records in {', '.join(options.inputs)}; nothing to embed")

    be = open_run_backend(options, servers)
    try:
        models = be.models_info()
        header = header_for(chunk_size, models, options.inputs, inputs.digests, label=label,
                            frame_filter=CDS_FILTER if cds_frames_only else "stop-free")
        fingerprint = {
            "command": "embed", "tool_version": header.tool_version, "inputs_sha256": inputs.digests,
            "chunk_size": chunk_size, "window": options.window, "backend": options.backend,
            "label": label, "frame_filter": header.frame_filter, "models": header.models,
        }
        done = ckpt.open(fingerprint, options.restart)
        if done < 0:
            log.info("%s is already complete; nothing to do (pass --restart to redo it)",
                     paths.output)
            return json.loads(paths.run_json.read_text())
        announce(done, ckpt, inputs, options)
        timings = dict.fromkeys(("preprocess", "embed", "write"), 0.0)

        def finish(w: Window, embeddings: Embedded) -> None:
            t0 = time.perf_counter()
            write_part(ckpt.part(w.index, PART_SUFFIX), w.frame_ids, *embeddings)
            ckpt.commit_window(w.index, parts={}, carried_tally=None, counters=w.progress)
            timings["write"] += time.perf_counter() - t0

        counters, frames_embedded, windows_run = run_windows(
            read_paths=inputs.read_paths, ckpt=ckpt, backend=be, chunk_size=chunk_size,
            window=options.window, lookahead=options.lookahead, done=done,
            progress=options.progress, total_bases=scan.n_bases, finish_window=finish,
            timings=timings, frame_filter=frame_filter, desc="embed")
        endpoints = be.endpoints_info()
        dedup = be.info()
    finally:
        be.close()
    t0 = time.perf_counter()
    n = assemble(paths.output, header, ckpt.parts(PART_SUFFIX))
    timings["assemble"] = time.perf_counter() - t0
    wall = time.perf_counter() - wall0
    timings["total"] = wall
    record = {
        "tool": "virnucpro-triton orchestrator embed", "version": header.tool_version,
        "output": str(paths.output.resolve()), "inputs": list(options.inputs),
        "inputs_sha256": inputs.digests, "chunk_size": chunk_size, "label": label,
        "frame_filter": header.frame_filter, "backend": options.backend,
        "servers": servers if options.backend == "triton" else None,
        "priority": options.resolved_priority, "endpoints": endpoints, "models": header.models,
        "counts": {"records": counters.records, "bases": counters.bases, "chunks": counters.chunks,
                   "frames": n, "windows": counters.windows},
        "input_lengths": scan.lengths.to_dict(),
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "resumed": {"resumed": done > 0, "windows_reused": done, "windows_run": windows_run},
        "throughput": {"frames_embedded": frames_embedded,
                       "frames_per_s": round(frames_embedded / wall, 2) if wall > 0 else None},
        "dedup": dedup,
    }
    ckpt.assemble([], record)
    for part in ckpt.parts(PART_SUFFIX):
        part.unlink(missing_ok=True)
    log.info("wrote %s: %d frames of %d records (%d chunks) in %.1f s", paths.output, n,
             counters.records, counters.chunks, wall)
    if n == 0:
        log.warning("warning: no frame was kept, so %s has no rows", paths.output)
    return record


def _cds_filter(inputs: ScannedInputs) -> FrameFilter:
    """Keep frames whose protein lies in an annotated CDS; GenBank inputs only."""
    formats = inputs.scan.formats
    not_genbank = [p for p in inputs.read_paths if formats[p].kind != "genbank"]
    if not_genbank:
        raise InputError(f"--cds-frames-only needs GenBank inputs (CDS annotations); "
                         f"{not_genbank[0]} is {formats[not_genbank[0]].describe()}")
    return kept_coding_frames
