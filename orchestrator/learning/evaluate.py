"""`evaluate`: score labelled embeddings files with a classifier and report how well it separates them.

Files given as viral are label 1, the others label 0. Each file is streamed in blocks (only the
per-frame scores and the chunk boundaries are kept, never the features), and the classifier is
judged at two levels, each with the decision rule `predict` uses for its output files:

- frame: score P(virus); virus iff p1 > p0 (a tie is "others"), as prediction_results.txt;
- chunk: max over the chunk's frames of p0 and of p1, virus iff max_score_1 >= max_score_0
  (a tie is virus), as prediction_results_highestscore.csv; ranked by max_score_1 - max_score_0.

Outputs in OUTDIR: metrics.json, metrics.tsv, scores.tsv (per frame), roc.png, score_histogram.png.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.atomic import atomic_open, write_atomic, write_json_atomic
from orchestrator.classify.classifier import Classifier, load_classifier
from orchestrator.classify.consensus import chunk_is_virus, chunk_maxima, chunk_score, frame_is_virus
from orchestrator.digest import file_sha256
from orchestrator.errors import ClassifierError, InputError
from orchestrator.learning.metrics import binary_metrics, roc_curve
from orchestrator.write.embeddings import EmbeddingsHeader, check_compatible, iter_blocks, read_header
from orchestrator.write.formats import NA, format_scores

log = logging.getLogger("orchestrator")

METRICS_JSON = "metrics.json"
METRICS_TSV = "metrics.tsv"
SCORES_TSV = "scores.tsv"
ROC_PNG = "roc.png"
HISTOGRAM_PNG = "score_histogram.png"

METRICS_COLUMNS = ("level", "n", "n_positive", "n_negative", "accuracy", "precision", "recall", "f1",
                   "mcc", "roc_auc", "pr_auc", "tn", "fp", "fn", "tp")
SCORES_COLUMNS = ("file", "frame_id", "label", "p_others", "p_virus")
CLASS_NAMES = {1: "virus", 0: "others"}


@dataclass
class _Input:
    path: str
    label: int
    header: EmbeddingsHeader
    n_rows: int
    sha256: str = ""
    n_chunks: int = 0
    frame_probs: list[np.ndarray] = field(default_factory=list)  # per classifier batch, [b, 2] float32
    chunk_max: np.ndarray = field(default_factory=lambda: np.empty((0, 2), np.float32))


def _check_distinct(paths: Sequence[str]) -> None:
    """The same file twice (by path, link or inode) would count its frames twice, or in both classes."""
    seen: dict[tuple[int, int] | str, str] = {}
    for p in paths:
        try:
            st = os.stat(p)
            key: tuple[int, int] | str = (st.st_dev, st.st_ino)
        except OSError:
            key = os.path.realpath(p)  # missing: reported by the reader
        if key in seen:
            raise InputError(f"{p}: given twice (also as {seen[key]}); give each file once")
        seen[key] = p


def _open_inputs(classifier: str, viral: Sequence[str], other: Sequence[str]
                 ) -> tuple[Classifier, list[_Input]]:
    paths = [(str(p), 1) for p in viral] + [(str(p), 0) for p in other]
    if not paths:
        raise InputError("no embeddings files given; name at least one viral or other file")
    _check_distinct([p for p, _ in paths])
    inputs = [_Input(p, label, *read_header(p)) for p, label in paths]
    for inp in inputs[1:]:
        check_compatible(inp.path, inp.header, inputs[0].path, inputs[0].header)
    clf = load_classifier(classifier)
    models = inputs[0].header.models
    try:
        clf.check_widths(int(models[0]["width"]), int(models[1]["width"]))
    except ClassifierError as exc:
        raise ClassifierError(f"{inputs[0].path}: {exc}") from None
    mismatch = clf.encoder_mismatch(models)
    if mismatch:
        log.warning("warning: %s (%s)", mismatch, inputs[0].path)
    by_digest: dict[str, str] = {}
    for inp in inputs:
        inp.sha256 = file_sha256(inp.path)
        if inp.sha256 in by_digest:
            raise InputError(f"{inp.path}: same content as {by_digest[inp.sha256]}; give each file once")
        by_digest[inp.sha256] = inp.path
    return clf, inputs


def _classified(clf: Classifier, path: str, block_rows: int
                ) -> Iterator[tuple[list[str], list[str], np.ndarray]]:
    """(frame IDs, chunk IDs, [n, 2] probabilities) of a file, block by block.

    A frame's scores do not depend on the rows it is classified with (Classifier.predict_proba),
    so any block size gives the scores predict wrote.
    """
    for frame_ids, chunk_ids, features in iter_blocks(path, block_rows):
        yield frame_ids, chunk_ids, clf.predict_proba(features)


def _score_file(clf: Classifier, inp: _Input, block_rows: int, out: io.TextIOBase) -> None:
    """Classify one file, writing its scores.tsv rows and keeping its per-frame scores and chunk
    maxima.

    A chunk's frames are consecutive in an embeddings file but may straddle a block boundary, so
    boundaries are found over the whole file's chunk ID sequence (only one string per chunk kept).
    """
    starts: list[int] = []
    seen: set[str] = set()
    previous: str | None = None
    offset = 0
    for frame_ids, chunk_ids, probs in _classified(clf, inp.path, block_rows):
        inp.frame_probs.append(probs)
        for i, cid in enumerate(chunk_ids):
            if cid != previous:
                if cid in seen:
                    raise InputError(f"{inp.path}: the frames of chunk {cid} are not consecutive; "
                                     "not a file written by `embed` or `predict --save-embeddings`")
                seen.add(cid)
                starts.append(offset + i)
                previous = cid
        offset += len(frame_ids)
        p0, p1 = format_scores(probs[:, 0]), format_scores(probs[:, 1])
        out.write("".join(f"{inp.path}\t{fid}\t{inp.label}\t{a}\t{b}\n"
                          for fid, a, b in zip(frame_ids, p0, p1, strict=True)))
    probs_all = np.concatenate(inp.frame_probs) if inp.frame_probs else np.empty((0, 2), np.float32)
    inp.chunk_max = chunk_maxima(starts, probs_all)
    inp.n_chunks = len(starts)


def _score_all(clf: Classifier, inputs: Sequence[_Input], block_rows: int, target: Path) -> None:
    """scores.tsv, streamed into place when complete."""
    with atomic_open(target) as out:
        out.write("\t".join(SCORES_COLUMNS) + "\n")
        for inp in inputs:
            _score_file(clf, inp, block_rows, out)


Curves = dict[str, tuple[np.ndarray, np.ndarray]]  # level -> (labels, ranking scores)


def _levels(inputs: Sequence[_Input]) -> tuple[dict[str, dict[str, Any]], Curves]:
    """Frame- and chunk-level metrics over all files with predict's decision rules, and the
    labels and ranking scores they came from (for the plots)."""
    frames = np.concatenate([p for inp in inputs for p in inp.frame_probs])
    frame_y = np.concatenate([np.full(sum(len(p) for p in inp.frame_probs), inp.label, np.int8)
                              for inp in inputs])
    chunks = np.concatenate([inp.chunk_max for inp in inputs])
    chunk_y = np.concatenate([np.full(len(inp.chunk_max), inp.label, np.int8) for inp in inputs])
    return {"frame": frame_metrics(frame_y, frames), "chunk": chunk_metrics(chunk_y, chunks)}, \
        {"frame": (frame_y, frames[:, 1]), "chunk": (chunk_y, chunk_score(chunks))}


def frame_metrics(y: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
    """Frames as prediction_results.txt labels them: virus iff p1 > p0 (a tie is others)."""
    return binary_metrics(y, probs[:, 1], frame_is_virus(probs).astype(np.int8))


def chunk_metrics(y: np.ndarray, maxima: np.ndarray) -> dict[str, Any]:
    """Chunks as the highestscore file labels them: virus iff max_score_1 >= max_score_0."""
    return binary_metrics(y, chunk_score(maxima), chunk_is_virus(maxima).astype(np.int8))


def _tsv_value(v: Any) -> str:
    return NA if v is None else repr(v) if isinstance(v, float) else str(v)


def _metrics_tsv(levels: dict[str, dict[str, Any]]) -> str:
    rows = ["\t".join(METRICS_COLUMNS)]
    for level, m in levels.items():
        values = {**m, **m["confusion"], "level": level}
        rows.append("\t".join(_tsv_value(values[c]) for c in METRICS_COLUMNS))
    return "\n".join(rows) + "\n"


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return buf.getvalue()


def _roc_png(curves: Curves, levels: dict[str, dict[str, Any]]) -> bytes:
    """ROC curves of both levels with their AUC, or a figure that says why there is none."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5), dpi=100)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for level, (y, score) in curves.items():
        auc = levels[level]["roc_auc"]
        if auc is not None:
            fpr, tpr = roc_curve(y, score)
            ax.plot(fpr, tpr, label=f"{level} level (AUC {auc:.4f})")
    if all(levels[level]["roc_auc"] is None for level in curves):
        ax.text(0.5, 0.5, "ROC undefined:\nonly one class present", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    return _png(fig)


def _histogram_png(y: np.ndarray, p_virus: np.ndarray) -> bytes:
    """Distribution of the frame P(virus) per true class: how far apart the classes sit."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    bins = np.linspace(0.0, 1.0, 51)
    for label in (0, 1):
        values = p_virus[y == label]
        if values.size:
            ax.hist(values, bins=bins, alpha=0.6, label=f"{CLASS_NAMES[label]} ({values.size} frames)")
    ax.set_xlim(0, 1)
    ax.set_xlabel("P(virus) per frame")
    ax.set_ylabel("frames")
    ax.set_title("Frame scores by true class")
    ax.legend(loc="best")
    return _png(fig)


def run_evaluate(*, classifier: str, viral: Sequence[str], other: Sequence[str], outdir: str,
                 block_rows: int = 16384) -> dict[str, Any]:
    """Score labelled embeddings files, write the metrics and plots into outdir, return metrics.json.

    block_rows bounds the features in memory. Raises InputError (one line, naming the file) for no
    files, a file given twice, unreadable files, files of different chunk sizes or encoders, or a
    classifier of the wrong width.
    """
    if block_rows < 1:
        raise InputError(f"block_rows must be positive, got {block_rows}")
    clf, inputs = _open_inputs(classifier, viral, other)
    if not sum(inp.n_rows for inp in inputs):
        raise InputError("the given embeddings files hold no frames")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    _score_all(clf, inputs, block_rows, out / SCORES_TSV)
    levels, curves = _levels(inputs)

    counts: dict[str, dict[str, int]] = {"frames": {}, "chunks": {}}
    for label, name in CLASS_NAMES.items():
        counts["frames"][name] = sum(inp.n_rows for inp in inputs if inp.label == label)
        counts["chunks"][name] = sum(inp.n_chunks for inp in inputs if inp.label == label)
    result: dict[str, Any] = {
        "classifier": {"path": str(classifier), "sha256": clf.sha256},
        "files": [{"path": inp.path, "label": inp.label, "class": CLASS_NAMES[inp.label],
                   "sha256": inp.sha256, "n_frames": inp.n_rows, "n_chunks": inp.n_chunks}
                  for inp in inputs],
        "chunk_size": inputs[0].header.chunk_size,
        "models": inputs[0].header.models,
        "counts": counts,
        "metrics": levels,
    }
    write_json_atomic(out / METRICS_JSON, result)
    write_atomic(out / METRICS_TSV, _metrics_tsv(levels))
    write_atomic(out / ROC_PNG, _roc_png(curves, levels))
    write_atomic(out / HISTOGRAM_PNG, _histogram_png(*curves["frame"]))

    def fmt(v: float | None) -> str:
        return NA if v is None else f"{v:.4f}"

    f, c = levels["frame"], levels["chunk"]
    log.info("evaluate: %d frames (%d virus, %d others), %d chunks; frame ROC-AUC %s MCC %s, "
             "chunk ROC-AUC %s MCC %s -> %s", f["n"], f["n_positive"], f["n_negative"], c["n"],
             fmt(f["roc_auc"]), fmt(f["mcc"]), fmt(c["roc_auc"]), fmt(c["mcc"]), out)
    return result
