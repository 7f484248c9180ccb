"""`orchestrator prepare`: the original's three intermediate files, byte for byte, fast.

Reads the inputs once, streaming; chunks and translates in batches of about a megabase (long
records are cut into runs of whole chunks) so memory stays flat; writes through temporary files
in the output directory that are renamed only when everything succeeded.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from orchestrator.chunking import chunk_bounds
from orchestrator.fasta import read_records
from orchestrator.frames import FRAME_LABELS, scan

log = logging.getLogger(__name__)

BATCH_BASES = 1 << 20  # bases translated per numpy pass
WRAP = 60  # Biopython's FASTA line width
_LABELS = [label.encode() for label in FRAME_LABELS]

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


def _pieces(inputs: Sequence[str], chunk_size: int, stats: dict, sink) -> Iterator[Piece]:
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
    if len(body) <= WRAP:
        return body
    return b"\n".join([body[i : i + WRAP] for i in range(0, len(body), WRAP)])


def _write_batch(batch: list[Piece], chunked, nucleotide, protein) -> tuple[int, int]:
    """Write one batch to the three files; returns (chunks, kept frames)."""
    upper, starts, ends, ids, text = [], [], [], [], []
    offset = 0
    for rid, seq, first, bounds in batch:
        lo, hi = bounds[0][0], bounds[-1][1]
        upper.append(seq[lo:hi].upper())
        for k, (s, e) in enumerate(bounds, first):
            chunk_id = b"%s_chunk_%d" % (rid, k)
            ids.append(chunk_id)
            starts.append(s - lo + offset)
            ends.append(e - lo + offset)
            text.append(b">%s\n%s\n" % (chunk_id, _wrap(seq[s:e])))
        offset += hi - lo
    chunked.write(b"".join(text))
    nt_text, aa_text = [], []
    frames = scan(b"".join(upper), starts, ends)
    for ci, fr, nt, aa in frames:
        head = b">%s%s\n" % (ids[ci], _LABELS[fr])
        nt_text += (head, nt, b"\n")
        aa_text += (head, aa, b"\n")
    nucleotide.write(b"".join(nt_text))
    protein.write(b"".join(aa_text))
    return len(ids), len(frames)


def run_prepare(*, inputs: Sequence[str], outdir: str | os.PathLike, chunk_size: int,
                progress: bool = False) -> dict:
    """Write `<stem>_chunked<N>.fa`, `<stem>_identified_nucleotide.fa` and
    `<stem>_identified_protein.faa` to `outdir`; returns counts and seconds."""
    began = time.perf_counter()
    finals = prepare_paths(inputs, outdir, chunk_size)
    Path(outdir).mkdir(parents=True, exist_ok=True)
    temps = [p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in finals]
    stats = {"records": 0, "empty_records": 0, "chunks": 0, "frames": 0, "bases": 0}
    bar = None
    sink = None
    if progress:
        from tqdm import tqdm

        total = sum(os.path.getsize(p) for p in inputs if p != "-") if "-" not in inputs else None
        bar = tqdm(total=total, unit="B", unit_scale=True, desc="prepare", leave=False)
        sink = lambda data: bar.update(len(data))  # noqa: E731
    try:
        with open(temps[0], "wb") as chunked, open(temps[1], "wb") as nucleotide, \
                open(temps[2], "wb") as protein:
            for batch in _batches(_pieces(inputs, chunk_size, stats, sink)):
                n_chunks, n_frames = _write_batch(batch, chunked, nucleotide, protein)
                stats["chunks"] += n_chunks
                stats["frames"] += n_frames
        for temp, final in zip(temps, finals, strict=True):
            os.replace(temp, final)
    finally:
        if bar is not None:
            bar.close()
        for temp in temps:
            temp.unlink(missing_ok=True)
    if not stats["records"]:
        log.warning("no FASTA records in %s; wrote empty output files", ", ".join(inputs))
    elif stats["empty_records"]:
        log.warning("%d record(s) with an empty sequence: no chunks", stats["empty_records"])
    stats["seconds"] = round(time.perf_counter() - began, 3)
    log.info("prepare: %(records)d records, %(bases)d bases, %(chunks)d chunks, "
             "%(frames)d kept frames in %(seconds).2f s", stats)
    return stats
