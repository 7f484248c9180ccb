"""Where input bytes come from: files, stdin ("-"), pipes; and how they are named in messages.

Predict and embed read their inputs twice (a scan, then the run), so stdin and pipes (FIFOs such
as `<(zcat x.gz)`, readable once) are first copied into the run's state folder.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from orchestrator.errors import InputError

BLOCK = 1 << 20
SNIFF_BYTES = 1 << 16
STDIN_SPOOL_NAME = "stdin.spool"


def display_name(path: str) -> str:
    return "stdin" if path == "-" else path


@contextmanager
def open_raw(path: str) -> Iterator[io.BufferedReader]:
    """The input's bytes; stdin ("-") is used as is and left open."""
    if path == "-":
        yield sys.stdin.buffer  # type: ignore[misc]
        return
    try:
        fh = open(path, "rb", buffering=SNIFF_BYTES)  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"{display_name(path)}: cannot read input: {exc.strerror or exc}") from None
    with fh:
        yield fh


def spool_stdin(dest_path: str) -> str:
    """Copy stdin to `dest_path` so that it can be read twice; returns `dest_path`."""
    with open(dest_path, "wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, BLOCK)
    return dest_path


def spooled_inputs(inputs: Sequence[str], state: Path) -> list[str]:
    """Paths that can be read twice (scan, then run): stdin and pipes are copied into `state`."""
    read_paths = []
    for i, p in enumerate(inputs):
        if p == "-":
            state.mkdir(parents=True, exist_ok=True)
            read_paths.append(spool_stdin(str(state / STDIN_SPOOL_NAME)))
        elif not os.path.exists(p):
            raise InputError(f"{p}: no such file")
        elif not os.path.isfile(p):  # a FIFO such as <(zcat x.gz): readable once only
            state.mkdir(parents=True, exist_ok=True)
            dest = state / f"input{i}.spool"
            try:
                with open(p, "rb") as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out, BLOCK)
            except OSError as exc:
                raise InputError(f"{p}: cannot read ({exc.strerror})") from exc
            read_paths.append(str(dest))
        else:
            read_paths.append(p)
    return read_paths
