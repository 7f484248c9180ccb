"""From frame probabilities to chunk scores: the original's labelling and max-over-frames rules.

A frame is virus iff p1 > p0 (a tie is others), as prediction_results.txt labels it. A chunk's
scores are the column maxima over its frames (max_score_0, max_score_1 may come from different
frames) and it is virus iff max_score_1 >= max_score_0 (a tie is virus), as the highest-score
file labels it. predict, evaluate and train all decide with these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def frame_is_virus(probs: np.ndarray) -> np.ndarray:
    """[n] bool from [n, 2] probabilities: p1 > p0."""
    return probs[:, 1] > probs[:, 0]


def chunk_is_virus(maxima: np.ndarray) -> np.ndarray:
    """[g] bool from [g, 2] chunk maxima: max_score_1 >= max_score_0."""
    return maxima[:, 1] >= maxima[:, 0]


def chunk_maxima(chunk_starts: Sequence[int], probs: np.ndarray) -> np.ndarray:
    """[g, 2] column maxima of probs over frame groups starting at chunk_starts (ascending, from 0).

    Frames come grouped by chunk, as predict's windows hold them (a chunk's kept frames are
    consecutive and a chunk never spans windows).
    """
    p = np.asarray(probs, dtype=np.float32)
    if not len(chunk_starts):
        return np.empty((0, 2), np.float32)
    return np.maximum.reduceat(p, np.asarray(chunk_starts, np.intp), axis=0)


def chunk_consensus(chunk_ids: Sequence[str], probs: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per chunk, the column maxima of its frames' [n, 2] probabilities (predict's consensus).

    Returns the chunk IDs in first-seen order and their [n_chunks, 2] float32 maxima
    (max_score_0, max_score_1). A chunk's frames need not be consecutive.
    """
    first: dict[str, int] = {}
    codes = np.fromiter((first.setdefault(c, len(first)) for c in chunk_ids), dtype=np.intp,
                        count=len(chunk_ids))
    order = np.argsort(codes, kind="stable")
    grouped = codes[order]
    starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]]) if grouped.size else grouped
    return list(first), chunk_maxima(starts, np.asarray(probs, dtype=np.float32)[order])


def chunk_score(maxima: np.ndarray) -> np.ndarray:
    """A chunk's ranking score: max_score_1 - max_score_0 (exact in float64), > 0 leans virus."""
    return maxima[:, 1].astype(np.float64) - maxima[:, 0].astype(np.float64)
