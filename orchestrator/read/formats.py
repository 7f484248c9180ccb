"""Every input format as one stream of records: read -> (this) -> chunk.

FASTA goes through our Biopython-exact parser (`fasta`), so the original tool's default path is
unchanged. FASTQ (dnaio) and SAM/BAM/CRAM (pysam) are read by `reads`, GenBank by `genbank`
(its records also carry their annotated CDS). The format is sniffed from the (decompressed) first
bytes, never from the file name, and several inputs of mixed formats are one sample.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from orchestrator.errors import InputError
from orchestrator.read.compression import peek_decompressed
from orchestrator.read.fasta import fasta_entries
from orchestrator.read.genbank import cds_proteins, genbank_entries
from orchestrator.read.reads import alignment_entries, fastq_entries
from orchestrator.read.record import Entry, Record
from orchestrator.read.sources import SNIFF_BYTES, display_name, open_raw

FORMATS = ("fasta", "fastq", "sam", "bam", "cram", "genbank")
_SAM_HEADER = re.compile(rb"@[A-Za-z][A-Za-z0-9]\t")
SAM_FIELDS = 11


@dataclass(frozen=True)
class InputFormat:
    """What an input holds: one of FORMATS, and its outer compression (None: plain)."""

    kind: str
    compression: str | None

    def describe(self) -> str:
        return self.kind + (f" ({self.compression})" if self.compression else "")


def detect_format(path: str) -> InputFormat:
    """Sniff compression, then the container, from the first bytes (not the name); reads nothing.

    Stdin is peeked at, not consumed, so it can still be parsed afterwards.
    """
    name = display_name(path)
    with open_raw(path) as raw:
        if raw.peek(4)[:4] == b"CRAM":
            return InputFormat("cram", None)
        head, compression = peek_decompressed(raw, SNIFF_BYTES)
    if head.startswith(b"BAM\x01"):
        if path == "-":
            raise InputError("stdin holds BAM; give the file name instead of -")
        if compression != "gzip":
            raise InputError(f"{name}: a BAM must be BGZF-compressed as written by samtools; "
                             f"this one is wrapped in {compression or 'nothing'}")
        return InputFormat("bam", None)
    text = head.lstrip()
    if text.startswith(b"LOCUS "):
        kind = "genbank"
    elif text.startswith(b"@"):
        kind = "sam" if _SAM_HEADER.match(text) else "fastq"
    elif not text.startswith(b">") and head.split(b"\n", 1)[0].count(b"\t") >= SAM_FIELDS - 1:
        kind = "sam"  # a SAM file without header lines
    else:
        kind = "fasta"  # also what an unknown text gets: the FASTA parser names the bad line
    if kind in ("sam", "bam", "cram") and path == "-":
        raise InputError(f"stdin holds {kind.upper()}; give the file name instead of -")
    if kind == "sam" and compression not in (None, "gzip"):
        raise InputError(f"{name}: {compression}-compressed SAM is not supported; "
                         "use BAM, or plain or gzip-compressed SAM")
    return InputFormat(kind, compression)



def entries(path: str, fmt: InputFormat, sink: Callable[[bytes], None] | None = None
            ) -> Iterator[Entry]:
    """(id, sequence bytes, where) for each record of one input of format `fmt`."""
    name = display_name(path)
    if fmt.kind == "fasta":
        for rid, seq, line in fasta_entries(path, sink):
            yield rid, seq, f"{name}:{line}"
    elif fmt.kind == "fastq":
        yield from fastq_entries(path, name)
    elif fmt.kind == "genbank":
        for entry, _record in genbank_entries(path, name):
            yield entry
    else:
        yield from alignment_entries(path, name)



def read_records(paths: Sequence[str], *, sink: Callable[[bytes], None] | None = None
                 ) -> Iterator[Record]:
    """All records of all inputs, in order; `sink` sees each raw byte of FASTA inputs.

    Records from GenBank carry their annotated CDS as `cds` (None for other formats).
    """
    for path in paths:
        fmt = detect_format(path)
        if fmt.kind == "genbank":
            for (rid, seq, where), record in genbank_entries(path, display_name(path)):
                try:
                    cds = tuple(cds_proteins(record))
                except ValueError as exc:
                    raise InputError(f"{where}: record {rid!r}: {exc}") from None
                yield Record(rid, seq, cds)
        else:
            for rid, seq, _where in entries(path, fmt, sink):
                yield Record(rid, seq)
