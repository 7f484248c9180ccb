"""Token-budget batching: sort by length, cut into sub-batches whose padded size fits a budget.

Pure numpy so the orchestrator, the Triton model.py files and the in-process backend share it
without importing torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def token_budget_batches(
    lengths: Sequence[int] | np.ndarray, budget: int, max_rows: int | None = None
) -> list[np.ndarray]:
    """Group indices so that rows * longest_length <= budget per group (longest first).

    Sorting by length (descending, stable) keeps padding small; the first group holds the
    longest inputs so an out-of-memory error shows up on the first forward pass, not late.
    An input longer than the budget gets a group of its own. Every index appears exactly once.
    """
    if budget < 1:
        raise ValueError(f"token budget must be >= 1, got {budget}")
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    lens = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lens.size and lens.min() < 0:
        raise ValueError("lengths must be >= 0")
    order = np.argsort(-lens, kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    n = int(lens.size)
    while start < n:
        longest = max(int(lens[order[start]]), 1)
        rows = max(1, budget // longest)
        if max_rows is not None:
            rows = min(rows, max_rows)
        batches.append(order[start : start + rows])
        start += rows
    return batches
