"""Streaming FASTA parser with Biopython's `SeqIO.parse(..., "fasta")` record semantics.

Works on bytes in 1 MiB blocks (no per-line or per-character Python), reads plain or compressed
files (gzip, bzip2, xz, zstd, sniffed from the bytes by `compression`). What matches Biopython:
ID = header up to the first whitespace (tab included), description dropped, sequence lines joined
with spaces, tabs and CR removed, blank lines ignored, `\\r\\n` and a lone `\\r` both end a line
(Python's universal newlines). What we add: leading blank lines are allowed, and bad input raises
`InputError("FILE:LINE: ...")` instead of a traceback. `orchestrator.read.formats` picks this parser for
FASTA and others for FASTQ/SAM/BAM/CRAM; the original tool's default path stays this one.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator

from orchestrator.errors import InputError
from orchestrator.read.compression import decompressed, decompression_errors
from orchestrator.read.sources import BLOCK, display_name

SEQ_WHITESPACE = b" \t\r\n"  # what Biopython removes from sequence lines


class _Tap(io.RawIOBase):
    """Raw reader that shows every byte read from the source to `sink` (checksum, progress)."""

    def __init__(self, source: io.BufferedIOBase | io.RawIOBase, sink: Callable[[bytes], None]):
        super().__init__()
        self._source = source
        self._sink = sink

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self._source.readinto(buffer)
        if n:
            self._sink(memoryview(buffer)[:n])
        return n or 0


def _ignore(_data: bytes) -> None:
    pass


def _blocks(path: str, sink: Callable[[bytes], None] | None) -> Iterator[bytes]:
    """Decompressed blocks of one input with universal newlines turned into `\\n`."""
    name = display_name(path)
    try:
        source = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"{name}: cannot read input: {exc.strerror or exc}") from None
    try:
        # the tap also keeps our reader from closing sys.stdin when it is collected
        buffered = io.BufferedReader(_Tap(source, sink or _ignore), BLOCK)
        stream, _kind = decompressed(buffered)
        carry_cr = False
        while True:
            block = stream.read(BLOCK)
            if not block:
                break
            if carry_cr:  # a CR that ended the previous block, possibly half of a CRLF
                block = b"\r" + block
            carry_cr = block.endswith(b"\r")
            if carry_cr:
                block = block[:-1]
            if b"\r" in block:
                block = block.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if block:
                yield block
        if carry_cr:
            yield b"\n"
        if sink:  # hash every raw byte, also any the decompressor did not need
            while buffered.read(BLOCK):
                pass
    except decompression_errors() as exc:
        raise InputError(f"{name}: cannot read input: {exc}") from None
    finally:
        if path != "-":
            source.close()


def fasta_entries(path: str, sink: Callable[[bytes], None] | None = None
             ) -> Iterator[tuple[str, bytes, int]]:
    """(id, sequence, header line number) for each record of one input.

    Each block is split at "\n>" in one C call; a record's text (header line, then sequence lines)
    is collected from the pieces and parsed when the next header or the end of input arrives.
    """
    name = display_name(path)
    current: list[bytes] = []  # text after the current record's '>' (before any: the preamble)
    start_line = 1  # line of that '>'
    in_record = False
    bol = True  # the next block starts a line
    lines = 0  # newlines in earlier blocks

    def parse(text: bytes) -> tuple[str, bytes, int]:
        if not in_record:  # text before the first header: only blank lines allowed
            offset = len(text) - len(text.lstrip())
            if offset < len(text):
                line = start_line + text.count(b"\n", 0, offset)
                raise InputError(f"{name}:{line}: not FASTA (expected a '>' header line)")
            return "", b"", 0
        header, _, body = text.partition(b"\n")
        try:
            words = header.decode("utf-8").split(None, 1)
        except UnicodeDecodeError:
            raise InputError(f"{name}:{start_line}: header is not UTF-8 text") from None
        seq = body.translate(None, SEQ_WHITESPACE)
        if not seq.isascii():
            raise InputError(f"{name}:{start_line}: sequence holds non-ASCII bytes; "
                             "is this a text FASTA file?")
        return (words[0] if words else ""), seq, start_line

    for block in _blocks(path, sink):
        nul = block.find(b"\0")  # text never holds NUL; binary files nearly always do
        if nul >= 0:
            line = lines + block.count(b"\n", 0, nul) + 1
            raise InputError(f"{name}:{line}: binary content, not a text FASTA file")
        lines += block.count(b"\n")
        pieces = block.split(b"\n>")
        if bol and block[0] == 0x3E:  # a header right at the start of the block
            text = b"".join(current)
            entry = parse(text)
            if in_record:
                yield entry
            start_line += text.count(b"\n")  # text still ends with its newline
            current, in_record = [], True
            pieces[0] = pieces[0][1:]
        current.append(pieces[0])
        for piece in pieces[1:]:
            text = b"".join(current)
            entry = parse(text)
            if in_record:
                yield entry
            start_line += text.count(b"\n") + 1  # + the newline that split() removed
            current, in_record = [piece], True
        bol = block.endswith(b"\n")
    entry = parse(b"".join(current))
    if in_record:
        yield entry
