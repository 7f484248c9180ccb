"""The embeddings file: every kept frame's DNABERT-S and ESM-2 vectors, in HDF5.

Written by `orchestrator embed` and `predict --save-embeddings`; read by `train` and `evaluate`
(and by any HDF5 reader: h5py, R's rhdf5, HDFView). Layout, one row per kept frame in input order
(record -> chunk -> frame F1 F2 F3 R1 R2 R3), exactly the rows of prediction_results.txt:

    /frame_id            (n,)      UTF-8 strings, e.g. seq7_chunk_2R3
    /chunk_id            (n,)      UTF-8 strings, e.g. seq7_chunk_2
    /record_id           (n,)      UTF-8 strings, e.g. seq7
    /dna_embedding       (n, 768)  float32, DNABERT-S (attrs: model, weights_sha256)
    /protein_embedding   (n, 2560) float32, ESM-2 (attrs: model, weights_sha256)
    /label               (n,)      UTF-8 strings, only when a label was given
    file attrs: format, format_version, tool_version, chunk_size, n_frames, label, models (JSON),
                inputs (JSON: name + sha256 of each input), frame_filter

Datasets are chunked, deflate-compressed (with byte shuffle: portable to every HDF5 reader) and
resizable along rows, so a file can be appended to. Nothing time-dependent is stored, so the same
input and models give the same file byte for byte, resumed or not.

A run writes one part (.npz) per checkpointed window into its state folder; the HDF5 file is
assembled from the parts at the end, into a temporary file that is renamed into place. An HDF5
file interrupted mid-write can be unreadable; the parts never are (each is written atomically).
"""

from __future__ import annotations

import io
import json
import os
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator import __version__
from orchestrator.atomic import atomic_path, write_atomic
from orchestrator.errors import InputError

FORMAT = "virnucpro-embeddings"
FORMAT_VERSION = 1
PART_SUFFIX = ".emb.npz"

ID_DATASETS = ("frame_id", "chunk_id", "record_id")
DNA, PROTEIN, LABEL = "dna_embedding", "protein_embedding", "label"
# Rows per HDF5 chunk: a protein chunk is 64 x 2560 x 4 = 640 KiB, inside HDF5's default 1 MiB
# chunk cache, so reading rows in blocks decompresses each chunk once.
VECTOR_CHUNK_ROWS = 64
ID_CHUNK_ROWS = 4096
DEFLATE_LEVEL = 1  # float32 noise barely compresses; level 1 gets most of it at a fraction of the cost


def chunk_id_of(frame_id: str) -> str:
    """`seq7_chunk_2R3` -> `seq7_chunk_2` (the frame suffix is always 2 characters)."""
    return frame_id[:-2]


def record_id_of(chunk_id: str) -> str:
    """`seq7_chunk_2` -> `seq7`; the last `_chunk_` is the one chunking appended."""
    return chunk_id[: chunk_id.rindex("_chunk_")]


# --------------------------------------------------------------------------- window parts


def write_part(path: Path, frame_ids: Sequence[str], dna: np.ndarray, protein: np.ndarray) -> None:
    """One window's rows, atomically (the checkpoint's manifest is written after it)."""
    buf = io.BytesIO()
    np.savez(buf, frame_id=np.array(frame_ids, dtype=np.str_),
             dna=np.asarray(dna, dtype=np.float32), protein=np.asarray(protein, dtype=np.float32))
    write_atomic(path, buf.getvalue())


