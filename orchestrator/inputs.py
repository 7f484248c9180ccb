"""Every input format as one stream of records: read -> (this) -> chunk.

FASTA goes through our Biopython-exact parser (`fasta`), so the original tool's default path is
unchanged. FASTQ is read by dnaio and SAM/BAM/CRAM by pysam (htslib), both C parsers that stream.
GenBank (RefSeq genomes to train from) is read by Biopython; its records also carry their annotated
CDS (`Record.cds`, see `coding`), which training uses to keep only the frames of real genes.
The format is sniffed from the (decompressed) first bytes, never from the file name, and several
inputs of mixed formats are one sample.

Reads from a BAM keep their identity: secondary and supplementary alignments are skipped (they
repeat a read), a read of a pair gets `/1` or `/2` appended, and a read aligned to the reverse
strand is turned back to the orientation it was sequenced in, so a BAM gives the same predictions
as the FASTQ it was made from.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import sys
import warnings
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from encoders.validation import ALLOWED_TEXT, first_disallowed
from orchestrator.coding import cds_proteins
from orchestrator.compression import decompressed, decompression_errors, peek_decompressed
from orchestrator.errors import InputError
from orchestrator.fasta import BLOCK, Record, display_name, fasta_entries

if TYPE_CHECKING:
    from Bio.SeqRecord import SeqRecord

FORMATS = ("fasta", "fastq", "sam", "bam", "cram", "genbank")
SNIFF_BYTES = 1 << 16
MAX_DUPLICATES_NAMED = 5
_SAM_HEADER = re.compile(rb"@[A-Za-z][A-Za-z0-9]\t")
SAM_FIELDS = 11
# Fixed length bins for run.json (upper bounds, inclusive); 150 and 250 are the "short" limits
# of the two chunk sizes.
LENGTH_BIN_EDGES = (0, 50, 100, 150, 200, 250, 300, 400, 500, 1_000, 2_000, 5_000, 10_000,
                    100_000, 1_000_000)

# A FASTQ record is 4 lines (dnaio reads no other layout), so record n starts at line 4n + 1.
FASTQ_LINES = 4
# Biopython only warns when a GenBank sequence ends early (a cut-off download); we refuse it.
GENBANK_TRUNCATED = r"Premature end of file in sequence data|Expected sequence length"


@dataclass(frozen=True)
class InputFormat:
    """What an input holds: one of FORMATS, and its outer compression (None: plain)."""

    kind: str
    compression: str | None

    def describe(self) -> str:
        return self.kind + (f" ({self.compression})" if self.compression else "")


@dataclass
class LengthStats:
    """Record lengths in one pass and constant memory: extremes, mean, fixed bins, short ones."""

    short_length: int = 0  # records of 1..short_length bp count as short
    n: int = 0
    total: int = 0
    min: int | None = None
    max: int | None = None
    n_short: int = 0
    bins: list[int] = field(default_factory=lambda: [0] * (len(LENGTH_BIN_EDGES) + 1))

    def add(self, length: int) -> None:
        self.n += 1
        self.total += length
        self.min = length if self.min is None else min(self.min, length)
        self.max = length if self.max is None else max(self.max, length)
        if 0 < length <= self.short_length:
            self.n_short += 1
        self.bins[bisect_left(LENGTH_BIN_EDGES, length)] += 1  # bin i: edge[i-1] < length <= edge[i]

    @property
    def fraction_short(self) -> float:
        with_sequence = self.n - self.bins[0]
        return self.n_short / with_sequence if with_sequence else 0.0

    def to_dict(self) -> dict[str, Any]:
        lows = (0, *(e + 1 for e in LENGTH_BIN_EDGES))
        highs: tuple[int | None, ...] = (*LENGTH_BIN_EDGES, None)
        return {
            "n": self.n, "min": self.min, "max": self.max,
            "mean": round(self.total / self.n, 1) if self.n else None,
            "short_length": self.short_length, "n_short": self.n_short,
            "fraction_short": round(self.fraction_short, 4),
            "histogram": [{"lo": lo, "hi": hi, "count": c}
                          for lo, hi, c in zip(lows, highs, self.bins, strict=True) if c],
        }


@dataclass(frozen=True)
class InputSummary:
    """Counts, formats and raw-byte checksums of the inputs, from one streaming pass."""

    n_records: int
    n_bases: int
    sha256: dict[str, str] = field(default_factory=dict)  # input path -> hex digest of its bytes
    formats: dict[str, InputFormat] = field(default_factory=dict)
    lengths: LengthStats = field(default_factory=LengthStats)


@contextmanager
def _open_raw(path: str) -> Iterator[io.BufferedReader]:
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


def detect_format(path: str) -> InputFormat:
    """Sniff compression, then the container, from the first bytes (not the name); reads nothing.

    Stdin is peeked at, not consumed, so it can still be parsed afterwards.
    """
    name = display_name(path)
    with _open_raw(path) as raw:
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


Entry = tuple[str, bytes, str]  # (record ID, sequence, where: "FILE:LINE" or "FILE:record N")


def entries(path: str, fmt: InputFormat, sink: Callable[[bytes], None] | None = None
            ) -> Iterator[Entry]:
    """(id, sequence bytes, where) for each record of one input of format `fmt`."""
    name = display_name(path)
    if fmt.kind == "fasta":
        for rid, seq, line in fasta_entries(path, sink):
            yield rid, seq, f"{name}:{line}"
    elif fmt.kind == "fastq":
        yield from _fastq_entries(path, name)
    elif fmt.kind == "genbank":
        for entry, _record in _genbank_entries(path, name):
            yield entry
    else:
        yield from _alignment_entries(path, name)


def _fastq_entries(path: str, name: str) -> Iterator[Entry]:
    import dnaio

    n = 0  # records read so far
    with _open_raw(path) as raw:
        try:
            stream, _ = decompressed(raw)
            with dnaio.open(stream, fileformat="fastq") as reader:
                for rec in reader:
                    yield rec.id, rec.sequence.encode("ascii"), f"{name}:{FASTQ_LINES * n + 1}"
                    n += 1
        except dnaio.FastqFormatError as exc:
            line = exc.line + 1 if exc.line is not None else None
            where = f"{name}:{line}" if line else f"{name}: record {n + 1}"
            raise InputError(f"{where}: not valid FASTQ: {exc.message}") from None
        except decompression_errors() as exc:
            raise InputError(f"{name}: cannot read input: {exc}") from None


def _genbank_entries(path: str, name: str) -> Iterator[tuple[Entry, SeqRecord]]:
    """Each record's entry and its Biopython SeqRecord (for its features)."""
    from Bio import BiopythonParserWarning, SeqIO
    from Bio.Seq import UndefinedSequenceError

    n = 0
    with _open_raw(path) as raw:
        stream, _ = decompressed(raw)
        # latin-1 maps every byte to one character, so the sequence bytes come back unchanged
        # and a stray byte is reported by the character check, not as a decoding error
        text = io.TextIOWrapper(stream, encoding="latin-1")
        try:
            parser = SeqIO.parse(text, "genbank")
            while True:
                with warnings.catch_warnings():
                    warnings.filterwarnings("error", GENBANK_TRUNCATED, BiopythonParserWarning)
                    record = next(parser, None)
                if record is None:
                    break
                n += 1
                where = f"{name}: record {n}"
                try:
                    seq = str(record.seq).encode("latin-1")
                except UndefinedSequenceError:
                    raise InputError(f"{where}: record {record.id!r} has no sequence (a CONTIG/WGS master "
                                     "record?); download the full record with sequence") from None
                yield (record.id, seq, where), record
        except (ValueError, BiopythonParserWarning, *decompression_errors()) as exc:
            raise InputError(f"{name}: record {n + 1}: not valid GenBank: {exc}") from None
        finally:
            text.detach()  # closing the wrapper would close stdin
    if not n:
        raise InputError(f"{name}: not valid GenBank: no complete record after the LOCUS line")


