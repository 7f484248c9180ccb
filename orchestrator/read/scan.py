"""One streaming pass over the inputs before any model call: counts, checksums, bad input.

Format errors, letters the encoders refuse and duplicate record IDs all end the run here (exit 2,
naming the place), before a server is asked for anything.
"""

from __future__ import annotations

import hashlib
import tempfile
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encoders.validation import ALLOWED_TEXT, first_disallowed
from orchestrator.digest import stream_sha256
from orchestrator.errors import InputError
from orchestrator.read.duplicates import HashCounter
from orchestrator.read.formats import InputFormat, detect_format, entries
from orchestrator.read.sources import open_raw

MAX_DUPLICATES_NAMED = 5
# Fixed length bins for run.json (upper bounds, inclusive); 150 and 250 are the "short" limits
# of the two chunk sizes.
LENGTH_BIN_EDGES = (0, 50, 100, 150, 200, 250, 300, 400, 500, 1_000, 2_000, 5_000, 10_000,
                    100_000, 1_000_000)



@dataclass
class LengthStats:
    """Record lengths in one pass and constant memory: extremes, mean, fixed bins, short ones."""

    short_length: int = 0  # records of 1..short_length bp count as short
    n: int = 0
    total: int = 0
    min: int | None = None
    max: int | None = None
    n_short: int = 0
    bins: list[int] = field(default_factory=lambda: [0] * (len(LENGTH_BIN_EDGES) + 1))

    def add(self, length: int) -> None:
        self.n += 1
        self.total += length
        self.min = length if self.min is None else min(self.min, length)
        self.max = length if self.max is None else max(self.max, length)
        if 0 < length <= self.short_length:
            self.n_short += 1
        self.bins[bisect_left(LENGTH_BIN_EDGES, length)] += 1  # bin i: edge[i-1] < length <= edge[i]

    @property
    def fraction_short(self) -> float:
        with_sequence = self.n - self.bins[0]
        return self.n_short / with_sequence if with_sequence else 0.0

    def to_dict(self) -> dict[str, Any]:
        lows = (0, *(e + 1 for e in LENGTH_BIN_EDGES))
        highs: tuple[int | None, ...] = (*LENGTH_BIN_EDGES, None)
        return {
            "n": self.n, "min": self.min, "max": self.max,
            "mean": round(self.total / self.n, 1) if self.n else None,
            "short_length": self.short_length, "n_short": self.n_short,
            "fraction_short": round(self.fraction_short, 4),
            "histogram": [{"lo": lo, "hi": hi, "count": c}
                          for lo, hi, c in zip(lows, highs, self.bins, strict=True) if c],
        }


@dataclass(frozen=True)
class InputSummary:
    """Counts, formats and raw-byte checksums of the inputs, from one streaming pass."""

    n_records: int
    n_bases: int
    sha256: dict[str, str] = field(default_factory=dict)  # input path -> hex digest of its bytes
    formats: dict[str, InputFormat] = field(default_factory=dict)
    lengths: LengthStats = field(default_factory=LengthStats)



def scan_inputs(paths: Sequence[str], *, short_length: int = 0,
                spill_dir: Path | None = None) -> InputSummary:
    """Sniff formats, count records and bases, checksum each input, refuse bad IDs and letters.

    Sequences may hold what the DNA encoder accepts (`encoders.validation.ALLOWED_DNA`: letters,
    `-`, `.`, `*`); anything else is refused here, naming the place, before any model call.

    One pass per input, in memory that does not grow with the records: an 8-byte hash per ID goes
    to a `HashCounter` (beyond a bound, sorted buckets spilled into a temporary folder under
    `spill_dir`, default the system's temporary folder); the places of duplicates are found by a
    second pass that runs only when a hash repeats.
    """
    n_records = n_bases = 0
    digests: dict[str, str] = {}
    formats: dict[str, InputFormat] = {}
    lengths = LengthStats(short_length=short_length)
    hashes = HashCounter(Path(spill_dir if spill_dir is not None else tempfile.gettempdir()))
    try:
        for path in paths:
            fmt = formats[path] = detect_format(path)
            digest = hashlib.sha256()
            for rid, seq, where in entries(path, fmt, digest.update if fmt.kind == "fasta" else None):
                bad = first_disallowed("dnabert_s", seq)
                if bad is not None:
                    raise InputError(f"{where}: record {rid!r}: character {bad[1]!r} at position "
                                     f"{bad[0] + 1} of its sequence is not allowed; sequences may "
                                     f"hold {ALLOWED_TEXT['dnabert_s']}")
                n_records += 1
                n_bases += len(seq)
                lengths.add(len(seq))
                hashes.add(hash(rid))
            digests[path] = digest.hexdigest() if fmt.kind == "fasta" else _raw_sha256(path)
        repeated = hashes.repeated()
    finally:
        hashes.close()
    if len(repeated):
        _raise_duplicates(paths, formats, repeated)
    return InputSummary(n_records, n_bases, digests, formats, lengths)


# Records whose hashes are looked up together in the second pass (bounded memory).
DUPLICATE_PASS_BLOCK = 1 << 16
# IDs whose places the second pass keeps, the first ones met whose hash repeats: enough to name
# MAX_DUPLICATES_NAMED even where a few of them only share a hash with another ID.
DUPLICATES_TRACKED = 1000


def _raise_duplicates(paths: Sequence[str], formats: dict[str, InputFormat],
                      repeated: np.ndarray) -> None:
    """InputError naming the first duplicate IDs in input order with their places (a second pass;
    none when the repeated hashes were only collisions of different IDs)."""
    where: dict[str, list[str]] = {}
    block: list[tuple[str, str]] = []
    block_hashes = array("q")

    def look_up() -> None:
        found = np.frombuffer(block_hashes, dtype=np.int64)
        pos = np.minimum(np.searchsorted(repeated, found), len(repeated) - 1)
        for i in np.flatnonzero(repeated[pos] == found):
            rid, place = block[i]
            if rid in where:
                where[rid].append(place)
            elif len(where) < DUPLICATES_TRACKED:
                where[rid] = [place]
        del found
        block.clear()
        del block_hashes[:]

    for path in paths:
        for rid, _seq, place in entries(path, formats[path]):
            block.append((rid, place))
            block_hashes.append(hash(rid))
            if len(block) >= DUPLICATE_PASS_BLOCK:
                look_up()
    look_up()
    dups = [(rid, places) for rid, places in where.items() if len(places) > 1]
    if not dups:
        return  # only hash collisions
    # every repeated hash is one duplicated ID, but those tracked with one place (collisions)
    n_dups = len(repeated) - (len(where) - len(dups))
    named = ", ".join(f"{rid} ({', '.join(places)})" for rid, places in dups[:MAX_DUPLICATES_NAMED])
    more = n_dups - min(len(dups), MAX_DUPLICATES_NAMED)
    suffix = f" and {more} more" if more > 0 else ""
    raise InputError(f"duplicate record IDs: {named}{suffix}; record IDs must be unique "
                     "across all inputs")



def _raw_sha256(path: str) -> str:
    with open_raw(path) as fh:
        return stream_sha256(fh)
