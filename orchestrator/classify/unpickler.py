"""Reading a torch `.pth` zip archive without running it: a restricted unpickler.

The published `300_model.pth` / `500_model.pth` are whole pickled modules (`torch.save(model)`,
class recorded as `__main__.MLPClassifier`). `torch.load(weights_only=False)` would execute
whatever such a pickle names, so the archive is read here: the few globals a genuine file needs
map to inert stand-ins, every other global is refused before anything runs, and tensors are
rebuilt from the archive's raw storage files with numpy (no torch needed).
"""

from __future__ import annotations

import io
import math
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from orchestrator.errors import ClassifierError

_MAX_PICKLE_BYTES = 64 << 20  # data.pkl of a real classifier is ~2 KB
MODULE_CLASS = "__main__.MLPClassifier"  # how the original recorded its classifier's class


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def refuse_non_zip(p: Path, blob: bytes) -> NoReturn:
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


def read_torch_zip(p: Path, blob: bytes) -> dict[str, np.ndarray]:
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
        if obj.torch_name != MODULE_CLASS:
            raise ClassifierError(f"{p}: holds a {obj.torch_name} module, expected {MODULE_CLASS}")
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