def _alignment_entries(path: str, name: str) -> Iterator[Entry]:
    import pysam

    pysam.set_verbosity(0)  # htslib's own stderr lines; our error names the file and record
    n = 0
    try:
        with pysam.AlignmentFile(path, "r", check_sq=False) as aln:
            for seg in aln.fetch(until_eof=True):
                n += 1
                if seg.is_secondary or seg.is_supplementary:
                    continue
                rid = seg.query_name or ""
                if seg.is_paired:
                    rid += "/1" if seg.is_read1 else "/2" if seg.is_read2 else ""
                seq = seg.get_forward_sequence() or ""
                yield rid, seq.encode("ascii"), f"{name}: record {n}"
    except (OSError, ValueError) as exc:
        where = f"{name}: record {n + 1}" if n else name
        raise InputError(f"{where}: cannot read alignment file: {exc}") from None


def read_records(paths: Sequence[str], *, sink: Callable[[bytes], None] | None = None
                 ) -> Iterator[Record]:
    """All records of all inputs, in order; `sink` sees each raw byte of FASTA inputs.

    Records from GenBank carry their annotated CDS as `cds` (None for other formats).
    """
    for path in paths:
        fmt = detect_format(path)
        if fmt.kind == "genbank":
            for (rid, seq, where), record in _genbank_entries(path, display_name(path)):
                try:
                    cds = tuple(cds_proteins(record))
                except ValueError as exc:
                    raise InputError(f"{where}: record {rid!r}: {exc}") from None
                yield Record(rid, seq, cds)
        else:
            for rid, seq, _where in entries(path, fmt, sink):
                yield Record(rid, seq)


