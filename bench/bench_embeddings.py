"""Embeddings kept, retrained and evaluated: what each step costs per frame, side by side.

With the real models' widths (DNABERT-S 768 + ESM-2 2,560 float32 = 13 KB per frame), on seeded
random vectors (real embeddings may compress differently):

- writing the embeddings file from window parts (`embeddings.assemble`: shuffle + deflate 1)
  vs the same file uncompressed, and vs the window parts alone (np.savez, the checkpoint);
- reading it back whole (`read_embeddings`, what train does) and in blocks (`iter_blocks`,
  what evaluate does);
- the classifier's layer 1 in float64 (now: a frame's score does not depend on its batch) vs
  float32 (before: it did), with the number of scores that change when the batch is cut
  differently;
- one training epoch on the CPU (the original recipe's batch of 32) and `evaluate`.

    python bench/bench_embeddings.py [--frames 20000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DNA_WIDTH, PROTEIN_WIDTH = 768, 2560
MODELS = [{"name": "dnabert_s", "version": "1", "weights_sha256": "bench", "width": DNA_WIDTH},
          {"name": "esm2", "version": "1", "weights_sha256": "bench", "width": PROTEIN_WIDTH}]
FRAME_BYTES = (DNA_WIDTH + PROTEIN_WIDTH) * 4


def _frame_ids(n: int, start: int) -> list[str]:
    return [f"r{(start + i) // 12}_chunk_{(start + i) // 2 % 6 + 1}F{(start + i) % 2 + 1}"
            for i in range(n)]


def _best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_file(frames: int, root: Path) -> dict[str, float]:
    import h5py

    from orchestrator.write import embeddings as emb

    rng = np.random.default_rng(0)
    window = 4096
    parts = []
    t0 = time.perf_counter()
    for w, start in enumerate(range(0, frames, window)):
        n = min(window, frames - start)
        part = root / f"w{w:06d}{emb.PART_SUFFIX}"
        emb.write_part(part, _frame_ids(n, start), rng.standard_normal((n, DNA_WIDTH), np.float32),
                       rng.standard_normal((n, PROTEIN_WIDTH), np.float32))
        parts.append(part)
    parts_s = time.perf_counter() - t0
    header = emb.EmbeddingsHeader(chunk_size=150, models=MODELS, label="bench")
    target = root / "bench.h5"
    t0 = time.perf_counter()
    emb.assemble(target, header, parts)
    compressed_s = time.perf_counter() - t0

    def h5py_write(path: Path, **filters) -> float:
        """The vectors written through h5py's own (single-threaded) filter pipeline."""
        t0 = time.perf_counter()
        with h5py.File(path, "w") as h5:
            for name, width in (("dna_embedding", DNA_WIDTH), ("protein_embedding", PROTEIN_WIDTH)):
                h5.create_dataset(name, shape=(0, width), maxshape=(None, width), dtype=np.float32,
                                  chunks=(emb.VECTOR_CHUNK_ROWS, width), **filters)
            for part in parts:
                _, dna, prot = emb.read_part(part)
                for name, values in (("dna_embedding", dna), ("protein_embedding", prot)):
                    ds = h5[name]
                    ds.resize(ds.shape[0] + len(values), axis=0)
                    ds[-len(values):] = values
        return time.perf_counter() - t0

    plain_s = h5py_write(root / "plain.h5")
    native_s = h5py_write(root / "native.h5", shuffle=True, compression="gzip",
                          compression_opts=emb.DEFLATE_LEVEL)

    read_s = _best_of(lambda: emb.read_embeddings(target), 2)
    blocks_s = _best_of(lambda: sum(len(b[0]) for b in emb.iter_blocks(target)), 2)
    size = target.stat().st_size
    return {
        "frames": frames,
        "parts_frames_per_s": frames / parts_s,
        "write_frames_per_s": frames / compressed_s,
        "write_MB_per_s": frames * FRAME_BYTES / compressed_s / 1e6,
        "write_uncompressed_frames_per_s": frames / plain_s,
        "write_h5py_filters_frames_per_s": frames / native_s,
        "bytes_per_frame": size / frames,
        "size_ratio": size / (frames * FRAME_BYTES),
        "read_whole_frames_per_s": frames / read_s,
        "read_blocks_frames_per_s": frames / blocks_s,
    }


