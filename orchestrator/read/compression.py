"""Decompression chosen by the stream's first bytes, never by the file name.

Inputs arrive as `reads.fq.gz`, `contigs.fa.zst`, `data.txt` holding bzip2, or a pipe; the magic
numbers are the only reliable witness. Every reader (FASTA, FASTQ, SAM) opens its input through
`decompressed`, so all formats take the same four compressions.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import zlib
from typing import BinaryIO

# (magic, name); BGZF (bgzip, BAM) is gzip and is read by the gzip module as well.
MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
LONGEST_MAGIC = max(len(m) for m, _ in MAGIC)


def sniff_compression(head: bytes) -> str | None:
    """'gzip', 'bzip2', 'xz', 'zstd' or None (plain) from the first bytes of a stream."""
    for magic, name in MAGIC:
        if head.startswith(magic):
            return name
    return None


def peek_decompressed(stream: io.BufferedReader, size: int) -> tuple[bytes, str | None]:
    """Up to about `size` decompressed bytes from what `stream` has buffered, consuming nothing.

    Works on stdin too (a pipe cannot be rewound). A corrupt start gives b"" here; reading the
    stream for real then raises with the reason.
    """
    head = stream.peek(size)[:size]
    kind = sniff_compression(head)
    try:
        if kind is None:
            return head, None
        if kind == "gzip":
            return zlib.decompressobj(wbits=31).decompress(head, size), kind
        if kind == "bzip2":
            return bz2.BZ2Decompressor().decompress(head, size), kind
        if kind == "xz":
            return lzma.LZMADecompressor().decompress(head, size), kind
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(head)[:size], kind
    except (*decompression_errors(), ValueError):
        return b"", kind


def decompressed(stream: io.BufferedReader) -> tuple[BinaryIO, str | None]:
    """A reader of `stream`'s decompressed bytes and the compression found (None: as is).

    `stream` must support peek (io.BufferedReader); it is left open for the caller to close.
    """
    kind = sniff_compression(stream.peek(LONGEST_MAGIC)[:LONGEST_MAGIC])
    if kind is None:
        return stream, None
    if kind == "gzip":
        return gzip.GzipFile(fileobj=stream, mode="rb"), kind  # type: ignore[return-value]
    if kind == "bzip2":
        return bz2.BZ2File(stream, mode="rb"), kind  # type: ignore[return-value]
    if kind == "xz":
        return lzma.LZMAFile(stream, mode="rb"), kind  # type: ignore[return-value]
    return io.BufferedReader(_ZstdReader(stream), 1 << 20), kind  # type: ignore[return-value]


class _ZstdReader(io.RawIOBase):
    """Zstandard frames one after another (as `zstd -T0` writes them); a cut-off frame raises.

    zstandard's own stream_reader ends quietly on a truncated frame, which would lose records.
    """

    def __init__(self, source: io.BufferedReader) -> None:
        import zstandard

        super().__init__()
        self._source = source
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._dobj = self._new()
        self._in_frame = False  # bytes of an unfinished frame were fed
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._pending:
            data = self._source.read(1 << 20)
            if not data:
                if self._in_frame:
                    raise EOFError("compressed file ended before the end-of-stream marker "
                                   "(zstd stream truncated)")
                return 0
            while data:
                out = self._dobj.decompress(data)
                self._pending += out
                self._in_frame = not self._dobj.eof
                if not self._dobj.eof:
                    break
                data = self._dobj.unused_data
                self._dobj = self._new()
                self._in_frame = bool(data)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def decompression_errors() -> tuple[type[BaseException], ...]:
    """What a truncated or corrupt compressed stream raises while being read."""
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, lzma.LZMAError)
    try:
        import zstandard
    except ImportError:
        return errors
    return (*errors, zstandard.ZstdError)
