"""The VirNucPro MLP classifier in numpy, loaded from the published files without running their code.

The published `300_model.pth` / `500_model.pth` are whole pickled modules (`torch.save(model)`, class
recorded as `__main__.MLPClassifier`). `torch.load(weights_only=False)` would execute whatever such a
pickle names, so this module reads the torch zip archive itself: a restricted unpickler maps the few
globals a genuine file needs to inert stand-ins and refuses every other global before anything runs.
Tensors are rebuilt from the archive's raw storage files with numpy. No torch is needed except to
*write* the published format (`save_classifier_pth`).

Model (REFERENCE.md section 5), eval mode:
    Linear(d -> h) -> BatchNorm1d(h, eps 1e-5, running stats) -> ReLU -> Dropout (no-op)
    -> Linear(h -> 2) -> softmax;  column 0 = p(others), column 1 = p(virus).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import pickle
import re
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

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

_MAX_PICKLE_BYTES = 64 << 20  # data.pkl of a real classifier is ~2 KB


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
        h = x.astype(np.float64) @ self._w1t  # [n, h]
        h *= self._scale
        h += self._shift
        np.maximum(h, 0.0, out=h)
        logits = h @ self._w2t  # [n, 2]
        logits += self._b2
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        return logits.astype(np.float32)


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
        state = _read_torch_zip(p, blob)
    else:
        _refuse_non_zip(p, blob)
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


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _refuse_non_zip(p: Path, blob: bytes) -> NoReturn:
    """Explain why a non-zip file is refused; unpickling is restricted, so nothing in it runs.

    Any bytes are tried as a pickle (protocol 0 has no magic prefix) so that a hostile pickle is
    reported by the global it asks for.
    """
    not_classifier = (
        f"{p}: not a classifier file (expected a torch .pth zip archive or .safetensors)"
    )
    if not blob:
        raise ClassifierError(not_classifier)
    try:
        first = _SafeUnpickler(io.BytesIO(blob), _no_storage, str(p)).load()
    except ClassifierError:
        raise
    except Exception:  # not pickle data at all
        raise ClassifierError(not_classifier) from None
    if first == _LEGACY_MAGIC:
        raise ClassifierError(
            f"{p}: legacy (pre-1.6, non-zip) torch serialization is not supported; re-save it with "
            "torch>=1.6 (torch.save) or convert it to .safetensors"
        )
    raise ClassifierError(
        f"{p}: a bare pickle, not a torch .pth zip archive or .safetensors; refusing to load it"
    )


def _no_storage(pid: Any) -> Any:
    """Outside a zip archive there is no storage to resolve: treat the data as not a classifier."""
    raise ValueError("tensor storage reference outside a torch zip archive")


def _read_torch_zip(p: Path, blob: bytes) -> dict[str, np.ndarray]:
    return _state_from_object(unpickle_torch_zip(p, blob), p)


def unpickle_torch_zip(p: Path, blob: bytes) -> Any:
    """The object in a torch zip archive, tensors as numpy arrays, modules as inert stand-ins."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except zipfile.BadZipFile as exc:
        raise ClassifierError(f"{p}: damaged zip archive: {exc}") from None
    with zf:
        pkls = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ClassifierError(
                f"{p}: not a torch .pth archive (expected one <name>/data.pkl, found {len(pkls)})"
            )
        prefix = pkls[0][: -len("data.pkl")]
        info = zf.getinfo(pkls[0])
        if info.file_size > _MAX_PICKLE_BYTES:
            raise ClassifierError(f"{p}: data.pkl is implausibly large ({info.file_size} bytes)")
        big_endian = False
        if prefix + "byteorder" in zf.namelist():
            order = zf.read(prefix + "byteorder").decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise ClassifierError(f"{p}: unknown byteorder {order!r}")
            big_endian = order == "big"
        storages = _StorageReader(zf, prefix, big_endian, p)
        try:
            obj = _SafeUnpickler(io.BytesIO(zf.read(pkls[0])), storages, str(p)).load()
        except ClassifierError:
            raise
        except Exception as exc:  # malformed pickle: truncated, bad opcodes, bad arguments
            raise ClassifierError(f"{p}: unreadable torch pickle ({type(exc).__name__}: {exc})") from None
    return obj


def _state_from_object(obj: Any, p: Path) -> dict[str, np.ndarray]:
    """A whole module (stand-in tree) or a plain state dict -> flat {key: array}."""
    if isinstance(obj, _ModuleStub):
        if obj.torch_name != "__main__.MLPClassifier":
            raise ClassifierError(
                f"{p}: holds a {obj.torch_name} module, expected __main__.MLPClassifier"
            )
        state: dict[str, np.ndarray] = {}
        _collect(obj, "", state, p)
        return state
    if isinstance(obj, dict):
        bad = [str(k) for k, v in obj.items() if not isinstance(v, np.ndarray)]
        if bad:
            raise ClassifierError(f"{p}: state dict entries that are not tensors: {', '.join(bad)}")
        return {str(k): v for k, v in obj.items()}
    raise ClassifierError(f"{p}: holds a {type(obj).__name__}, not a classifier module or state dict")


