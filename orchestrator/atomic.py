"""The one way every output is written: beside the target, then renamed into place.

A reader (or a crash) sees the old file or the complete new one, never a partial one. Every
writer of the project goes through `atomic_path` (files written by a library: HDF5,
safetensors) or `atomic_open` (files we write ourselves), so all outputs get the same file mode
(what `open()` would give under the process umask) and the same durability: the data and the
rename are fsynced unless `durable=False` is asked for, which only outputs no resume depends on
and that are cheap to redo (prepare's intermediate files) do.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is unsafe once threads run.
FILE_MODE = 0o666 & ~_read_umask()


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (not every file system lets a folder be opened or synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(target: str | os.PathLike[str], *, durable: bool = True) -> Iterator[Path]:
    """A temporary path beside `target` for the caller to write; renamed onto `target` when the
    block ends normally, removed when it raises."""
    final = Path(target)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)  # mkstemp makes 0600; match open()
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_folder(final.parent)


@contextmanager
def atomic_open(target: str | os.PathLike[str], mode: str = "w", *, durable: bool = True
                ) -> Iterator[IO[Any]]:
    """`open(target, mode)` ("w": UTF-8 text, newlines as written; "wb": bytes) with the
    write-aside-then-rename discipline of `atomic_path`."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes a new file: mode 'w' or 'wb', not {mode!r}")
    with atomic_path(target, durable=durable) as tmp:
        if mode == "w":
            fh: IO[Any] = open(tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115
        else:
            fh = open(tmp, "wb")  # noqa: SIM115
        with fh:
            yield fh


def write_atomic(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Replace `path` with `data` in one step (text as UTF-8)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data.encode("utf-8") if isinstance(data, str) else data)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """run.json and checkpoint records: indented, key order kept, trailing newline."""
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
