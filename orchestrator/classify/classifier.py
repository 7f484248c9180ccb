"""The VirNucPro MLP classifier in numpy, loaded from the published files without running their code.

The published `.pth` files are read by the restricted unpickler (`unpickler`), `.safetensors` from
`orchestrator train` by safetensors; no torch is needed except to *write* the published format
(`save_classifier_pth`).

Model (REFERENCE.md section 5), eval mode:
    Linear(d -> h) -> BatchNorm1d(h, eps 1e-5, running stats) -> ReLU -> Dropout (no-op)
    -> Linear(h -> 2) -> softmax;  column 0 = p(others), column 1 = p(virus).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.classify.unpickler import read_torch_zip, refuse_non_zip
from orchestrator.errors import ClassifierError

BN_EPS = 1e-5

# State-dict keys of the original MLPClassifier, in its parameter order.
STATE_KEYS: tuple[str, ...] = (
    "hidden_layer.weight",
    "hidden_layer.bias",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "output_layer.weight",
    "output_layer.bias",
)
# Unused in eval mode, and some converters drop it; its absence is not an error.
OPTIONAL_KEYS = frozenset({"bn1.num_batches_tracked"})



# --------------------------------------------------------------------------- numerics


class Classifier:
    """Eval-mode MLP: one matmul chain over float32 features of width `input_width`."""

    def __init__(self, state: Mapping[str, Any], *, source: str = "<state dict>",
                 sha256: str = "", metadata: Mapping[str, str] | None = None) -> None:
        self.source = source
        self.sha256 = sha256
        # safetensors header metadata; `train` records the chunk size the model was trained on
        self.metadata: dict[str, str] = dict(metadata or {})
        self._state = _validated_state(state, source)
        w1 = self._state["hidden_layer.weight"]  # [h, d]
        self.input_width: int = int(w1.shape[1])
        self.hidden_width: int = int(w1.shape[0])
        # Layer 1 ([n, d] x [d, h]) is nearly all the work. It runs in float64: float32 BLAS sums
        # a row in an order that depends on how many rows share the call, so a frame's printed
        # score would change with the window size, and re-classifying stored embeddings would not
        # reproduce predict's scores. In float64 that order moves the result ~1e-16, far below
        # float32's last digit. Everything after it is O(n*h) and also float64; folding BN into
        # the weights would add its own rounding.
        self._w1t = np.ascontiguousarray(w1.T, dtype=np.float64)  # [d, h]
        f64 = {k: v.astype(np.float64) for k, v in self._state.items() if v.dtype == np.float32}
        scale = f64["bn1.weight"] / np.sqrt(f64["bn1.running_var"] + BN_EPS)  # [h]
        # (x W1^T + b1 - mean) * scale + beta  ==  (x W1^T) * scale + shift
        self._scale = scale
        self._shift = (f64["hidden_layer.bias"] - f64["bn1.running_mean"]) * scale + f64["bn1.bias"]
        self._w2t = np.ascontiguousarray(f64["output_layer.weight"].T)  # [h, 2]
        self._b2 = f64["output_layer.bias"]

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of the weights under the original key names."""
        return {k: v.copy() for k, v in self._state.items()}

    def check_widths(self, dna_width: int, protein_width: int) -> None:
        """Refuse embeddings whose concatenated width is not what the classifier was trained on."""
        if dna_width + protein_width != self.input_width:
            raise ClassifierError(
                f"{self.source}: classifier expects {self.input_width} features, but the encoders "
                f"give DNA {dna_width} + protein {protein_width} = {dna_width + protein_width}; "
                "use the classifier that matches these models"
            )

    def encoder_mismatch(self, models: list[dict[str, Any]]) -> str | None:
        """Why these encoders do not fit, or None: a classifier from `orchestrator train` names the
        encoder weights it learned from, and vectors of other weights (even of the same width) make
        its scores meaningless."""
        try:
            trained = {m["name"]: m.get("weights_sha256") for m in json.loads(self.metadata["models"])}
        except (KeyError, ValueError, TypeError):
            return None  # the published classifiers record nothing
        for model in models:
            want, have = trained.get(model.get("name")), model.get("weights_sha256")
            if want and have and want != have:
                return (f"{self.source} was trained on vectors of {model['name']} weights "
                        f"{want[:12]}, but these come from weights {have[:12]}; its scores are not "
                        "meaningful for other encoder weights")
        return None

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """[n, input_width] float32 -> [n, 2] float32 softmax probabilities (others, virus)."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.input_width:
            raise ClassifierError(
                f"{self.source}: features of shape {tuple(x.shape)} do not fit a classifier of "
                f"input width {self.input_width}"
            )
        # A row's scores must not depend on the rows it is computed with: predict's answer cache
        # stores them and serves them to later windows, and must give the bytes a fresh
        # computation gives. BLAS matrix products (dgemm) sum each output over the input width in
        # the same order whatever the number of rows, but a single row goes to the
        # matrix-vector routine (dgemv), which sums in another order: such a row is computed
        # twice over, as a two-row product. Tested bitwise over batch sizes and row positions.
        n = len(x)
        if n == 1:
            x = np.concatenate([x, x])
        h = x.astype(np.float64) @ self._w1t  # [n, h]
        h *= self._scale
        h += self._shift
        np.maximum(h, 0.0, out=h)
        logits = h @ self._w2t  # [n, 2]
        logits += self._b2
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits[:n].astype(np.float32)


def _validated_state(state: Mapping[str, Any], source: str) -> dict[str, np.ndarray]:
    """Check keys and shapes against the original module; return float32 arrays (plus the counter)."""
    arrays: dict[str, np.ndarray] = {}
    for key, value in state.items():
        if hasattr(value, "detach"):  # a torch tensor handed in by export code
            value = value.detach().cpu().numpy()
        arrays[str(key)] = np.asarray(value)
    missing = [k for k in STATE_KEYS if k not in arrays and k not in OPTIONAL_KEYS]
    unexpected = sorted(k for k in arrays if k not in STATE_KEYS)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append("missing keys: " + ", ".join(missing))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected))
        raise ClassifierError(
            f"{source}: not a VirNucPro MLPClassifier state ({'; '.join(parts)}); expected keys: "
            + ", ".join(STATE_KEYS)
        )
    w1 = arrays["hidden_layer.weight"]
    w2 = arrays["output_layer.weight"]
    if w1.ndim != 2 or w2.ndim != 2:
        raise ClassifierError(
            f"{source}: hidden_layer.weight and output_layer.weight must be matrices, got shapes "
            f"{w1.shape} and {w2.shape}"
        )
    hidden, width = w1.shape
    expected = {
        "hidden_layer.bias": (hidden,),
        "bn1.weight": (hidden,),
        "bn1.bias": (hidden,),
        "bn1.running_mean": (hidden,),
        "bn1.running_var": (hidden,),
        "output_layer.weight": (2, hidden),
        "output_layer.bias": (2,),
    }
    bad = [f"{k} {arrays[k].shape} (expected {shape})" for k, shape in expected.items()
           if arrays[k].shape != shape]
    if bad:
        raise ClassifierError(
            f"{source}: wrong tensor shapes for a {width}->{hidden}->2 classifier: " + "; ".join(bad)
        )
    out: dict[str, np.ndarray] = {}
    for key in STATE_KEYS:
        if key not in arrays:
            continue
        value = arrays[key]
        if key == "bn1.num_batches_tracked":
            out[key] = np.asarray(value, dtype=np.int64).reshape(())
            continue
        if value.dtype.kind not in "fiu":
            raise ClassifierError(f"{source}: {key} has non-numeric dtype {value.dtype}")
        value = np.ascontiguousarray(value, dtype=np.float32)
        if not np.isfinite(value).all():
            raise ClassifierError(f"{source}: {key} contains NaN or infinite values")
        out[key] = value
    if (out["bn1.running_var"] < 0).any():
        raise ClassifierError(f"{source}: bn1.running_var has negative entries")
    return out


# --------------------------------------------------------------------------- loading


def load_classifier(path: str | Path) -> Classifier:
    """Load `.pth` (torch zip of a whole module or a state dict) or `.safetensors`, executing nothing."""
    p = Path(path)
    try:
        blob = p.read_bytes()
    except OSError as exc:
        raise ClassifierError(f"{p}: cannot read classifier file: {exc.strerror or exc}") from None
    digest = hashlib.sha256(blob).hexdigest()
    metadata: dict[str, str] = {}
    if p.suffix == ".safetensors" or _looks_like_safetensors(blob):
        state = _read_safetensors(p, blob)
        metadata = _safetensors_metadata(blob)
    elif zipfile.is_zipfile(io.BytesIO(blob)):
        state = read_torch_zip(p, blob)
    else:
        refuse_non_zip(p, blob)
    return Classifier(state, source=str(p), sha256=digest, metadata=metadata)


def _safetensors_metadata(blob: bytes) -> dict[str, str]:
    """The header's __metadata__ (already validated by the reader); {} when absent."""
    n = int.from_bytes(blob[:8], "little")
    meta = json.loads(blob[8:8 + n]).get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def _looks_like_safetensors(blob: bytes) -> bool:
    """safetensors = u64 header length + JSON header starting with '{'."""
    if len(blob) < 10:
        return False
    n = int.from_bytes(blob[:8], "little")
    return 0 < n <= len(blob) - 8 and blob[8:9] == b"{"


