"""Sorting and merging text lines in bounded memory and a bounded number of open files.

A sample of 10^8 reads has tens of thousands of checkpoint windows and millions of rows to sort;
neither may be held or opened at once. Sorted files are merged at most `MERGE_FAN_IN` at a time
(groups merged into temporary files first, level by level), and lines to sort are sorted in runs
of `SORT_RUN_LINES` spilled into temporary files. Both are stable: lines with equal keys keep the
order in which they came (file order, then line order), so the output is the bytes one in-memory
stable sort gives.
"""

from __future__ import annotations

import heapq
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

# Files open at once in one merge (each holds an ~8 KiB read buffer and its decoder's).
MERGE_FAN_IN = 64
# Lines held and sorted in memory before a run is spilled to a file.
SORT_RUN_LINES = 1 << 16

Key = Callable[[str], object]


def _merge(files: Sequence[Path], key: Key) -> Iterator[str]:
    with ExitStack() as stack:
        handles = [stack.enter_context(open(p, encoding="utf-8", newline="")) for p in files]
        yield from heapq.merge(*handles, key=key)


def _temp_file(folder: Path, suffix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix="sort-", suffix=suffix)
    os.close(fd)
    return Path(name)


def merge_sorted(files: Sequence[Path], key: Key, tmp_dir: Path) -> Iterator[str]:
    """The lines of files each sorted by `key`, merged (stable); temporary files in `tmp_dir`
    (removed as soon as they are read)."""
    level = list(files)
    made: list[Path] = []
    try:
        while len(level) > MERGE_FAN_IN:
            merged = []
            for i in range(0, len(level), MERGE_FAN_IN):
                group = level[i:i + MERGE_FAN_IN]
                target = _temp_file(tmp_dir, ".merge")
                made.append(target)
                with open(target, "w", encoding="utf-8", newline="") as out:
                    out.writelines(_merge(group, key))
                merged.append(target)
                for p in group:
                    if p in made:
                        p.unlink()
            level = merged
        yield from _merge(level, key)
    finally:
        for p in made:
            p.unlink(missing_ok=True)


class ExternalSort:
    """Lines added one by one, given back sorted by `key` (stable), in bounded memory.

    Up to `SORT_RUN_LINES` lines are sorted in memory; more are sorted in runs spilled into
    temporary files in `tmp_dir` and merged. `close()` removes what is left of them.
    """

    def __init__(self, key: Key, tmp_dir: Path) -> None:
        self.key = key
        self.tmp_dir = tmp_dir
        self.lines: list[str] = []
        self.runs: list[Path] = []

    def add(self, line: str) -> None:
        self.lines.append(line)
        if len(self.lines) >= SORT_RUN_LINES:
            self._spill()

    def _spill(self) -> None:
        self.lines.sort(key=self.key)
        run = _temp_file(self.tmp_dir, ".run")
        self.runs.append(run)
        with open(run, "w", encoding="utf-8", newline="") as out:
            out.writelines(self.lines)
        self.lines = []

    def sorted_lines(self) -> Iterator[str]:
        if not self.runs:
            self.lines.sort(key=self.key)
            yield from self.lines
            return
        if self.lines:
            self._spill()
        yield from merge_sorted(self.runs, self.key, self.tmp_dir)

    def close(self) -> None:
        self.lines = []
        for run in self.runs:
            run.unlink(missing_ok=True)
        self.runs = []
