"""The embedding contract every backend honours (DESIGN.md "Model contract").

Two models, one string per row in, one float32 vector per row out: `dnabert_s` embeds a frame's
nucleotide slice, `esm2` its protein. Triton serves them under these names and tensor names; the
in-process backend runs the same encoders. Both give the pipeline the same interface.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

DNA_MODEL = "dnabert_s"
PROTEIN_MODEL = "esm2"
MODELS = (DNA_MODEL, PROTEIN_MODEL)
INPUT_NAME = "SEQUENCE"
OUTPUT_NAME = "EMBEDDING"

Embedded = tuple[np.ndarray, np.ndarray]  # a window's DNA and protein vectors, row per frame


class EmbeddingTicketLike(Protocol):
    """A submitted window: `result()` waits for its vectors, `done()` tells without waiting."""

    def result(self) -> Embedded: ...

    def done(self) -> bool: ...


class EmbeddingBackend(Protocol):
    """What predict and embed need from a backend (Triton client or in-process encoders)."""

    widths: tuple[int, int]

    def models_info(self) -> list[dict[str, Any]]: ...

    def submit(self, nucleotides: list[str], proteins: list[str]) -> EmbeddingTicketLike:
        """Start embedding; the returned ticket's `result()` waits for
        ([len(nucleotides), dna], [len(proteins), protein]). The lists may differ in length."""
        ...

    def stats(self) -> dict[str, dict[str, float]]: ...

    def close(self) -> None: ...
