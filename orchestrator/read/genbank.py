"""GenBank input (RefSeq genomes to train from), read by Biopython, with each record's CDS.

The annotated protein-coding regions travel with the record (`Record.cds`): training keeps only
the frames of real genes (`orchestrator.chunk.coding`), the original's choice of training frames.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

from orchestrator.errors import InputError
from orchestrator.read.compression import decompressed, decompression_errors
from orchestrator.read.record import CodingRegion, Entry
from orchestrator.read.sources import open_raw

if TYPE_CHECKING:
    from Bio.Seq import Seq
    from Bio.SeqFeature import SeqFeature
    from Bio.SeqRecord import SeqRecord

# Biopython only warns when a GenBank sequence ends early (a cut-off download); we refuse it.
GENBANK_TRUNCATED = r"Premature end of file in sequence data|Expected sequence length"
PSEUDO_QUALIFIERS = ("pseudo", "pseudogene")  # no protein made: their "translation" is not a gene


def _translation(feature: SeqFeature, nucleotides: Seq) -> str:
    """The feature's protein when it has no /translation: its /codon_start and /transl_table kept."""
    qualifiers = feature.qualifiers
    try:
        offset = int(qualifiers.get("codon_start", ["1"])[0]) - 1
        table = int(qualifiers.get("transl_table", ["1"])[0])
        coding = nucleotides[offset:]
        coding = coding[: len(coding) - len(coding) % 3]  # no partial-codon warning
        return str(coding.translate(table=table, cds=False)).removesuffix("*")
    except (ValueError, KeyError) as exc:  # KeyError: no such genetic code
        raise ValueError(f"CDS at {feature.location}: cannot translate it ({exc!r}); check its "
                         "/codon_start and /transl_table") from None


def cds_proteins(record: SeqRecord) -> list[CodingRegion]:
    """The record's protein-coding CDS features with their proteins, in feature-table order.

    The /translation qualifier is authoritative (it knows alternative starts, slippage, selenocysteine);
    without one the extracted sequence is translated. Pseudogenes and features that point into other
    records are skipped. Raises ValueError for a CDS that cannot be translated.
    """
    regions = []
    for feature in record.features:
        if feature.type != "CDS" or feature.location is None:
            continue
        if any(q in feature.qualifiers for q in PSEUDO_QUALIFIERS):
            continue
        try:
            nucleotides = feature.extract(record.seq)
        except ValueError:  # a part on another record, e.g. join(AB012345.1:1..50,10..90)
            continue
        translation = feature.qualifiers.get("translation")
        protein = translation[0] if translation else _translation(feature, nucleotides)
        location = feature.location
        regions.append(CodingRegion(int(location.start), int(location.end), location.strand, protein))
    return regions


def genbank_entries(path: str, name: str) -> Iterator[tuple[Entry, SeqRecord]]:
    """Each record's entry and its Biopython SeqRecord (for its features)."""
    from Bio import BiopythonParserWarning, SeqIO
    from Bio.Seq import UndefinedSequenceError

    n = 0
    with open_raw(path) as raw:
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

