"""Sequencing reads: FASTQ by dnaio, SAM/BAM/CRAM by pysam (htslib); both C parsers that stream.

Reads from a BAM keep their identity: secondary and supplementary alignments are skipped (they
repeat a read), a read of a pair gets `/1` or `/2` appended, and a read aligned to the reverse
strand is turned back to the orientation it was sequenced in, so a BAM gives the same predictions
as the FASTQ it was made from.
"""

from __future__ import annotations

from collections.abc import Iterator

from orchestrator.errors import InputError
from orchestrator.read.compression import decompressed, decompression_errors
from orchestrator.read.record import Entry
from orchestrator.read.sources import open_raw

# A FASTQ record is 4 lines (dnaio reads no other layout), so record n starts at line 4n + 1.
FASTQ_LINES = 4


def fastq_entries(path: str, name: str) -> Iterator[Entry]:
    import dnaio

    n = 0  # records read so far
    with open_raw(path) as raw:
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



def alignment_entries(path: str, name: str) -> Iterator[Entry]:
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

