"""The set-up `predict` and `embed` share, from options to a checkpoint and an open backend.

In order: refuse an output that holds another run's results, spool stdin and pipes, scan the
inputs (bad input ends the run here, before any model), warn about reads too short for the
classifiers, resolve the servers, open the backend, and say whether the run starts or resumes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.embed.backends import open_backend
from orchestrator.embed.triton.discovery import parse_servers
from orchestrator.pipeline.dedup import DeduplicatingBackend
from orchestrator.pipeline.options import PipelineOptions
from orchestrator.read.scan import InputSummary, LengthStats, scan_inputs
from orchestrator.read.sources import spooled_inputs
from orchestrator.write.checkpoint import Checkpoint

log = logging.getLogger("orchestrator")


@dataclass(frozen=True)
class ScannedInputs:
    """The inputs as the run reads them: re-readable paths, their scan, checksums in order."""

    read_paths: list[str]
    scan: InputSummary
    digests: list[str]
    seconds: float


def server_list(options: PipelineOptions) -> list[str]:
    """The run's server addresses, checked (HOST:PORT, dns:///HOST:PORT)."""
    return parse_servers([options.servers] if isinstance(options.servers, str) else options.servers)


def scan_run_inputs(options: PipelineOptions, ckpt: Checkpoint, state: Path) -> ScannedInputs:
    """Refuse a foreign output, make the inputs re-readable, scan them (InputError on bad input)."""
    ckpt.refuse_foreign(options.restart)
    read_paths = spooled_inputs(list(options.inputs), state)
    t0 = time.perf_counter()
    scan = scan_inputs(read_paths, short_length=options.chunk_size // 2)
    seconds = time.perf_counter() - t0
    warn_short_records(scan.lengths, options.chunk_size)
    return ScannedInputs(read_paths, scan, [scan.sha256[p] for p in read_paths], seconds)


def open_run_backend(options: PipelineOptions, servers: list[str], *,
                     keep_vectors: bool = True) -> DeduplicatingBackend:
    """The run's backend behind the deduplication layer (which only counts with --no-dedup).

    `keep_vectors=False` (predict's answer cache answers repeats instead): strings are still
    deduplicated within a window and across the look-ahead, but no table of vectors is kept.
    """
    inner = open_backend(options.backend, servers=servers, model_repository=options.model_repository,
                         batch_size=options.batch_size, max_in_flight=options.max_in_flight,
                         connection=options.connection, priority=options.resolved_priority,
                         model_versions=options.pinned_versions(),
                         discovery_interval=options.discovery_interval,
                         debug_dispatch=options.debug_dispatch)
    return DeduplicatingBackend(inner, options.dedup_memory if keep_vectors else 0,
                                enabled=options.dedup)


def announce(done: int, ckpt: Checkpoint, inputs: ScannedInputs, options: PipelineOptions) -> None:
    """One line: a fresh start with its size, or where a resumed run continues."""
    if done:
        log.info("resuming from window %d (%d finished windows reused from %s)",
                 done + 1, done, ckpt.state)
    else:
        log.info("starting: %d records, %d bp, chunk size %d, windows of %d frames",
                 inputs.scan.n_records, inputs.scan.n_bases, options.chunk_size, options.window)


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