def read_part(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return z["frame_id"].tolist(), z["dna"], z["protein"]


# --------------------------------------------------------------------------- writing


@dataclass
class EmbeddingsHeader:
    """What the file says about where its vectors came from (file attributes)."""

    chunk_size: int
    models: list[dict[str, Any]]  # name, version, weights_sha256, width: DNA model first
    inputs: list[dict[str, str]] = field(default_factory=list)  # name, sha256
    label: str | None = None
    frame_filter: str = "stop-free"  # or "stop-free, in an annotated CDS"
    tool_version: str = ""


def _filtered_chunk(rows: np.ndarray) -> bytes:
    """One HDF5 chunk through the datasets' filter pipeline: byte shuffle, then deflate.

    HDF5's shuffle filter stores all first bytes of the chunk's elements, then all second bytes,
    and so on; its deflate filter is a zlib stream. zlib releases the GIL, so chunks compress on
    several cores at once.
    """
    shuffled = np.ascontiguousarray(rows, dtype=np.float32).view(np.uint8).reshape(-1, 4).T
    return zlib.compress(shuffled.tobytes(), DEFLATE_LEVEL)


class _VectorColumn:
    """A float32 dataset filled whole chunks at a time: compressed in parallel, written raw.

    Deflate is nearly all the cost of writing the file (~30-60 MB/s per core), so chunks are
    compressed by a thread pool and stored with write_direct_chunk, bypassing HDF5's own (single
    threaded) filters. The bytes are what HDF5 would write itself: any reader decodes them. The
    last chunk is padded with zeros, as HDF5 pads edge chunks; readers see the extent only.
    """

    def __init__(self, ds: Any, pool: ThreadPoolExecutor) -> None:
        self.ds = ds
        self.pool = pool
        self.width = ds.shape[1]
        self.written = 0  # rows stored in whole chunks
        self.pending = np.empty((0, self.width), dtype=np.float32)

    def append(self, rows: np.ndarray, end: int) -> None:
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"{self.ds.name}: rows of shape {rows.shape}, expected width {self.width}")
        self.ds.resize(end, axis=0)
        self.pending = np.concatenate([self.pending, rows]) if len(self.pending) else rows
        whole = len(self.pending) // VECTOR_CHUNK_ROWS * VECTOR_CHUNK_ROWS
        self._write(self.pending[:whole])
        self.pending = self.pending[whole:]

    def close(self) -> None:
        if len(self.pending):
            padded = np.zeros((VECTOR_CHUNK_ROWS, self.width), dtype=np.float32)
            padded[: len(self.pending)] = self.pending
            self._write(padded)
            self.pending = self.pending[:0]

    def _write(self, rows: np.ndarray) -> None:
        blocks = [rows[i:i + VECTOR_CHUNK_ROWS] for i in range(0, len(rows), VECTOR_CHUNK_ROWS)]
        for block, data in zip(blocks, self.pool.map(_filtered_chunk, blocks), strict=True):
            self.ds.id.write_direct_chunk((self.written, 0), data)
            self.written += len(block)


class EmbeddingsWriter:
    """Creates the datasets, appends blocks of rows; `close()` records the final count."""

    def __init__(self, path: str | Path, header: EmbeddingsHeader) -> None:
        import h5py

        if len(header.models) != 2:
            raise ValueError("an embeddings file needs exactly two models (DNA, protein)")
        self.path = Path(path)
        self.header = header
        self.n = 0
        self._pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
        self._vectors: list[_VectorColumn] = []
        self._h5 = h5py.File(self.path, "w", track_order=False)
        text = h5py.string_dtype("utf-8")
        names = list(ID_DATASETS) + ([LABEL] if header.label is not None else [])
        for name in names:
            self._h5.create_dataset(name, shape=(0,), maxshape=(None,), dtype=text,
                                    chunks=(ID_CHUNK_ROWS,), compression="gzip",
                                    compression_opts=DEFLATE_LEVEL, track_times=False)
        for name, model in zip((DNA, PROTEIN), header.models, strict=True):
            width = int(model["width"])
            ds = self._h5.create_dataset(
                name, shape=(0, width), maxshape=(None, width), dtype=np.float32,
                chunks=(VECTOR_CHUNK_ROWS, width), shuffle=True, compression="gzip",
                compression_opts=DEFLATE_LEVEL, track_times=False)
            ds.attrs["model"] = str(model.get("name", ""))
            ds.attrs["weights_sha256"] = str(model.get("weights_sha256") or "")
            self._vectors.append(_VectorColumn(ds, self._pool))
        attrs = self._h5.attrs
        attrs["format"] = FORMAT
        attrs["format_version"] = FORMAT_VERSION
        attrs["tool_version"] = header.tool_version
        attrs["chunk_size"] = int(header.chunk_size)
        attrs["label"] = header.label if header.label is not None else ""
        attrs["models"] = json.dumps(header.models, sort_keys=True)
        attrs["inputs"] = json.dumps(header.inputs, sort_keys=True)
        attrs["frame_filter"] = header.frame_filter
        attrs["n_frames"] = 0

    def append(self, frame_ids: Sequence[str], dna: np.ndarray, protein: np.ndarray) -> None:
        n = len(frame_ids)
        if dna.shape[0] != n or protein.shape[0] != n:
            raise ValueError(f"{n} frame IDs but {dna.shape[0]} DNA and {protein.shape[0]} "
                             "protein rows")
        if not n:
            return
        chunk_ids = [chunk_id_of(f) for f in frame_ids]
        columns: dict[str, list[str]] = {
            "frame_id": list(frame_ids), "chunk_id": chunk_ids,
            "record_id": [record_id_of(c) for c in chunk_ids],
        }
        if self.header.label is not None:
            columns[LABEL] = [self.header.label] * n
        end = self.n + n
        for name, values in columns.items():
            ds = self._h5[name]
            ds.resize(end, axis=0)
            ds[self.n:end] = np.asarray(values, dtype=object)
        for column, rows in zip(self._vectors, (dna, protein), strict=True):
            column.append(np.asarray(rows, dtype=np.float32), end)
        self.n = end

    def close(self) -> None:
        try:
            for column in self._vectors:
                column.close()
            self._h5.attrs["n_frames"] = self.n
        finally:
            self._h5.close()
            self._pool.shutdown()


