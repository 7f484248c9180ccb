"""The embeddings file format: round trip, determinism, HDF5-standard chunks, refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from orchestrator.errors import InputError
from orchestrator.write.embeddings import (
    VECTOR_CHUNK_ROWS,
    EmbeddingsHeader,
    EmbeddingsWriter,
    assemble,
    chunk_id_of,
    iter_blocks,
    read_embeddings,
    read_header,
    record_id_of,
    write_part,
)

MODELS = [{"name": "dnabert_s", "version": "1", "weights_sha256": "aa", "width": 6},
          {"name": "esm2", "version": "1", "weights_sha256": "bb", "width": 10}]


def _parts(root: Path, sizes: list[int], seed: int = 0) -> tuple[list[Path], list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    parts, ids, rows = [], [], []
    for w, n in enumerate(sizes):
        frame_ids = [f"rec_chunk_{len(ids) + i}_chunk_{i % 3 + 1}F{i % 2 + 1}" for i in range(n)]
        dna = rng.standard_normal((n, 6), dtype=np.float32)
        prot = rng.standard_normal((n, 10), dtype=np.float32)
        parts.append(root / f"w{w}.emb.npz")
        write_part(parts[-1], frame_ids, dna, prot)
        ids += frame_ids
        rows.append(np.concatenate([dna, prot], axis=1))
    return parts, ids, np.concatenate(rows)


def test_ids_are_derived_from_frame_ids() -> None:
    assert chunk_id_of("seq7_chunk_2R3") == "seq7_chunk_2"
    assert record_id_of("my_chunk_1_chunk_12") == "my_chunk_1"  # the last _chunk_ is ours


def test_round_trip_and_determinism(tmp_path: Path) -> None:
    sizes = [70, 1, 0, 130, 63]  # parts that straddle the 64-row HDF5 chunks
    parts, ids, features = _parts(tmp_path, sizes)
    header = EmbeddingsHeader(chunk_size=150, models=MODELS, label="viral",
                              inputs=[{"name": "a.fa", "sha256": "cc"}])
    assert assemble(tmp_path / "a.h5", header, parts) == sum(sizes)
    assert assemble(tmp_path / "b.h5", header, parts) == sum(sizes)
    digest = [hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.h5", "b.h5")]
    assert digest[0] == digest[1]  # nothing time-dependent is stored

    emb = read_embeddings(tmp_path / "a.h5")
    assert emb.frame_ids == ids
    assert emb.chunk_ids == [chunk_id_of(f) for f in ids]
    assert emb.record_ids == [record_id_of(chunk_id_of(f)) for f in ids]
    np.testing.assert_array_equal(emb.features, features)
    assert (emb.label, emb.chunk_size, emb.dna_width) == ("viral", 150, 6)
    got, n = read_header(tmp_path / "a.h5")
    assert n == sum(sizes) and got.models == MODELS and got.inputs == header.inputs
    blocks = list(iter_blocks(tmp_path / "a.h5", rows=50))
    assert [f for b in blocks for f in b[0]] == ids
    np.testing.assert_array_equal(np.concatenate([b[2] for b in blocks]), features)


def test_chunks_are_what_hdf5_itself_writes(tmp_path: Path) -> None:
    """Chunks compressed in parallel equal HDF5's own shuffle + deflate output, edge chunk included."""
    parts, _, features = _parts(tmp_path, [100, 50])
    assemble(tmp_path / "a.h5", EmbeddingsHeader(chunk_size=300, models=MODELS), parts)
    with h5py.File(tmp_path / "a.h5", "r") as ours, h5py.File(tmp_path / "ref.h5", "w") as ref:
        theirs = ref.create_dataset("p", data=features[:, 6:], chunks=(VECTOR_CHUNK_ROWS, 10),
                                    shuffle=True, compression="gzip", compression_opts=1)
        ds = ours["protein_embedding"]
        for row in range(0, 150, VECTOR_CHUNK_ROWS):
            assert ds.id.read_direct_chunk((row, 0)) == theirs.id.read_direct_chunk((row, 0))


def test_file_can_be_appended_to(tmp_path: Path) -> None:
    parts, _, features = _parts(tmp_path, [70])
    assemble(tmp_path / "a.h5", EmbeddingsHeader(chunk_size=300, models=MODELS), parts)
    extra = np.ones((5, 10), dtype=np.float32)
    with h5py.File(tmp_path / "a.h5", "a") as h5:
        ds = h5["protein_embedding"]
        ds.resize(75, axis=0)
        ds[70:] = extra
    with h5py.File(tmp_path / "a.h5", "r") as h5:
        np.testing.assert_array_equal(h5["protein_embedding"][:70], features[:, 6:])
        np.testing.assert_array_equal(h5["protein_embedding"][70:], extra)


def test_writer_refuses_rows_of_the_wrong_width(tmp_path: Path) -> None:
    writer = EmbeddingsWriter(tmp_path / "a.h5", EmbeddingsHeader(chunk_size=300, models=MODELS))
    with pytest.raises(ValueError, match="width"):
        writer.append(["r_chunk_1F1"], np.zeros((1, 6), np.float32), np.zeros((1, 9), np.float32))
    writer.close()


def test_readers_refuse_other_files(tmp_path: Path) -> None:
    (tmp_path / "text.h5").write_text("not hdf5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = [1, 2]
    parts, _, _ = _parts(tmp_path, [3])
    assemble(tmp_path / "future.h5", EmbeddingsHeader(chunk_size=300, models=MODELS), parts)
    with h5py.File(tmp_path / "future.h5", "a") as h5:
        h5.attrs["format_version"] = 99
    cases = {"missing.h5": "no such file", "text.h5": "not a readable HDF5 file",
             "other.h5": "not a VirNucPro embeddings file", "future.h5": "format version 99"}
    for name, message in cases.items():
        with pytest.raises(InputError, match=message):
            read_embeddings(tmp_path / name)
