"""Six-frame translation and frame choice with the original's semantics (REFERENCE.md section 3).

Vectorised over many chunks at once: every codon of a buffer is translated in one pass (numpy
and bytes.translate) on both strands, stop codons are located once, and a frame is checked for
stops by a binary search in those positions, so Python only touches the frames that are kept.

Semantics kept from the original: the chunk is upper-cased; a codon that is not one of the 64
ACGT codons is skipped (no `X`, no stop); a frame is kept iff its protein is non-empty and has no
`*`; its nucleotide is `s[f : f + 3p + 1]` (p = protein length) of the chunk or of its reverse
complement, where only A, C, G, T are complemented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from orchestrator.chunk.chunking import Chunk

FRAME_LABELS = ("F1", "F2", "F3", "R1", "R2", "R3")
COMPLEMENT = bytes.maketrans(b"ACGT", b"TGCA")
STOP = ord("*")
# NCBI translation table 1 (the standard code, what Biopython's Seq.translate uses by default),
# codons in ACGT x ACGT x ACGT order, '*' = stop. Written out because importing
# Bio.Data.CodonTable costs ~50 ms of start-up for these 64 letters.
STANDARD_CODE = "KNKNTTTTRSRSIIMIQHQHPPPPRRRRLLLLEDEDAAAAGGGGVVVV*Y*YSSSS*CWCLFLF"
INVALID = 0x54  # code of a base that is not A, C, G or T; see _codon_indices


@dataclass(frozen=True)
class Frame:
    """A kept frame: `frame_id` is the chunk ID + F1..R3; `nucleotide` is upper case."""

    frame_id: str
    nucleotide: str
    protein: str


def _tables() -> tuple[bytes, bytes, bytes]:
    """bytes.translate tables: base -> code, and codon index -> amino acid (0: skipped codon)."""
    code = bytearray([INVALID]) * 256
    for i, base in enumerate(b"ACGT"):
        code[base] = i
    forward, reverse = bytearray(256), bytearray(256)
    for a, b, c in product(range(4), repeat=3):
        antisense = 16 * (3 - c) + 4 * (3 - b) + (3 - a)
        forward[16 * a + 4 * b + c] = ord(STANDARD_CODE[16 * a + 4 * b + c])
        reverse[16 * a + 4 * b + c] = ord(STANDARD_CODE[antisense])
    return bytes(code), bytes(forward), bytes(reverse)


_CODE, _FORWARD, _REVERSE = _tables()


def _codon_indices(buf: bytes) -> bytes:
    """Codon index (0..63) at every position of buf; >= 64 where the codon is not all ACGT.

    Codes are A0 C1 G2 T3 and 0x54 for anything else. In uint8, (x<<4)|(y<<2)|z keeps bit 6 set
    whenever one of x, y, z is 0x54 (0x54<<4 = 0x40, 0x54<<2 = 0x50 mod 256) and never otherwise.
    """
    codes = np.frombuffer(buf.translate(_CODE), np.uint8)
    idx = codes[:-2] << 4
    idx |= codes[1:-1] << 2
    idx |= codes[2:]
    return idx.tobytes()


def _stop_keys(aa: bytes) -> tuple[np.ndarray, int]:
    """Sorted keys (p mod 3) * k + p // 3 of the stop positions p, and k."""
    stops = np.frombuffer(aa, np.uint8) == STOP
    k = len(aa) // 3 + 1
    return np.concatenate([np.flatnonzero(stops[r::3]) + r * k for r in range(3)]), k


def _stop_free(keys: tuple[np.ndarray, int], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """True where no stop lies at lo, lo+3, ..., hi (hi - lo is a multiple of 3)."""
    sorted_keys, k = keys
    base = (lo % 3) * k
    return (np.searchsorted(sorted_keys, base + hi // 3, "right")
            == np.searchsorted(sorted_keys, base + lo // 3, "left"))


def scan(buf: bytes, starts: Sequence[int], ends: Sequence[int]
         ) -> list[tuple[int, int, bytes, bytes]]:
    """Kept frames of the chunks buf[starts[i]:ends[i]] (buf already upper case).

    Returns (chunk index, frame 0..5 = F1..R3, nucleotide, protein) in chunk then frame order.
    """
    if len(buf) < 3 or not len(starts):
        return []
    idx = _codon_indices(buf)
    aa = idx.translate(_FORWARD)  # aa[p]: amino acid of buf[p:p+3]
    raa = idx.translate(_REVERSE)  # raa[p]: of the antisense codon read from p + 2 down to p
    s = np.asarray(starts, np.int64)
    e = np.asarray(ends, np.int64)
    keep = np.empty((len(s), 6), bool)
    fkeys, rkeys = _stop_keys(aa), _stop_keys(raa)
    for f in range(3):
        m = (e - s - f) // 3  # codons in frame f
        has = m > 0
        first = s + f
        keep[:, f] = has & _stop_free(fkeys, first, first + 3 * (m - 1))
        top = e - 3 - f  # reverse frames read the antisense codons downwards from the chunk end
        keep[:, 3 + f] = has & _stop_free(rkeys, top - 3 * (m - 1), top)
    chunk_of, frame_of = np.nonzero(keep)
    out = []
    for ci, fr, cs, ce in zip(chunk_of.tolist(), frame_of.tolist(), s[chunk_of].tolist(),
                              e[chunk_of].tolist(), strict=True):
        f = fr % 3
        m = (ce - cs - f) // 3
        if fr < 3:
            protein = aa[cs + f : cs + f + 3 * m : 3]
        else:
            top = ce - 3 - f
            protein = raa[top : top - 3 * m if top >= 3 * m else None : -3]
        if b"\0" in protein:
            protein = protein.translate(None, b"\0")
            if not protein:
                continue
        span = f + 3 * len(protein) + 1
        if span > ce - cs:
            span = ce - cs
        if fr < 3:
            nucleotide = buf[cs + f : cs + span]
        else:
            nucleotide = buf[ce - span : ce - f].translate(COMPLEMENT)[::-1]
        out.append((ci, fr, nucleotide, protein))
    return out


def kept_frames_batch(chunks: Sequence[Chunk]) -> list[list[Frame]]:
    """`kept_frames` for many chunks in one vectorised pass (much faster for short chunks)."""
    lengths = [len(c.seq) for c in chunks]
    ends = np.cumsum(lengths, dtype=np.int64)
    starts = ends - lengths
    result: list[list[Frame]] = [[] for _ in chunks]
    buf = b"".join([c.seq for c in chunks]).upper()  # one upper() for the group, not per chunk
    for ci, fr, nucleotide, protein in scan(buf, starts, ends):
        result[ci].append(Frame(chunks[ci].id + FRAME_LABELS[fr], nucleotide.decode("ascii"),
                                protein.decode("ascii")))
    return result


def kept_frames(chunk: Chunk) -> list[Frame]:
    """The chunk's kept frames in F1 F2 F3 R1 R2 R3 order."""
    return kept_frames_batch([chunk])[0]