def assemble(target: Path, header: EmbeddingsHeader, parts: Sequence[Path]) -> int:
    """Write the HDF5 file from the window parts, atomically; returns the number of rows."""
    with atomic_path(target) as tmp:
        writer = EmbeddingsWriter(tmp, header)
        try:
            for part in parts:
                writer.append(*read_part(part))
        finally:
            writer.close()
    return writer.n


# What the file records of each model (the run record holds more: instances, batch size, ...).
HEADER_MODEL_KEYS = ("name", "version", "weights_sha256", "width")


def header_for(chunk_size: int, models: list[dict[str, Any]], inputs: Sequence[str],
                      digests: Sequence[str], *, label: str | None = None,
                      frame_filter: str = "stop-free") -> EmbeddingsHeader:
    """What an embeddings file records about its vectors: models (DNA first), inputs, label."""
    return EmbeddingsHeader(
        chunk_size=chunk_size, models=[{k: m.get(k) for k in HEADER_MODEL_KEYS} for m in models],
        inputs=[{"name": Path(p).name if p != "-" else "-", "sha256": d}
                for p, d in zip(inputs, digests, strict=True)],
        label=label, frame_filter=frame_filter, tool_version=__version__)


# --------------------------------------------------------------------------- reading

# What must agree between files read together: vectors of other encoder weights (or another chunk
# size) are not comparable, even at the same width.
MODEL_KEYS = ("name", "width", "weights_sha256")


def check_compatible(path: str, header: EmbeddingsHeader, ref_path: str,
                     ref_header: EmbeddingsHeader) -> None:
    """Refuse (InputError naming both files) mixing `path` with `ref_path` in one train/evaluate."""
    if header.chunk_size != ref_header.chunk_size:
        raise InputError(f"{path}: chunk size {header.chunk_size}, but {ref_path} has "
                         f"{ref_header.chunk_size}; use embeddings of one chunk size together")
    if len(header.models) != len(ref_header.models):
        raise InputError(f"{path}: {len(header.models)} models, but {ref_path} has "
                         f"{len(ref_header.models)}")
    for role, model, ref in zip(("DNA", "protein"), header.models, ref_header.models, strict=False):
        diffs = [f"{k} {model.get(k)!r} vs {ref.get(k)!r}" for k in MODEL_KEYS
                 if str(model.get(k) or "") != str(ref.get(k) or "")]
        if diffs:
            raise InputError(f"{path}: made with another {role} model than {ref_path}: "
                             + ", ".join(diffs))