def _collect(module: _ModuleStub, prefix: str, out: dict[str, np.ndarray], p: Path) -> None:
    """Flatten a module tree into state-dict keys the way nn.Module.state_dict names them."""
    attrs = module.__dict__
    non_persistent = attrs.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (attrs.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in non_persistent):
                continue
            if not isinstance(value, np.ndarray):
                raise ClassifierError(f"{p}: {prefix}{name} is not a tensor")
            out[prefix + name] = value
    for name, child in (attrs.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _ModuleStub):
            raise ClassifierError(f"{p}: submodule {prefix}{name} is not a torch module")
        _collect(child, f"{prefix}{name}.", out, p)


# --------------------------------------------------------------------------- restricted unpickler


class _ModuleStub:
    """Inert stand-in for an allowed nn.Module class: it only stores the pickled attributes."""

    torch_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0]
        if not isinstance(state, dict):
            raise ClassifierError(f"unexpected pickled state for {self.torch_name}")
        self.__dict__.update(state)


def _stub(qualified: str) -> type[_ModuleStub]:
    return type(qualified.rsplit(".", 1)[1], (_ModuleStub,), {"torch_name": qualified})


class _Inert:
    """Base of the stand-ins a pickle can reach: no __dict__, and BUILD cannot modify them."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise ClassifierError(f"pickle tries to modify {type(self).__name__}")


class _StorageType(_Inert):
    """Stand-in for torch.FloatStorage & co.: only carries the numpy dtype of the raw bytes."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str) -> None:
        self.name = name
        self.dtype = np.dtype(dtype)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise ClassifierError(f"torch.{self.name} may only appear as a storage reference")


class _Function(_Inert):
    """Stand-in for an allowed function: calls one of the safe rebuilders below."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


_STORAGE_TYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",  # widened to float32 after reading
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class _StorageReader:
    """persistent_load target: ('storage', type, key, location, numel) -> 1-D numpy array."""

    def __init__(self, zf: zipfile.ZipFile, prefix: str, big_endian: bool, p: Path) -> None:
        self._zf = zf
        self._prefix = prefix
        self._big = big_endian
        self._p = p
        self._cache: dict[str, np.ndarray] = {}

    def __call__(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise ClassifierError(f"{self._p}: unexpected persistent id {pid!r:.80}")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise ClassifierError(f"{self._p}: malformed storage reference {pid!r:.80}")
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise ClassifierError(f"{self._p}: malformed storage key {key!r:.40}")
        if key in self._cache:
            return self._cache[key]
        name = f"{self._prefix}data/{key}"
        dtype = stype.dtype.newbyteorder(">") if self._big else stype.dtype
        try:
            info = self._zf.getinfo(name)
        except KeyError:
            raise ClassifierError(f"{self._p}: storage file {name} is missing") from None
        if info.file_size < numel * dtype.itemsize:
            raise ClassifierError(f"{self._p}: storage file {name} is shorter than its {numel} items")
        raw = self._zf.read(name)[: numel * dtype.itemsize]
        arr = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
        if stype.name == "BFloat16Storage":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        self._cache[key] = arr
        return arr


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> np.ndarray:
    """torch._utils._rebuild_tensor_v2 stand-in: a strided view of the storage, bounds-checked."""
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise ClassifierError("tensor record without a storage")
    if not (isinstance(offset, int) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride)
            and all(isinstance(v, int) and v >= 0 for v in (offset, *size, *stride))):
        raise ClassifierError("malformed tensor record")
    if any(s == 0 for s in size):
        return np.zeros(size, dtype=storage.dtype)
    if math.prod(size) > storage.size:  # real tensors never outgrow their storage
        raise ClassifierError("tensor record is larger than its storage")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.size:
        raise ClassifierError("tensor record reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * storage.itemsize for s in stride),
        writeable=False,
    )
    return np.array(view)


def _rebuild_parameter(data: Any, *_rest: Any) -> np.ndarray:
    """torch._utils._rebuild_parameter(_with_state) stand-in: a parameter is just its data."""
    if not isinstance(data, np.ndarray):
        raise ClassifierError("parameter record without tensor data")
    return data


def _ordered_dict(*args: Any) -> OrderedDict:
    """collections.OrderedDict stand-in; hook dicts are always empty in a plain saved module."""
    return OrderedDict(*args[:1])


def _make_set(*args: Any) -> set:
    return set(*args[:1])


_MODULE_CLASSES = (
    "__main__.MLPClassifier",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.batchnorm.BatchNorm1d",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.dropout.Dropout",
)

_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _ordered_dict,
    ("__builtin__", "set"): _make_set,
    ("builtins", "set"): _make_set,
}


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """Exactly the globals `torch.save(model)` of the original module writes (checked with
    torch 2.x), each mapped to an inert stand-in. Built fresh for every load, so one file can never
    alter what the next one sees."""
    table: dict[tuple[str, str], Any] = {k: _Function(f) for k, f in _FUNCTIONS.items()}
    table.update({("torch", n): _StorageType(n, d) for n, d in _STORAGE_TYPES.items()})
    for qualified in _MODULE_CLASSES:
        module, name = qualified.rsplit(".", 1)
        table[(module, name)] = _stub(qualified)
    return table


class _SafeUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals; anything else is refused before it can be called."""

    def __init__(self, file: io.BytesIO, storages: Any, source: str) -> None:
        super().__init__(file)
        self._storages = storages
        self._source = source
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise ClassifierError(
                f"{self._source}: refusing to load classifier: its pickle asks for the forbidden "
                f"global {module}.{name} (a real classifier file only holds torch modules and "
                "tensors); nothing in the file was executed"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        return self._storages(pid)


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