def bench_classifier(frames: int) -> dict[str, float]:
    from export.demo import classifier_state
    from orchestrator.classify.classifier import Classifier

    state = classifier_state(DNA_WIDTH + PROTEIN_WIDTH, seed=1)
    clf = Classifier(state)
    x = np.random.default_rng(1).standard_normal((frames, DNA_WIDTH + PROTEIN_WIDTH), np.float32)
    w1t = np.ascontiguousarray(state["hidden_layer.weight"].T)

    def layer1_f32(rows: np.ndarray) -> np.ndarray:
        return rows @ w1t

    batch = 4096
    f64_s = _best_of(lambda: [clf.predict_proba(x[i:i + batch]) for i in range(0, frames, batch)])
    f32_s = _best_of(lambda: [layer1_f32(x[i:i + batch]) for i in range(0, frames, batch)])
    whole = clf.predict_proba(x)
    cut = np.concatenate([clf.predict_proba(x[i:i + 1000]) for i in range(0, frames, 1000)])
    from orchestrator.write.formats import format_scores

    scores = np.random.default_rng(1).random(400_000).astype(np.float32)
    format_s = _best_of(lambda: format_scores(scores))
    whole32 = layer1_f32(x)
    cut32 = np.concatenate([layer1_f32(x[i:i + 1000]) for i in range(0, frames, 1000)])
    return {
        "f64_us_per_frame": f64_s / frames * 1e6,
        "f32_layer1_us_per_frame": f32_s / frames * 1e6,
        "f64_over_f32": f64_s / f32_s,
        "format_scores_values_per_s": len(scores) / format_s,
        "f64_scores_changed_by_batching": int((whole != cut).any(axis=1).sum()),
        "f32_hidden_rows_changed_by_batching": int((whole32 != cut32).any(axis=1).sum()),
    }


def bench_train_evaluate(root: Path) -> dict[str, float]:
    import torch

    from export.demo import classifier_state
    from orchestrator.classify.classifier import save_classifier_safetensors
    from orchestrator.learning.evaluate import run_evaluate
    from orchestrator.learning.train import TrainConfig, train_classifier

    target = root / "bench.h5"
    from orchestrator.write.embeddings import read_embeddings

    data = read_embeddings(target)
    n = len(data.frame_ids)
    labels = (np.arange(n) // 12 % 2).astype(np.int64)
    idx = np.arange(n)
    t0 = time.perf_counter()
    train_classifier(data.features, labels, idx[: n * 4 // 5], idx[n * 4 // 5:],
                     TrainConfig(epochs=1))
    epoch_s = time.perf_counter() - t0
    clf = root / "clf.safetensors"
    save_classifier_safetensors(classifier_state(DNA_WIDTH + PROTEIN_WIDTH, seed=2), clf)
    t0 = time.perf_counter()
    run_evaluate(classifier=str(clf), viral=[str(target)], other=[], outdir=str(root / "eval"))
    evaluate_s = time.perf_counter() - t0
    return {"train_epoch_frames_per_s": n / epoch_s, "torch_threads": torch.get_num_threads(),
            "evaluate_frames_per_s": n / evaluate_s}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    args = parser.parse_args(argv if argv is not None else [])
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        root = Path(tmp)
        figures = {"file": bench_file(args.frames, root), "classifier": bench_classifier(args.frames),
                   "train_evaluate": bench_train_evaluate(root)}
    f, c, t = figures["file"], figures["classifier"], figures["train_evaluate"]
    print(f"embeddings file, {f['frames']} frames of {FRAME_BYTES} bytes:")
    print(f"  window parts (checkpoint)   {f['parts_frames_per_s']:10.0f} frames/s")
    print(f"  HDF5 shuffle+deflate (ours) {f['write_frames_per_s']:10.0f} frames/s "
          f"({f['write_MB_per_s']:.0f} MB/s), {f['bytes_per_frame']:.0f} B/frame "
          f"({f['size_ratio']:.2f} of raw)")
    print(f"  HDF5 same filters via h5py  {f['write_h5py_filters_frames_per_s']:10.0f} frames/s "
          f"(ours {f['write_frames_per_s'] / f['write_h5py_filters_frames_per_s']:.2f}x: chunks "
          f"compressed on {min(8, os.cpu_count() or 1)} threads)")
    print(f"  HDF5 uncompressed           {f['write_uncompressed_frames_per_s']:10.0f} frames/s "
          f"(ours at {f['write_frames_per_s'] / f['write_uncompressed_frames_per_s']:.2f}x)")
    print(f"  read whole / in blocks      {f['read_whole_frames_per_s']:10.0f} / "
          f"{f['read_blocks_frames_per_s']:.0f} frames/s")
    print(f"classifier: float64 layer 1 {c['f64_us_per_frame']:.1f} us/frame vs float32 layer 1 "
          f"{c['f32_layer1_us_per_frame']:.1f} ({c['f64_over_f32']:.2f}x); rows changed by "
          f"cutting the batch differently: float64 {c['f64_scores_changed_by_batching']}, "
          f"float32 {c['f32_hidden_rows_changed_by_batching']} of {f['frames']}; scores formatted "
          f"{c['format_scores_values_per_s']:.0f} values/s")
    print(f"train: one epoch at {t['train_epoch_frames_per_s']:.0f} frames/s on "
          f"{t['torch_threads']} CPU threads; evaluate {t['evaluate_frames_per_s']:.0f} frames/s")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