@dataclass
class Embeddings:
    """A whole embeddings file in memory (features = DNA then protein, as the classifier takes)."""

    path: str
    frame_ids: list[str]
    chunk_ids: list[str]
    record_ids: list[str]
    features: np.ndarray  # [n, dna_width + protein_width] float32
    chunk_size: int
    models: list[dict[str, Any]]
    label: str | None
    dna_width: int


def _open(path: str | Path) -> Any:
    import h5py

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        h5 = h5py.File(p, "r")
    except OSError as exc:
        raise InputError(f"{p}: not a readable HDF5 file ({exc})") from None
    if h5.attrs.get("format") != FORMAT:
        h5.close()
        raise InputError(f"{p}: not a VirNucPro embeddings file (made by `orchestrator embed` "
                         "or `predict --save-embeddings`)")
    version = int(h5.attrs.get("format_version", 0))
    if version != FORMAT_VERSION:
        h5.close()
        raise InputError(f"{p}: embeddings format version {version}; this tool reads "
                         f"version {FORMAT_VERSION}")
    return h5


def _strings(ds: Any, start: int = 0, stop: int | None = None) -> list[str]:
    return [s.decode("utf-8") for s in ds[start:stop]]


def _header(h5: Any) -> EmbeddingsHeader:
    attrs = h5.attrs
    return EmbeddingsHeader(
        chunk_size=int(attrs["chunk_size"]), models=json.loads(attrs["models"]),
        inputs=json.loads(attrs.get("inputs", "[]")), label=str(attrs.get("label", "")) or None,
        frame_filter=str(attrs.get("frame_filter", "")),
        tool_version=str(attrs.get("tool_version", "")))


def read_header(path: str | Path) -> tuple[EmbeddingsHeader, int]:
    """The file attributes and the number of rows, without reading any vectors."""
    with _open(path) as h5:
        return _header(h5), int(h5[DNA].shape[0])


def iter_blocks(path: str | Path, rows: int = 16384
                ) -> Iterator[tuple[list[str], list[str], np.ndarray]]:
    """(frame IDs, chunk IDs, features) in blocks of `rows`: bounded memory for any file size."""
    with _open(path) as h5:
        dna, prot = h5[DNA], h5[PROTEIN]
        n = dna.shape[0]
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            yield (_strings(h5["frame_id"], start, stop), _strings(h5["chunk_id"], start, stop),
                   np.concatenate([dna[start:stop], prot[start:stop]], axis=1))


def read_embeddings(path: str | Path) -> Embeddings:
    """The whole file: n x (dna + protein) x 4 bytes of memory (13 KB per frame for the real
    models)."""
    with _open(path) as h5:
        header = _header(h5)
        n = int(h5[DNA].shape[0])
        dna_width = int(h5[DNA].shape[1])
        features = np.empty((n, dna_width + int(h5[PROTEIN].shape[1])), dtype=np.float32)
        for start in range(0, n, 16384):  # in blocks: no second full-size copy
            stop = min(n, start + 16384)
            features[start:stop, :dna_width] = h5[DNA][start:stop]
            features[start:stop, dna_width:] = h5[PROTEIN][start:stop]
        return Embeddings(path=str(path), frame_ids=_strings(h5["frame_id"]),
                          chunk_ids=_strings(h5["chunk_id"]), record_ids=_strings(h5["record_id"]),
                          features=features, chunk_size=header.chunk_size, models=header.models,
                          label=header.label, dna_width=dna_width)


class RowReader:
    """Rows of an open embeddings file by position: a saved run's vectors, read window by window
    (re-classification), so memory stays one window whatever the file's size."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._h5 = _open(path)
        self.header = _header(self._h5)
        self.n = int(self._h5[DNA].shape[0])
        self.widths = (int(self._h5[DNA].shape[1]), int(self._h5[PROTEIN].shape[1]))

    def rows(self, start: int, stop: int) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(frame IDs, DNA vectors, protein vectors) of rows [start, stop)."""
        return (_strings(self._h5["frame_id"], start, stop), self._h5[DNA][start:stop],
                self._h5[PROTEIN][start:stop])

    def close(self) -> None:
        self._h5.close()
