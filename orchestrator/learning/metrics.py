"""Binary classification metrics in plain numpy, so `evaluate` and `train` need no scikit-learn.

Every value equals scikit-learn's (accuracy_score, precision/recall/f1_score with zero_division=0,
matthews_corrcoef, roc_auc_score, average_precision_score, confusion_matrix) up to float rounding.
The ranking metrics are computed from integer counts per distinct score, so ties are grouped
exactly as scikit-learn groups them and ROC-AUC is one division of exact integers.
Label 1 is the positive class (virus); a higher score means more viral.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _labels(values: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(values)
    if a.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.size and not np.isin(a, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1")
    return a.astype(bool)


def _scores(values: np.ndarray, n: int) -> np.ndarray:
    s = np.asarray(values, dtype=np.float64)
    if s.shape != (n,):
        raise ValueError(f"score must have shape ({n},), got {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("score holds NaN or infinite values")
    return s


def _ranked_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct score, highest score first.

    Entry k counts the samples whose score is >= the k-th highest distinct score, i.e. the
    confusion counts of the threshold "score >= that value" (scikit-learn's _binary_clf_curve).
    """
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s_sorted)), y_sorted.size - 1]  # last index of each tie
    tps = np.cumsum(y_sorted, dtype=np.int64)[ends]
    fps = (ends + 1) - tps
    return tps, fps


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) at every distinct threshold, starting at (0, 0) and ending at (1, 1), for plots.

    Raises ValueError when y_true holds only one class (the curve is undefined).
    """
    y = _labels(y_true, "y_true")
    s = _scores(score, y.size)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if not n_pos or not n_neg:
        raise ValueError("a ROC curve needs both classes in y_true")
    tps, fps = _ranked_counts(y, s)
    return np.r_[0.0, fps / n_neg], np.r_[0.0, tps / n_pos]


def _roc_auc(y: np.ndarray, s: np.ndarray, n_pos: int, n_neg: int) -> float | None:
    """Area under the ROC curve (trapezoids: a tie between classes counts one half), None when
    only one class is present."""
    if not n_pos or not n_neg:
        return None
    tps, fps = _ranked_counts(y, s)
    tps_prev = np.r_[0, tps[:-1]]
    fps_prev = np.r_[0, fps[:-1]]
    twice_area = int(((fps - fps_prev) * (tps + tps_prev)).sum())  # exact: int64 counts
    return twice_area / (2 * n_pos * n_neg)


def _average_precision(y: np.ndarray, s: np.ndarray, n_pos: int) -> float | None:
    """Sum over distinct thresholds of (recall gain) x precision, as average_precision_score;
    None when there are no positives (recall is undefined)."""
    if not n_pos:
        return None
    tps, fps = _ranked_counts(y, s)
    gain = np.diff(np.r_[0, tps])
    return float((gain * (tps / (tps + fps))).sum() / n_pos)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


def binary_metrics(y_true: np.ndarray, score: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Accuracy, precision, recall, F1, MCC, ROC-AUC, PR-AUC and the confusion matrix.

    y_true and y_pred hold 0/1 (1 = virus), score is any finite float (higher = more viral).
    Undefined cases, following scikit-learn where it defines them:
    precision (no predicted positive), recall (no true positive) and F1 (both) -> 0.0, as
    zero_division=0; MCC with a zero denominator (a row or column of the confusion matrix empty)
    -> 0.0; roc_auc with only one class in y_true -> None (scikit-learn raises); pr_auc with no
    positive in y_true -> None. Empty input raises ValueError. All values are plain Python
    numbers, ready for JSON.
    """
    y = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred")
    if p.shape != y.shape:
        raise ValueError(f"y_pred has {p.size} values but y_true has {y.size}")
    if not y.size:
        raise ValueError("no samples to evaluate")
    s = _scores(score, y.size)
    tp = int((y & p).sum())
    fp = int((~y & p).sum())
    fn = int((y & ~p).sum())
    tn = y.size - tp - fp - fn
    n_pos, n_neg = tp + fn, tn + fp
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)  # Python ints: no overflow
    return {
        "n": y.size,
        "n_positive": n_pos,
        "n_negative": n_neg,
        "accuracy": (tp + tn) / y.size,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "mcc": (tp * tn - fp * fn) / math.sqrt(den) if den else 0.0,
        "roc_auc": _roc_auc(y, s, n_pos, n_neg),
        "pr_auc": _average_precision(y, s, n_pos),
        "confusion": {"tn": tn, "fp": fp, "fn": fn, "tp": tp},
    }
