"""sha256 of a file's bytes, streamed: inputs and embeddings files are fingerprinted by it."""

from __future__ import annotations

import hashlib
import os
from typing import BinaryIO

BLOCK = 1 << 20


def stream_sha256(stream: BinaryIO) -> str:
    """Hex sha256 of what is left to read in `stream`, in 1 MiB blocks (constant memory)."""
    digest = hashlib.sha256()
    while block := stream.read(BLOCK):
        digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the file at `path`."""
    with open(path, "rb") as fh:
        return stream_sha256(fh)