def _read_safetensors(p: Path, blob: bytes) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        return dict(load(blob))
    except (SafetensorError, ValueError, TypeError) as exc:
        raise ClassifierError(f"{p}: not a readable safetensors file: {exc}") from None


# --------------------------------------------------------------------------- writing


def _as_numpy_state(state: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in state.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        out[key] = np.ascontiguousarray(value)
    return out


def save_classifier_safetensors(state: Mapping[str, Any], path: str | Path,
                                metadata: dict[str, str] | None = None) -> None:
    """Write the state under the original key names as .safetensors (no pickle at all).

    `metadata` goes into the file's header (string values only, as safetensors requires); `train`
    records there what the classifier was trained for, readable without loading any tensor.
    """
    from safetensors.numpy import save_file

    arrays = _validated_state(_as_numpy_state(state), str(path))
    arrays.setdefault("bn1.num_batches_tracked", np.zeros((), dtype=np.int64))
    save_file(arrays, str(path), metadata=metadata)


def save_classifier_pth(state: Mapping[str, Any], path: str | Path) -> None:
    """Write the published format: torch.save of a whole module recorded as __main__.MLPClassifier.

    Export uses this for demo classifiers so that they exercise exactly the loader path of the real
    `300_model.pth` / `500_model.pth`.
    """
    import torch
    from torch import nn

    arrays = _validated_state(_as_numpy_state(state), str(path))
    arrays.setdefault("bn1.num_batches_tracked", np.zeros((), dtype=np.int64))
    hidden, width = arrays["hidden_layer.weight"].shape

    class MLPClassifier(nn.Module):
        # Attribute names and order as in the original module, so the pickle matches it.
        def __init__(self, input_dim: int, hidden_dim: int, num_class: int) -> None:
            super().__init__()
            self.hidden_layer = nn.Linear(input_dim, hidden_dim)
            self.bn1 = nn.BatchNorm1d(hidden_dim)
            self.output_layer = nn.Linear(hidden_dim, num_class)
            self.dropout = nn.Dropout(0.5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.bn1(self.hidden_layer(x)))
            return self.output_layer(self.dropout(x))

    MLPClassifier.__module__ = "__main__"
    MLPClassifier.__qualname__ = "MLPClassifier"
    model = MLPClassifier(int(width), int(hidden), 2)
    model.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in arrays.items()}, strict=True)
    model.eval()

    # pickle checks that __main__.MLPClassifier resolves to this very class; expose it briefly.
    main = sys.modules["__main__"]
    missing = object()
    previous = getattr(main, "MLPClassifier", missing)
    main.MLPClassifier = MLPClassifier  # type: ignore[attr-defined]
    try:
        torch.save(model, str(path))
    finally:
        if previous is missing:
            del main.MLPClassifier  # type: ignore[attr-defined]
        else:
            main.MLPClassifier = previous  # type: ignore[attr-defined]
