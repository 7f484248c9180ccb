"""`orchestrator compare RUN_A RUN_B`: what a change of precision, model version, card or Triton
version did to the answers, from two finished runs of the same inputs.

Both runs must have finished (`predict` completed) on the same input files (checksums), with the
same chunk size, a classifier of the same type (the same input width, i.e. the same embedding
models) and the same call thresholds (run.json `parameters.calls`); otherwise the runs cannot be
compared (exit 2, with the reason), and so with a missing file or a malformed row. The comparison
reads the files the runs kept, in lockstep, one line of each at a time: the chunk table (each
chunk's two max scores), sequence_calls.tsv (each sequence's call) and prediction_results.txt (each
frame's scores). Memory: 4 bytes per chunk (the deltas, for the quantiles) plus the top lists.

A chunk is over the tolerance when its |delta score|, computed in decimal from the scores as
written, exceeds --max-score-diff: a delta exactly at the tolerance is within it, whatever binary
floating point would round it to.

Exit 0 when every call agrees and every chunk's max |delta score| is within the tolerance, 1 when
not; the caller prints the result either way.
"""

from __future__ import annotations

import heapq
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from itertools import zip_longest
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from orchestrator.classify.calls import CALL_AMBIGUOUS, CALL_NO_FRAMES, CALL_NONVIRAL, CALL_VIRAL
from orchestrator.errors import InputError
from orchestrator.write.paths import OutputPaths
from orchestrator.write.rederive import finished_run

DEFAULT_MAX_SCORE_DIFF = 0.01  # one percentage point of a classifier probability
DEFAULT_TOP = 10
QUANTILES = (0.5, 0.9, 0.99, 0.999, 1.0)
CALLS = (CALL_VIRAL, CALL_NONVIRAL, CALL_AMBIGUOUS, CALL_NO_FRAMES)
PURPOSE = "`orchestrator compare` compares runs that `predict` completed"


@dataclass
class Comparison:
    """Everything `compare` reports, in one place for the text and the JSON output."""

    run_a: str
    run_b: str
    max_score_diff: float
    same_classifier: bool
    frames: int = 0
    frame_label_flips: int = 0
    frame_max_delta: float = 0.0
    chunks: int = 0
    chunks_over: int = 0
    quantiles: dict[str, float] = field(default_factory=dict)
    sequences: int = 0
    calls_agree: int = 0
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    top_chunks: list[dict[str, Any]] = field(default_factory=list)
    differing_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every call agrees and every chunk's delta is within the tolerance."""
        return self.calls_agree == self.sequences and self.chunks_over == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a, "run_b": self.run_b, "ok": self.ok,
            "max_score_diff": self.max_score_diff, "same_classifier": self.same_classifier,
            "frames_compared": self.frames, "frame_label_flips": self.frame_label_flips,
            "frame_max_abs_delta": self.frame_max_delta,
            "chunks_compared": self.chunks, "chunks_over_tolerance": self.chunks_over,
            "chunk_max_abs_delta_quantiles": self.quantiles,
            "sequences_compared": self.sequences, "calls_agree": self.calls_agree,
            "call_agreement": self.calls_agree / self.sequences if self.sequences else 1.0,
            "call_confusion": self.confusion,
            "top_chunks": self.top_chunks, "differing_calls": self.differing_calls,
        }


def _comparable(a: str | Path, b: str | Path) -> tuple[OutputPaths, OutputPaths, bool]:
    """Both runs' paths and whether they used the same classifier file; InputError (exit 2) with
    the reason when they cannot be compared."""
    paths_a, run_a = finished_run(a, PURPOSE)
    paths_b, run_b = finished_run(b, PURPOSE)
    if run_a.get("inputs_sha256") != run_b.get("inputs_sha256"):
        raise InputError(f"{a} and {b} cannot be compared: they ran on other inputs "
                         "(input checksums differ)")
    size_a, size_b = run_a["parameters"]["chunk_size"], run_b["parameters"]["chunk_size"]
    if size_a != size_b:
        raise InputError(f"{a} and {b} cannot be compared: chunk size {size_a} vs {size_b}")
    clf_a, clf_b = run_a.get("classifier") or {}, run_b.get("classifier") or {}
    if clf_a.get("input_width") != clf_b.get("input_width"):
        raise InputError(f"{a} and {b} cannot be compared: the classifiers are of other types "
                         f"(input width {clf_a.get('input_width')} vs {clf_b.get('input_width')})")
    calls_a, calls_b = run_a["parameters"].get("calls"), run_b["parameters"].get("calls")
    if calls_a != calls_b:
        raise InputError(f"{a} and {b} cannot be compared: the call thresholds differ "
                         f"({json.dumps(calls_a, sort_keys=True)} vs "
                         f"{json.dumps(calls_b, sort_keys=True)}); re-derive one run's calls with "
                         "`orchestrator call` and the other's thresholds")
    return paths_a, paths_b, clf_a.get("sha256") == clf_b.get("sha256")