def file_sha256(path: str) -> str:
    """sha256 of a file's bytes, read in blocks (inputs, embeddings files)."""
    digest = hashlib.sha256()
    with _open_raw(path) as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def scan_inputs(paths: Sequence[str], *, short_length: int = 0) -> InputSummary:
    """Sniff formats, count records and bases, checksum each input, refuse bad IDs and letters.

    Sequences may hold what the DNA encoder accepts (`encoders.validation.ALLOWED_DNA`: letters,
    `-`, `.`, `*`); anything else is refused here, naming the place, before any model call.

    One pass per input. Memory stays small: only an 8-byte hash per ID is kept; the places of
    duplicates are found by a second pass that runs only when a hash repeats.
    """
    n_records = n_bases = 0
    digests: dict[str, str] = {}
    formats: dict[str, InputFormat] = {}
    lengths = LengthStats(short_length=short_length)
    hashes = array("q")
    for path in paths:
        fmt = formats[path] = detect_format(path)
        digest = hashlib.sha256()
        for rid, seq, where in entries(path, fmt, digest.update if fmt.kind == "fasta" else None):
            bad = first_disallowed("dnabert_s", seq)
            if bad is not None:
                raise InputError(f"{where}: record {rid!r}: character {bad[1]!r} at position "
                                 f"{bad[0] + 1} of its sequence is not allowed; sequences may "
                                 f"hold {ALLOWED_TEXT['dnabert_s']}")
            n_records += 1
            n_bases += len(seq)
            lengths.add(len(seq))
            hashes.append(hash(rid))
        digests[path] = digest.hexdigest() if fmt.kind == "fasta" else file_sha256(path)
    if len(set(hashes)) < len(hashes):
        _raise_duplicates(paths, formats, hashes)
    return InputSummary(n_records, n_bases, digests, formats, lengths)


def _raise_duplicates(paths: Sequence[str], formats: dict[str, InputFormat],
                      hashes: array) -> None:
    seen: set[int] = set()
    repeated = {h for h in hashes if h in seen or seen.add(h)}  # type: ignore[func-returns-value]
    where: dict[str, list[str]] = {}
    for path in paths:
        for rid, _seq, place in entries(path, formats[path]):
            if hash(rid) in repeated:
                where.setdefault(rid, []).append(place)
    dups = [(rid, places) for rid, places in where.items() if len(places) > 1]
    if not dups:
        return  # only a hash collision
    named = ", ".join(f"{rid} ({', '.join(places)})" for rid, places in dups[:MAX_DUPLICATES_NAMED])
    more = len(dups) - MAX_DUPLICATES_NAMED
    suffix = f" and {more} more" if more > 0 else ""
    raise InputError(f"duplicate record IDs: {named}{suffix}; record IDs must be unique "
                     "across all inputs")


def spool_stdin(dest_path: str) -> str:
    """Copy stdin to `dest_path` so that it can be read twice; returns `dest_path`."""
    with open(dest_path, "wb") as out:
        shutil.copyfileobj(sys.stdin.buffer, out, BLOCK)
    return dest_path
