"""Per-window checkpoints in OUTDIR's state folder, so a rerun of the same command resumes.

Layout (folder name from `paths.OutputPaths.state`):
  manifest.json        fingerprint of the run + number of finished windows + carried record tally
  w000123.pred         prediction_results.txt rows of window 123 (input order)
  w000123.high         its highestscore rows, sorted by Modified_ID (merged at the end)
  w000123.summary      sequence_summary.tsv rows of the records that finished in window 123
  w000123.calls/.regions/.bed/.bedgraph   the same records' calls, regions and track rows
Each window's files are written atomically first, then the manifest is replaced atomically, so
after a crash the manifest only ever counts windows whose files are complete. The fingerprint
(input checksums, chunk size, window, backend, classifier and model checksums, tool version)
decides whether a checkpoint may be continued: a different one is refused, never mixed in.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.atomic import atomic_open, write_atomic, write_json_atomic
from orchestrator.errors import InputError
from orchestrator.write.external import merge_sorted
from orchestrator.write.paths import OutputPaths

log = logging.getLogger("orchestrator")

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class FinalFile:
    """An output assembled from one part per window: concatenated, or merged when `sorted`."""

    target: Path
    header: str
    suffix: str
    sorted: bool = False


def describe_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable list of fingerprint fields that differ (nested dicts/lists flattened)."""
    diffs: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a != b:
            text_a = json.dumps(a, sort_keys=True)
            text_b = json.dumps(b, sort_keys=True)
            if len(text_a) + len(text_b) > 160:
                diffs.append(f"{key} changed")
            else:
                diffs.append(f"{key}: {text_a} -> {text_b}")
    return diffs


class Checkpoint:
    """The state folder of one OUTDIR: open/verify, commit windows, assemble final outputs."""

    def __init__(self, paths: OutputPaths) -> None:
        self.paths = paths
        self.state = paths.state
        self.manifest_path = self.state / MANIFEST_NAME
        self.manifest: dict[str, Any] = {}

    # -- opening -------------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest, None when there is none; InputError (exit 2) when it is unreadable."""
        try:
            data = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise InputError(f"checkpoint {self.manifest_path} is unreadable ({exc}); "
                             "rerun with --restart to start over") from exc
        return data if isinstance(data, dict) else None

    def refuse_foreign(self, restart: bool) -> None:
        """Before anything else: results in OUTDIR without our state belong to another run."""
        if restart or self.manifest_path.exists():
            return
        present = [p.name for p in self.paths.results() if p.exists()]
        if present:
            raise InputError(
                f"{self.paths.outdir} already holds results ({', '.join(present)}) but no "
                "checkpoint of this run; choose another -o/--outdir or pass --restart to overwrite"
            )

    def open(self, fingerprint: dict[str, Any], restart: bool) -> int:
        """Start or continue; returns how many windows are already finished (-1: run complete)."""
        old = None if restart else self.read_manifest()
        if restart:
            self.discard()
        if old is not None and old.get("format") == MANIFEST_FORMAT:
            if old.get("fingerprint") != fingerprint:
                diffs = describe_differences(old.get("fingerprint") or {}, fingerprint)
                raise InputError(
                    f"{self.paths.outdir} holds a checkpoint of a different run "
                    f"({'; '.join(diffs)}); rerun with --restart to discard it, "
                    "or choose another -o/--outdir"
                )
            self.manifest = old
            if old.get("complete") and all(p.exists() for p in self.paths.results()):
                return -1
            if old.get("complete"):  # results deleted by hand since: redo everything
                log.info("previous run is complete but its results are missing; starting over")
                self.discard()
            else:
                done = int(old.get("windows_done", 0))
                return done
        elif old is not None:
            raise InputError(f"checkpoint {self.manifest_path} has an unknown format; "
                             "rerun with --restart")
        self.state.mkdir(parents=True, exist_ok=True)
        self.manifest = {"format": MANIFEST_FORMAT, "fingerprint": fingerprint, "windows_done": 0,
                         "carried_tally": None, "counters": {}, "complete": False}
        write_json_atomic(self.manifest_path, self.manifest)
        return 0

    def discard(self) -> None:
        """Remove all state and results of a previous run (for --restart)."""
        if self.state.is_dir():
            for p in self.state.iterdir():
                if p.name.endswith(".spool"):
                    continue  # the freshly spooled stdin of this run
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        for p in (*self.paths.results(), *self.paths.extra_outputs()):
            p.unlink(missing_ok=True)

    # -- windows -------------------------------------------------------------------------------
    @property
    def windows_done(self) -> int:
        return int(self.manifest.get("windows_done", 0))

    @property
    def carried_tally(self) -> dict[str, Any] | None:
        return self.manifest.get("carried_tally")

    @property
    def counters(self) -> dict[str, Any]:
        return dict(self.manifest.get("counters") or {})

    def part(self, index: int, suffix: str) -> Path:
        return self.state / f"w{index:06d}{suffix}"

    def parts(self, suffix: str) -> list[Path]:
        """The finished windows' parts of one kind, in window order."""
        return [self.part(i, suffix) for i in range(self.windows_done)]

    def commit_window(self, index: int, *, parts: Mapping[str, str],
                      carried_tally: dict[str, Any] | None, counters: dict[str, Any]) -> None:
        """Make window `index` durable: its parts ({suffix: text}) first, then the manifest."""
        if index != self.windows_done:
            raise RuntimeError(f"window {index} committed out of order (done: {self.windows_done})")
        for suffix, text in parts.items():
            write_atomic(self.part(index, suffix), text)
        self.manifest.update(windows_done=index + 1, carried_tally=carried_tally,
                             counters=counters)
        write_json_atomic(self.manifest_path, self.manifest)

    # -- final outputs ---------------------------------------------------------------------------
    def assemble(self, files: Sequence[FinalFile], run_json: dict[str, Any]) -> None:
        """Write the final files atomically from the window parts, then mark the run complete.

        Memory stays constant: parts are concatenated, or (each part sorted) merged a bounded
        number at a time (`external.merge_sorted`).
        """
        n = self.windows_done
        for f in files:
            parts = [self.part(i, f.suffix) for i in range(n)]
            body = merge_sorted(parts, row_key, self.state) if f.sorted else _concat(parts)
            _write_streamed(f.target, f.header, body)
        write_json_atomic(self.paths.run_json, run_json)
        self.manifest.update(complete=True, carried_tally=None)
        write_json_atomic(self.manifest_path, self.manifest)
        for i in range(n):
            for f in files:
                self.part(i, f.suffix).unlink(missing_ok=True)


def _concat(parts: Iterable[Path]) -> Iterator[str]:
    for part in parts:
        with open(part, encoding="utf-8", newline="") as fh:
            while block := fh.read(1 << 20):
                yield block


def row_key(line: str) -> str:
    """The sort key of highestscore rows: the first column (Modified_ID)."""
    return line.split("\t", 1)[0]


def _write_streamed(target: Path, header: str, body: Iterable[str]) -> None:
    """header + body into `target` atomically, buffered in ~1 MiB writes (constant memory)."""
    with atomic_open(target) as fh:
        fh.write(header)
        buf: list[str] = []
        size = 0
        for piece in body:
            buf.append(piece)
            size += len(piece)
            if size >= 1 << 20:
                fh.write("".join(buf))
                buf.clear()
                size = 0
        fh.write("".join(buf))