def _open(path: Path) -> TextIO:
    try:
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path} is missing, so its run cannot be compared; `orchestrator call "
                         f"{path.parent}` re-derives sequence_calls.tsv, rerun predict for the "
                         "rest") from None
    except OSError as exc:
        raise InputError(f"{path} cannot be read, so its run cannot be compared: "
                         f"{exc.strerror or exc}") from None


def _lockstep(path_a: Path, path_b: Path, key_columns: int, columns: int, header: bool = True
              ) -> Iterator[tuple[list[str], list[str]]]:
    """Rows of two tab-separated files side by side (a header line checked, then skipped);
    InputError when a file is missing, a row has fewer than `columns` fields, or the files list
    other rows (keys: the first `key_columns` fields) or other numbers of rows."""
    with ExitStack() as stack:
        fa = stack.enter_context(_open(path_a))
        fb = stack.enter_context(_open(path_b))
        if header and next(fa, "") != next(fb, ""):
            raise InputError(f"{path_a} and {path_b} cannot be compared: other column headers")
        for n, (la, lb) in enumerate(zip_longest(fa, fb), start=2 if header else 1):
            if la is None or lb is None:
                raise InputError(f"{path_a} and {path_b} cannot be compared: other numbers of rows")
            ra, rb = la.rstrip("\n").split("\t"), lb.rstrip("\n").split("\t")
            for path, row in ((path_a, ra), (path_b, rb)):
                if len(row) < columns:
                    raise _malformed(path, n, f"{len(row)} fields, expected {columns}")
            if ra[:key_columns] != rb[:key_columns]:
                raise InputError(f"{path_a} and {path_b} cannot be compared: line {n} holds "
                                 f"{' '.join(ra[:key_columns])!r} vs {' '.join(rb[:key_columns])!r}")
            yield ra, rb


def _malformed(path: Path, line: int, what: str) -> InputError:
    return InputError(f"{path} line {line} is malformed ({what}), so its run cannot be compared")


