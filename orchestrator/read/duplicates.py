"""Repeated record-ID hashes in bounded memory, whatever the number of records.

The scan keeps one 64-bit hash per record ID. Up to `IN_MEMORY_HASHES` of them stay in one array
that is sorted in place at the end; beyond that, every full array is sorted and split by the
hashes' top bits into `SPILL_BUCKETS` files of a spill folder, and each bucket is then sorted
and checked alone. So the scan holds at most `IN_MEMORY_HASHES` hashes at a time (2 MiB) and the
check one bucket (1/256 of all hashes: 3 MiB per 100 million records).
"""

from __future__ import annotations

import shutil
import tempfile
from array import array
from pathlib import Path

import numpy as np

IN_MEMORY_HASHES = 1 << 18
SPILL_BUCKETS = 256
_BUCKET_SHIFT = np.uint64(64 - 8)  # 2**8 == SPILL_BUCKETS: a bucket is the hash's top byte


def repeated_values(values: np.ndarray) -> np.ndarray:
    """The distinct values that occur more than once, sorted; sorts `values` in place."""
    values.sort()
    return np.unique(values[1:][values[1:] == values[:-1]])


class HashCounter:
    """Collects signed 64-bit hashes; `repeated()` gives those seen more than once.

    `spill_dir`: the folder that takes a temporary spill folder once more than `in_memory`
    hashes have been added (created then; removed by `close`).
    """

    def __init__(self, spill_dir: Path, in_memory: int | None = None) -> None:
        self.spill_dir = spill_dir
        self.in_memory = in_memory or IN_MEMORY_HASHES
        self.hashes = array("q")
        self.spilled: Path | None = None

    def add(self, value: int) -> None:
        self.hashes.append(value)
        if len(self.hashes) >= self.in_memory:
            self._spill()

    def _spill(self) -> None:
        """Sort the held hashes and append each top-byte bucket to its file."""
        if self.spilled is None:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            self.spilled = Path(tempfile.mkdtemp(prefix="id-hashes-", dir=self.spill_dir))
        held = np.frombuffer(self.hashes, dtype=np.uint64)
        held.sort()
        edges = np.searchsorted(held, np.arange(1, SPILL_BUCKETS, dtype=np.uint64) << _BUCKET_SHIFT)
        for bucket, part in enumerate(np.split(held, edges)):
            if len(part):
                with open(self.spilled / f"{bucket:03d}", "ab") as fh:
                    fh.write(part.tobytes())
        self.hashes = array("q")

    def repeated(self) -> np.ndarray:
        """int64 hashes added more than once, sorted (one bucket in memory at a time)."""
        if self.spilled is None:
            return repeated_values(np.frombuffer(self.hashes, dtype=np.int64))
        self._spill()
        found = [repeated_values(np.fromfile(path, dtype=np.uint64))
                 for path in sorted(self.spilled.iterdir())]
        return np.sort(np.concatenate(found).view(np.int64)) if found else np.empty(0, np.int64)

    def close(self) -> None:
        self.hashes = array("q")
        if self.spilled is not None:
            shutil.rmtree(self.spilled, ignore_errors=True)
            self.spilled = None
