"""One streaming pass over the inputs before any model call: counts, checksums, bad input.

Format errors, letters the encoders refuse and duplicate record IDs all end the run here (exit 2,
naming the place), before a server is asked for anything.
"""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from encoders.validation import ALLOWED_TEXT, first_disallowed
from orchestrator.digest import stream_sha256
from orchestrator.errors import InputError
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



def scan_inputs(paths: Sequence[str], *, short_length: int = 0) -> InputSummary:
    """Sniff formats, count records and bases, checksum each input, refuse bad IDs and letters.

    Sequences may hold what the DNA encoder accepts (`encoders.validation.ALLOWED_DNA`: letters,
    `-`, `.`, `*`); anything else is refused here, naming the place, before any model call.

    One pass per input. Memory stays small: only an 8-byte hash per ID is kept; the places of
    duplicates are found by a second pass that runs only when a hash repeats.
    """
    n_records = n_bases = 0
    digests: dict[str, str] = {}
    formats: dict[str, InputFormat] = {}
    lengths = LengthStats(short_length=short_length)
    hashes = array("q")
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
            hashes.append(hash(rid))
        digests[path] = digest.hexdigest() if fmt.kind == "fasta" else _raw_sha256(path)
    if len(set(hashes)) < len(hashes):
        _raise_duplicates(paths, formats, hashes)
    return InputSummary(n_records, n_bases, digests, formats, lengths)


def _raise_duplicates(paths: Sequence[str], formats: dict[str, InputFormat],
                      hashes: array) -> None:
    seen: set[int] = set()
    repeated = {h for h in hashes if h in seen or seen.add(h)}  # type: ignore[func-returns-value]
    where: dict[str, list[str]] = {}
    for path in paths:
        for rid, _seq, place in entries(path, formats[path]):
            if hash(rid) in repeated:
                where.setdefault(rid, []).append(place)
    dups = [(rid, places) for rid, places in where.items() if len(places) > 1]
    if not dups:
        return  # only a hash collision
    named = ", ".join(f"{rid} ({', '.join(places)})" for rid, places in dups[:MAX_DUPLICATES_NAMED])
    more = len(dups) - MAX_DUPLICATES_NAMED
    suffix = f" and {more} more" if more > 0 else ""
    raise InputError(f"duplicate record IDs: {named}{suffix}; record IDs must be unique "
                     "across all inputs")



def _raw_sha256(path: str) -> str:
    with open_raw(path) as fh:
        return stream_sha256(fh)