def _score(text: str, path: Path, line: int) -> Decimal:
    """A score as written (decimal, exact); InputError when it is not a finite number."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise _malformed(path, line, f"{text!r} is not a number") from None
    if not value.is_finite():
        raise _malformed(path, line, f"{text!r} is not a finite number")
    return value


def _push(heap: list[tuple[float, int, dict[str, Any]]], top: int, score: float, n: int,
          row: dict[str, Any]) -> None:
    """Keep the `top` rows of highest score (ties: the earlier row)."""
    item = (score, -n, row)
    if top == 0:
        return
    if len(heap) < top:
        heapq.heappush(heap, item)
    elif item[:2] > heap[0][:2]:
        heapq.heapreplace(heap, item)


def _ranked(heap: list[tuple[float, int, dict[str, Any]]]) -> list[dict[str, Any]]:
    return [row for _, _, row in sorted(heap, key=lambda t: t[:2], reverse=True)]


def compare_runs(a: str | Path, b: str | Path, max_score_diff: float = DEFAULT_MAX_SCORE_DIFF,
                 top: int = DEFAULT_TOP) -> Comparison:
    """Compare two finished runs (see the module docstring); InputError when they cannot be."""
    if not max_score_diff >= 0:
        raise InputError(f"--max-score-diff must be 0 or more, got {max_score_diff}")
    if top < 0:
        raise InputError(f"--top must be 0 or more, got {top}")
    paths_a, paths_b, same_clf = _comparable(a, b)
    cmp = Comparison(str(a), str(b), max_score_diff, same_clf)

    limit = Decimal(repr(float(max_score_diff)))  # the tolerance as the user typed it
    deltas: list[float] = []
    heap: list[tuple[float, int, dict[str, Any]]] = []
    table_a, table_b = paths_a.chunk_table, paths_b.chunk_table
    for n, (ra, rb) in enumerate(_lockstep(table_a, table_b, 2, 4, header=False)):
        sa = (_score(ra[2], table_a, n + 1), _score(ra[3], table_a, n + 1))
        sb = (_score(rb[2], table_b, n + 1), _score(rb[3], table_b, n + 1))
        if not ra[1].isdigit():
            raise _malformed(table_a, n + 1, f"chunk index {ra[1]!r}")
        exact = max(abs(sa[0] - sb[0]), abs(sa[1] - sb[1]))
        cmp.chunks_over += exact > limit
        delta = float(exact)
        deltas.append(delta)
        _push(heap, top, delta, n, {"seq_id": ra[0], "chunk": int(ra[1]), "abs_delta": delta,
                                    "scores_a": [float(x) for x in sa],
                                    "scores_b": [float(x) for x in sb]})
    values = np.asarray(deltas, dtype=np.float32)
    cmp.chunks = int(values.size)
    if values.size:
        cmp.quantiles = {f"p{q * 100:g}" if q < 1 else "max": float(np.quantile(values, q))
                         for q in QUANTILES}
    cmp.top_chunks = _ranked(heap)
    del deltas, values

    cmp.confusion = {ca: dict.fromkeys(CALLS, 0) for ca in CALLS}
    heap = []
    for n, (ra, rb) in enumerate(_lockstep(paths_a.calls, paths_b.calls, 1, 5)):
        call_a, call_b = ra[2], rb[2]
        cmp.sequences += 1
        cmp.confusion.setdefault(call_a, {}).setdefault(call_b, 0)
        cmp.confusion[call_a][call_b] += 1
        if call_a == call_b:
            cmp.calls_agree += 1
            continue
        wa, wb = ra[4], rb[4]
        shift = (float(abs(_score(wa, paths_a.calls, n + 2) - _score(wb, paths_b.calls, n + 2)))
                 if "NA" not in (wa, wb) else float("inf"))
        _push(heap, top, shift, n, {"seq_id": ra[0], "call_a": call_a, "call_b": call_b,
                                    "weighted_delta_a": wa, "weighted_delta_b": wb,
                                    "confidence_a": ra[3], "confidence_b": rb[3]})
    cmp.differing_calls = _ranked(heap)

    pred_a, pred_b = paths_a.predictions, paths_b.predictions
    for n, (ra, rb) in enumerate(_lockstep(pred_a, pred_b, 1, 4), start=2):
        cmp.frames += 1
        cmp.frame_label_flips += ra[1] != rb[1]
        d = max(abs(_score(ra[i], pred_a, n) - _score(rb[i], pred_b, n)) for i in (2, 3))
        cmp.frame_max_delta = max(cmp.frame_max_delta, float(d))
    return cmp


def format_text(cmp: Comparison) -> str:
    """The human-readable report."""
    lines = [f"compare {cmp.run_a} (A) with {cmp.run_b} (B)"
             + ("" if cmp.same_classifier else " [other classifier file of the same type]"),
             f"frames compared: {cmp.frames} ({cmp.frame_label_flips} frame labels differ, "
             f"max |delta score| {cmp.frame_max_delta:.3g})",
             f"chunks compared: {cmp.chunks}; max |delta score| per chunk: "
             + ("  ".join(f"{k} {v:.3g}" for k, v in cmp.quantiles.items()) or "none"),
             f"chunks over --max-score-diff {cmp.max_score_diff:g}: {cmp.chunks_over}",
             f"sequence calls agree: {cmp.calls_agree}/{cmp.sequences}"
             + (f" ({100.0 * cmp.calls_agree / cmp.sequences:.2f}%)" if cmp.sequences else ""),
             "call confusion (rows A, columns B):"]
    cols = [c for c in CALLS if any(row.get(c) for row in cmp.confusion.values())] or list(CALLS)
    rows = [r for r in cmp.confusion if any(cmp.confusion[r].values())] or list(CALLS)
    width = max(len(c) for c in (*cols, *rows)) + 2
    lines.append(" " * width + "".join(c.rjust(width) for c in cols))
    for r in rows:
        lines.append(r.ljust(width) + "".join(str(cmp.confusion[r].get(c, 0)).rjust(width)
                                              for c in cols))
    if cmp.differing_calls:
        lines.append("differing calls (largest weighted_delta shift first):")
        lines.append("seq_id\tcall_a\tcall_b\tweighted_delta_a\tweighted_delta_b")
        lines += [f"{d['seq_id']}\t{d['call_a']}\t{d['call_b']}\t{d['weighted_delta_a']}\t"
                  f"{d['weighted_delta_b']}" for d in cmp.differing_calls]
    if cmp.top_chunks:
        lines.append("chunks that differ most:")
        lines.append("seq_id\tchunk\tabs_delta\tscores_a\tscores_b")
        lines += [f"{c['seq_id']}\t{c['chunk']}\t{c['abs_delta']:.3g}\t"
                  f"{c['scores_a'][0]:g},{c['scores_a'][1]:g}\t{c['scores_b'][0]:g},"
                  f"{c['scores_b'][1]:g}" for c in cmp.top_chunks]
    verdict = ("SAME: every call agrees and every chunk is within the tolerance" if cmp.ok else
               f"DIFFERENT: {cmp.sequences - cmp.calls_agree} calls differ, {cmp.chunks_over} "
               "chunks over the tolerance")
    lines.append(verdict)
    return "\n".join(lines) + "\n"


def run_compare(a: str, b: str, *, max_score_diff: float = DEFAULT_MAX_SCORE_DIFF,
                top: int = DEFAULT_TOP, json_output: bool = False,
                stream: TextIO | None = None) -> int:
    """Print the comparison (text or JSON); 0 when the runs agree within the tolerance, else 1."""
    cmp = compare_runs(a, b, max_score_diff, top)
    out = stream or sys.stdout
    out.write(json.dumps(cmp.to_dict(), indent=2) + "\n" if json_output else format_text(cmp))
    out.flush()
    return 0 if cmp.ok else 1
