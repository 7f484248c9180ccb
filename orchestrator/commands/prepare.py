"""`orchestrator prepare`: the original's three intermediate files, byte for byte, fast.

Reads the inputs once, streaming; chunks and translates in batches of about a megabase (long
records are cut into runs of whole chunks) so memory stays flat; writes through temporary files
in the output directory that are renamed only when everything succeeded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from orchestrator.atomic import atomic_open
from orchestrator.chunk.chunking import chunk_bounds
from orchestrator.chunk.frames import FRAME_LABELS, scan
from orchestrator.read.formats import read_records

log = logging.getLogger(__name__)

BATCH_BASES = 1 << 20  # bases translated per numpy pass
WRAP = 60  # Biopython's FASTA line width
_LABELS = [b"%s\n" % label.encode() for label in FRAME_LABELS]

Piece = tuple[bytes, bytes, int, list[tuple[int, int]]]  # (record id, seq, first chunk number, bounds)


def input_stem(path: str) -> str:
    """First input's file name without `.gz`, then without `.fa`/`.fasta`/`.fna`; `-` is stdin."""
    if path == "-":
        return "stdin"
    name = Path(path).name
    for suffixes in ((".gz",), (".fa", ".fasta", ".fna")):
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    return name


def prepare_paths(inputs: Sequence[str], outdir: str | os.PathLike, chunk_size: int
                  ) -> tuple[Path, Path, Path]:
    """(chunked, identified nucleotide, identified protein) output paths, named as the original."""
    stem = input_stem(inputs[0])
    out = Path(outdir)
    return (out / f"{stem}_chunked{chunk_size}.fa", out / f"{stem}_identified_nucleotide.fa",
            out / f"{stem}_identified_protein.faa")


def _pieces(inputs: Sequence[str], chunk_size: int, stats: dict,
            sink: Callable[[bytes], None] | None) -> Iterator[Piece]:
    """Records as runs of at most a batch of whole chunks."""
    per_piece = max(1, BATCH_BASES // chunk_size)
    for record in read_records(inputs, sink=sink):
        stats["records"] += 1
        stats["bases"] += len(record.seq)
        bounds = chunk_bounds(len(record.seq), chunk_size)
        if not bounds:
            stats["empty_records"] += 1
        rid = record.id.encode()
        for i in range(0, len(bounds), per_piece):
            yield rid, record.seq, i + 1, bounds[i : i + per_piece]


def _batches(pieces: Iterator[Piece]) -> Iterator[list[Piece]]:
    batch: list[Piece] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += piece[3][-1][1] - piece[3][0][0]
        if size >= BATCH_BASES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _wrap(body: bytes) -> bytes:
    """Biopython's 60-column FASTA wrapping, with the final newline."""
    return b"".join([body[i : i + WRAP] + b"\n" for i in range(0, len(body), WRAP)])


def _wrap_many(bodies: bytes, size: int) -> list[bytes]:
    """`_wrap` of each `size`-long piece of `bodies`, done for all pieces at once in numpy."""
    rows = np.frombuffer(bodies, np.uint8).reshape(-1, size)
    lines = -(-size // WRAP)
    out = np.empty((len(rows), size + lines), np.uint8)
    for j in range(lines):
        width = min(WRAP, size - j * WRAP)
        out[:, j * (WRAP + 1) : j * (WRAP + 1) + width] = rows[:, j * WRAP : j * WRAP + width]
        out[:, j * (WRAP + 1) + width] = ord("\n")
    flat = out.tobytes()
    step = size + lines
    return [flat[i : i + step] for i in range(0, len(flat), step)]


def _write_batch(batch: list[Piece], chunk_size: int, chunked, nucleotide, protein
                 ) -> tuple[int, int]:
    """Write one batch to the three files; returns (chunks, kept frames)."""
    parts, starts, ends, ids = [], [], [], []
    offset = 0
    for rid, seq, first, bounds in batch:
        lo, hi = bounds[0][0], bounds[-1][1]
        parts.append(seq[lo:hi])
        for k, (s, e) in enumerate(bounds, first):
            ids.append(b">%s_chunk_%d" % (rid, k))
            starts.append(s - lo + offset)
            ends.append(e - lo + offset)
        offset += hi - lo
    text = b"".join(parts)
    full = [s for s, e in zip(starts, ends, strict=True) if e - s == chunk_size]
    wrapped = iter(_wrap_many(b"".join([text[s : s + chunk_size] for s in full]), chunk_size))
    out = []
    for chunk_id, s, e in zip(ids, starts, ends, strict=True):
        out += (chunk_id, b"\n", next(wrapped) if e - s == chunk_size else _wrap(text[s:e]))
    chunked.write(b"".join(out))
    nt_text, aa_text = [], []
    frames = scan(text.upper(), starts, ends)
    for ci, fr, nt, aa in frames:
        head = ids[ci] + _LABELS[fr]
        nt_text += (head, nt, b"\n")
        aa_text += (head, aa, b"\n")
    nucleotide.write(b"".join(nt_text))
    protein.write(b"".join(aa_text))
    return len(ids), len(frames)


def run_prepare(*, inputs: Sequence[str], outdir: str | os.PathLike, chunk_size: int,
                progress: bool = False) -> dict:
    """Write `<stem>_chunked<N>.fa`, `<stem>_identified_nucleotide.fa` and
    `<stem>_identified_protein.faa` to `outdir` (stem from the first input, `stdin` for `-`).

    Returns records, empty_records, bases, chunks, frames and seconds. No input records gives
    three empty files and a warning; bad input raises InputError and leaves no output file.
    """
    began = time.perf_counter()
    finals = prepare_paths(inputs, outdir, chunk_size)
    Path(outdir).mkdir(parents=True, exist_ok=True)
    stats = {"records": 0, "empty_records": 0, "chunks": 0, "frames": 0, "bases": 0}
    bar = None
    sink = None
    if progress:
        from tqdm import tqdm

        total = sum(os.path.getsize(p) for p in inputs if p != "-") if "-" not in inputs else None
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="prepare", leave=False)
        sink = lambda data: bar.update(len(data))  # noqa: E731
    try:
        # no fsync: these files resume nothing and are rewritten faster than a crash is noticed
        with ExitStack() as stack:
            chunked, nucleotide, protein = (stack.enter_context(atomic_open(p, "wb", durable=False))
                                            for p in finals)
            for batch in _batches(_pieces(inputs, chunk_size, stats, sink)):
                n_chunks, n_frames = _write_batch(batch, chunk_size, chunked, nucleotide, protein)
                stats["chunks"] += n_chunks
                stats["frames"] += n_frames
    finally:
        if bar is not None:
            bar.close()
    if not stats["records"]:
        log.warning("no FASTA records in %s; wrote empty output files", ", ".join(inputs))
    elif stats["empty_records"]:
        log.warning("%d record(s) with an empty sequence: no chunks", stats["empty_records"])
    stats["seconds"] = round(time.perf_counter() - began, 3)
    log.info("prepare: %(records)d records, %(bases)d bases, %(chunks)d chunks, "
             "%(frames)d kept frames in %(seconds).2f s", stats)
    return stats
