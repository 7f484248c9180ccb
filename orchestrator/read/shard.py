"""One part of a sample's records: `predict --shard K/N`, so N client processes share one sample.

The split is by bases, not by record count: record i (with `before` bases ahead of it in input
order and `length` of its own) belongs to the shard its midpoint falls in, of N equal stretches of
the sample's total bases. Shards are therefore contiguous runs of records in input order (merging
them back is a concatenation), a record is never split, every record is in exactly one shard, and
each shard holds about total/N bases give or take one record. The rule needs only the total (the
scan's count), so every process computes the same split on its own, with no shared state.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from orchestrator.errors import InputError
from orchestrator.read.record import Record

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, records: Iterator[Record], total: int) -> Iterator[Record]:
        """This shard's records of the whole sample's stream, in input order. Shards are
        contiguous, so reading stops at the first record of a later shard."""
        before = 0
        for record in records:
            length = len(record.seq)
            shard = shard_of(before, length, total, self.count)
            if shard == self.index:
                yield record
            elif shard > self.index:
                return
            before += length


def shard_of(before: int, length: int, total: int, count: int) -> int:
    """The shard (1..count) whose stretch of bases holds the record's midpoint."""
    if total <= 0:
        return 1
    return min(count, (2 * before + length) * count // (2 * total) + 1)


def parse_shard(text: str) -> Shard:
    """`K/N` with 1 <= K <= N -> Shard; InputError (exit 2) otherwise."""
    m = _SHARD.fullmatch(text)
    if m is None:
        raise InputError(f"give K/N, e.g. 2/8 (this process does part K of N), not {text!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if not 1 <= k <= n:
        raise InputError(f"in K/N, K must be between 1 and N, not {text!r}")
    return Shard(k, n)
