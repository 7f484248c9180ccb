"""Baseline for bench_prepare: the original VirNucPro preprocessing approach, restated.

Same algorithm and libraries as the original's `split_fasta_chunk` + `make_predictdata` (Biopython
parse, SeqRecord slicing and one `SeqIO.write` per chunk, the chunked file parsed back whole, a
per-codon dictionary lookup in a Python loop for each of six frames, frames chosen as the
original does). Written for this benchmark; usage: original_prepare.py INPUT OUTDIR CHUNK_SIZE.
"""

from __future__ import annotations

import os
import sys

from Bio import SeqIO


def split_into_chunks(input_path: str, chunked_path: str, size: int) -> None:
    with open(chunked_path, "w") as out:
        for record in SeqIO.parse(input_path, "fasta"):
            length = len(record.seq)
            n = -(-length // size)
            spare = n * size - length
            low = int(spare / n)
            extra = spare - low * (n - 1)
            overlaps = [low + 1] * extra + [low] * (n - 1 - extra) + [0]
            shift = 0  # overlaps can be longer than the chunk list: zip cuts it, as the original
            for start, overlap in zip(range(0, length, size), overlaps, strict=False):
                piece = record[start - shift : start - shift + size]
                piece.id = f"{record.id}_chunk_{start // size + 1}"
                piece.description = ""
                SeqIO.write(piece, out, "fasta")
                shift += overlap


def reverse_complement(seq: str) -> str:
    return seq.translate(str.maketrans("ACGTacgt", "TGCAtgca"))[::-1]


def six_frames(seq: str) -> list[str]:
    codons = {}
    for i, first in enumerate("TCAG"):
        for j, second in enumerate("TCAG"):
            for k, third in enumerate("TCAG"):
                codons[first + second + third] = (
                    "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"
                )[16 * i + 4 * j + k]

    def frame(s: str, offset: int) -> str:
        return "".join(codons.get(s[p : p + 3], "") for p in range(offset, len(s) - 2, 3))

    rc = reverse_complement(seq)
    return [frame(seq, f) for f in range(3)] + [frame(rc, f) for f in range(3)]


def chosen_frames(chunk_id: str, seq: str) -> list[tuple[str, str, str]]:
    chosen = []
    for number, protein in enumerate(six_frames(seq), start=1):
        if "*" in protein:
            continue
        span = 3 * len(protein)
        if number <= 3:
            nucleotide = seq[number - 1 : number + span]
            name = f"{chunk_id}F{number}"
        else:
            nucleotide = reverse_complement(seq)[number - 4 : number - 3 + span]
            name = f"{chunk_id}R{number - 3}"
        chosen.append((name, nucleotide, protein))
    return chosen


def main(input_path: str, outdir: str, size: int) -> None:
    stem = os.path.join(outdir, os.path.basename(input_path).split(".fa")[0])
    chunked = f"{stem}_chunked{size}.fa"
    split_into_chunks(input_path, chunked, size)
    with open(f"{stem}_identified_nucleotide.fa", "w") as dna_out, \
            open(f"{stem}_identified_protein.faa", "w") as protein_out:
        records = list(SeqIO.parse(chunked, "fasta"))
        for record in records:
            for name, nucleotide, protein in chosen_frames(record.id, str(record.seq).upper()):
                if protein != "":
                    dna_out.write(f">{name}\n")
                    dna_out.write(f"{nucleotide}\n")
                    protein_out.write(f">{name}\n")
                    protein_out.write(f"{protein}\n")


if __name__ == "__main__":
    os.makedirs(sys.argv[2], exist_ok=True)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
