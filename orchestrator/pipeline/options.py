"""The options `predict` and `embed` share, their defaults (written only here) and their checks.

Kept free of numpy and gRPC imports: the CLI reads the defaults from here at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.embed.priority import resolve_priority
from orchestrator.errors import InputError

if TYPE_CHECKING:
    from orchestrator.embed.triton.endpoints import ConnectionOptions
    from orchestrator.read.shard import Shard

SERVER_ENV = "VIRNUCPRO_TRITON_URL"
DEFAULT_SERVER = "localhost:8001"
DEFAULT_BACKEND = "triton"
# Kept frames per checkpointed window: large enough to keep the servers' batches full, small
# enough that a window's vectors (4096 x 13 KB with the real models) stay a small part of memory.
DEFAULT_WINDOW = 4096
# Windows queued beyond the one being waited for: enough that the servers never wait for the
# client between windows, few enough that memory stays a small number of windows.
DEFAULT_LOOKAHEAD = 2
# Bound of the deduplication memory. predict keeps an answer cache (a frame's digest and its two
# scores); `embed` and --save-embeddings keep a table of vectors (13 KB per frame at the real
# widths, ~78,000 frames per GiB), least recently used out.
DEFAULT_DEDUP_MEMORY = 1 << 30
# The answer cache: a slot is a 16-byte digest plus two float32 scores; tables are filled to 3/4
# at most (linear probing stays short); two generations (the current and the one before it) share
# the bound. So an entry costs 32 bytes in its generation, and the bound holds at least the last
# memory / 64 distinct frames (1 GiB: 16.8 million; a 1M-read sample of 150 bp reads has at most
# 6 million frames) and up to twice that.
ANSWER_SLOT_BYTES = 24
ANSWER_MAX_LOAD = 0.75
ANSWER_GENERATIONS = 2


def answer_capacity(memory_bytes: int) -> int:
    """Entries one generation of the answer cache holds within `memory_bytes` (both together)."""
    slots = int(memory_bytes) // (ANSWER_GENERATIONS * ANSWER_SLOT_BYTES)
    return int(ANSWER_MAX_LOAD * slots)


_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """`512M`, `2G`, `1.5G`, `4096` (bytes) -> bytes; binary units (K = 1024), `iB`/`B` optional."""
    value = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in _SIZE_UNITS and value[-1:] else ""
    number = value[: len(value) - len(unit)]
    try:
        size = float(number)
    except ValueError:
        raise InputError(f"not a size: {text!r} (e.g. 512M, 2G)") from None
    if not math.isfinite(size) or size < 0:
        raise InputError(f"a size must be 0 or more, got {text!r}")
    return int(size * _SIZE_UNITS[unit])


@dataclass(frozen=True)
class PipelineOptions:
    """Inputs, chunking, where and how to embed, and resume: everything read -> embed needs.

    `servers`: HOST:PORT strings, each possibly a comma-separated list (all used at once).
    """

    inputs: Sequence[str]
    chunk_size: int
    backend: str = DEFAULT_BACKEND
    servers: str | Sequence[str] = (DEFAULT_SERVER,)
    model_repository: str | None = None
    batch_size: int | None = None
    max_in_flight: int | None = None
    window: int = DEFAULT_WINDOW
    lookahead: int = DEFAULT_LOOKAHEAD
    restart: bool = False
    progress: bool = False
    connection: ConnectionOptions | None = field(default=None)
    priority: str | None = None  # high, normal, low; None: $VIRNUCPRO_PRIORITY, else normal
    dedup: bool = True  # embed each distinct string once (not part of the resume fingerprint)
    dedup_memory: int = DEFAULT_DEDUP_MEMORY  # bytes, both models' tables together
    shard: Shard | None = None  # predict --shard K/N: only this part of the records
    model_versions: Sequence[str] = ()  # --model-version values (N or MODEL=N); none: newest
    discovery_interval: str | None = None  # seconds; None: $VIRNUCPRO_DISCOVERY_INTERVAL, else 30
    debug_dispatch: str | None = None  # replay log of the dispatch core; None: $VIRNUCPRO_DEBUG_DISPATCH

    @property
    def resolved_priority(self) -> str:
        """The priority this run sends (InputError for a bad $VIRNUCPRO_PRIORITY)."""
        return resolve_priority(self.priority)

    def check(self) -> None:
        """Usage errors (exit 2) before anything is read or any server is asked."""
        if not self.inputs:
            raise InputError("no input given")
        if self.chunk_size <= 0:
            raise InputError(f"--chunk-size must be positive, got {self.chunk_size}")
        if self.window <= 0:
            raise InputError(f"--window must be positive, got {self.window}")
        if self.lookahead < 0:
            raise InputError(f"--lookahead must be 0 or more, got {self.lookahead}")
        if self.batch_size is not None and self.batch_size <= 0:
            raise InputError(f"--batch-size must be positive, got {self.batch_size}")
        if self.max_in_flight is not None and self.max_in_flight <= 0:
            raise InputError(f"--max-in-flight must be positive, got {self.max_in_flight}")
        if self.dedup_memory < 0:
            raise InputError(f"--dedup-memory must be 0 or more, got {self.dedup_memory}")
        if self.dedup and answer_capacity(self.dedup_memory) < 1:
            raise InputError(f"--dedup-memory {self.dedup_memory} bytes holds no entry; give at "
                             f"least {ANSWER_GENERATIONS * ANSWER_SLOT_BYTES * 2} bytes (or --no-dedup)")
        if list(self.inputs).count("-") > 1:
            raise InputError("stdin (-) can be given only once")
        resolve_priority(self.priority)
        if self.pinned_versions() and self.backend != DEFAULT_BACKEND:
            raise InputError("--model-version chooses among the versions Triton serves; "
                             f"--backend {self.backend} uses the newest version folder")
        if self.backend == DEFAULT_BACKEND:  # the Triton client's settings
            from orchestrator.embed.triton.discovery import discovery_interval

            discovery_interval(self.discovery_interval)

    def pinned_versions(self) -> dict[str, str]:
        """The model versions asked for, per model (InputError for a malformed value)."""
        from orchestrator.embed.triton.endpoints import parse_model_versions

        return parse_model_versions(self.model_versions)
