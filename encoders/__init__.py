"""The model math, written once: tokenise -> encode -> pool for DNABERT-S and ESM-2.

Imported by the Triton model.py files, by `export` and by the in-process backend. torch is
imported only when an encoder is loaded, so `encoders.batching`, `encoders.validation`,
`encoders.errors` and `encoders.repository` stay usable without it (the orchestrator imports the
first three).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from encoders.validation import ALLOWED, MAX_LENGTH, check_sequence, first_disallowed

if TYPE_CHECKING:
    from encoders.common import Embedder

KINDS = ("dnabert_s", "esm2")

__all__ = ["ALLOWED", "KINDS", "MAX_LENGTH", "check_sequence", "first_disallowed", "load_dnabert", "load_esm2",
           "load_embedder", "weights_sha256"]


def load_dnabert(model_dir: str | Path, device: str = "cpu", precision: str = "fp32",
                 token_budget: int | None = None) -> Embedder:
    """DNABERT-S from its published folder (config.json, pytorch_model.bin, tokenizer.json)."""
    from encoders.dnabert import load_dnabert as _load

    return _load(model_dir, device=device, precision=precision, token_budget=token_budget)


def load_esm2(weights: str | Path, device: str = "cpu", precision: str = "fp32",
              token_budget: int | None = None) -> Embedder:
    """ESM-2 from a fair-esm `esm2_*.pt` checkpoint or the folder holding it."""
    from encoders.esm2 import load_esm2 as _load

    return _load(weights, device=device, precision=precision, token_budget=token_budget)


def load_embedder(kind: str, weights_path: str | Path, device: str = "cpu",
                  precision: str = "fp32", token_budget: int | None = None,
                  compile: bool = False) -> Embedder:
    """Load the encoder named by a Triton model name (`dnabert_s` or `esm2`); `compile`:
    torch.compile it with bucketed shapes (config parameter `compile`, Embedder.compile)."""
    if kind == "dnabert_s":
        embedder = load_dnabert(weights_path, device, precision, token_budget)
    elif kind == "esm2":
        embedder = load_esm2(weights_path, device, precision, token_budget)
    else:
        raise ValueError(f"unknown encoder kind {kind!r}; expected one of {', '.join(KINDS)}")
    if compile:
        embedder.compile()
    return embedder


def weights_sha256(kind: str, weights_path: str | Path) -> str:
    """The checksum an Embedder of this kind reports, computed from the files alone (no model is built)."""
    from encoders.common import sha256_files

    path = Path(weights_path)
    if kind == "dnabert_s":
        from encoders.dnabert import weight_files

        return sha256_files(weight_files(path))
    if kind == "esm2":
        from encoders.esm2 import find_checkpoint

        return sha256_files([find_checkpoint(path)])
    raise ValueError(f"unknown encoder kind {kind!r}; expected one of {', '.join(KINDS)}")
