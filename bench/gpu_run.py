"""The whole pipeline on one GPU in one call: real DNABERT-S and ESM-2 3B architectures (random
weights) served by Triton with configs/gpu.pbtxt, driven by `predict` on realistic inputs.

Prints one JSON: per input (150 bp reads with the 300 model, 500 bp chunks of 5 kb records with
the 500 model) end-to-end frames/s through `orchestrator predict`; per model tokens/s (over the
run's wall time, and over the model's own busy time), achieved TFLOP/s and its fraction of the
dense fp16 peak measured by a large matmul in the same run, the batch sizes Triton formed, and
GPU memory in use (Triton's metrics). `--tiny` runs the same path on CPU with small models and
configs/config.pbtxt (for CI), where the GPU-only figures are null.

Run through `bench/gpu_run.sh WHEEL_DIR` on a machine with CUDA torch and no network, or directly:
`python bench/gpu_run.py [--tiny] [--json OUT]`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_esm2_3b import ARCH_3B, ARCH_TINY, flops_per_token, write_checkpoint  # noqa: E402

from orchestrator.embed.triton.server import TritonServer  # noqa: E402

SENSE = np.array([a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"
                  if a + b + c not in ("TAA", "TAG", "TGA")], dtype="S3")
INPUTS = {"reads_150bp": (300, 150), "chunks_500bp": (500, 5000)}  # chunk size, record length


def build_artifacts(out: Path, tiny: bool, device: str) -> dict[str, object]:
    """Model repository (committed configs + random weights of the real shapes) + classifiers."""
    from encoders import weights_sha256
    from export.demo import DNABERT_DEMO, DNABERT_REAL, write_classifiers, write_dnabert
    from export.layout import prepare_model_dir, stamp_configs

    dna_size = DNABERT_DEMO if tiny else DNABERT_REAL
    esm_arch = ARCH_TINY if tiny else ARCH_3B
    write_dnabert(prepare_model_dir(out, "dnabert_s"), seed=0, size=dna_size)
    esm_dir = prepare_model_dir(out, "esm2")
    write_checkpoint(esm_dir, esm_arch, "esm2_t36_3B_UR50D" if not tiny else "esm2_tiny", device)
    widths = {"dnabert_s": dna_size["hidden_size"], "esm2": esm_arch["embed_dim"]}
    for model, width in widths.items():
        stamp_configs(out, model, width, weights_sha256(model, out / "model_repository" / model
                                                        / "1" / "weights"))
    write_classifiers(out, sum(widths.values()), seed=0)
    return {"dnabert_s": dna_size, "esm2": esm_arch}


def write_input(path: Path, record_length: int, n_records: int, seed: int) -> Path:
    """Stop-free coding records (every chunk keeps frames), like reads or contigs of genes."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as fh:
        for i in range(n_records):
            seq = SENSE[rng.integers(0, len(SENSE), size=record_length // 3 + 1)].tobytes()
            fh.write(b">r%07d\n%s\n" % (i, seq[:record_length]))
    return path


def frame_tokens(fasta: Path, chunk_size: int, tokenizer_json: Path) -> dict[str, int]:
    """Tokens each model sees for the input's kept frames (ESM-2: residues + 2, capped at 1024)."""
    from tokenizers import Tokenizer

    from orchestrator.chunk.windows import Counters, iter_windows
    from orchestrator.read.formats import read_records

    tok = Tokenizer.from_file(str(tokenizer_json))
    dna = esm = frames = 0
    for w in iter_windows(read_records([str(fasta)]), chunk_size, 4096, Counters()):
        frames += len(w.proteins)
        dna += sum(len(e.ids) for e in tok.encode_batch([s.upper() for s in w.nucleotides]))
        esm += sum(min(1024, len(p) + 2) for p in w.proteins)
    return {"frames": frames, "dnabert_s": dna, "esm2": esm}


def model_statistics(url: str) -> dict[str, dict]:
    """Per model: executions by batch size, summed compute seconds, instance count (as the
    orchestrator reads it from the served config)."""
    from orchestrator.embed.contract import MODELS
    from orchestrator.embed.triton.endpoints import ConnectionOptions, Endpoint

    endpoint = Endpoint(url, ConnectionOptions(), request_timeout=60.0)
    endpoint.connect()
    try:
        settings = endpoint.read_settings(timeout=30.0, max_in_flight=None)
        out = {}
        for model in MODELS:
            s = endpoint.client.get_inference_statistics(model, as_json=True)["model_stats"][0]
            batches = {int(b["batch_size"]): int(b["compute_infer"].get("count", 0) or 0)
                       for b in s.get("batch_stats", [])}
            compute = int(s["inference_stats"]["compute_infer"].get("ns", 0) or 0) / 1e9
            out[model] = {"batches": batches, "compute_s": compute,
                          "instances": settings[model].instances}
        return out
    finally:
        endpoint.close()


def gpu_memory_bytes(metrics_url: str) -> int | None:
    """Sum of nv_gpu_memory_used_bytes from Triton's metrics (None without GPU metrics)."""
    try:
        text = urllib.request.urlopen(f"http://{metrics_url}/metrics", timeout=5).read().decode()
    except OSError:
        return None
    used = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("nv_gpu_memory_used_bytes")]
    return int(sum(used)) if used else None


def matmul_tflops(device: str, seconds: float = 2.0) -> float:
    """Dense matmul throughput on `device`: fp16 8192^3 on a GPU, fp32 1024^3 on CPU."""
    import torch

    n, dtype = (8192, torch.float16) if device == "cuda" else (1024, torch.float32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        sync()  # one 8192^3 product is ~1 ms on a GPU; a sync each is noise next to it
        count += 1
    return 2.0 * n ** 3 * count / (time.perf_counter() - t0) / 1e12


def dnabert_flops_per_token(size: dict[str, int], mean_tokens: float) -> float:
    """Forward FLOPs per token: QKV+out (8h^2), GeGLU FFN (up 2i, down i: 6hi), attention (4th)."""
    h, i, layers = size["hidden_size"], size["intermediate_size"], size["num_hidden_layers"]
    return layers * (8.0 * h * h + 6.0 * h * i + 4.0 * mean_tokens * h)


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU, small models, config.pbtxt (for CI)")
    ap.add_argument("--reads", type=int, default=20000, help="150 bp reads (default 20000)")
    ap.add_argument("--records", type=int, default=2000, help="5 kb records (default 2000)")
    ap.add_argument("--json", help="also write the JSON here")
    args = ap.parse_args(argv)
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if not args.tiny and device != "cuda":
        ap.error("no CUDA device: run with --tiny for the CPU path")
    n_records = {"reads_150bp": args.reads, "chunks_500bp": args.records}
    if args.tiny:
        n_records = {"reads_150bp": min(args.reads, 200), "chunks_500bp": min(args.records, 20)}
    figures: dict[str, object] = {"device": torch.cuda.get_device_name(0) if device == "cuda"
                                  else "cpu", "tiny": args.tiny, "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="virnucpro-gpu-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        arch = build_artifacts(root, args.tiny, device)
        figures["build_artifacts_s"] = round(time.perf_counter() - t0, 1)
        peak = matmul_tflops(device)
        figures["matmul_tflops"] = round(peak, 2)
        repo = root / "model_repository"
        t0 = time.perf_counter()
        with TritonServer(repo, gpu=not args.tiny, ready_timeout=1800) as server:
            figures["server_load_s"] = round(time.perf_counter() - t0, 1)
            figures["gpu_memory_loaded_bytes"] = gpu_memory_bytes(f"127.0.0.1:{server.metrics_port}")
            runs = {}
            for name, (chunk_size, length) in INPUTS.items():
                fasta = write_input(root / f"{name}.fa", length, n_records[name], seed=len(name))
                runs[name] = run_input(server, root, fasta, chunk_size, arch, peak)
            figures["inputs"] = runs
            figures["gpu_memory_peak_bytes"] = gpu_memory_bytes(f"127.0.0.1:{server.metrics_port}")
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return figures


def run_input(server: TritonServer, root: Path, fasta: Path, chunk_size: int,
              arch: dict[str, dict[str, int]], peak: float) -> dict[str, object]:
    from orchestrator.commands.predict import run_predict
    from orchestrator.pipeline.options import PipelineOptions

    tokens = frame_tokens(fasta, chunk_size, root / "model_repository" / "dnabert_s" / "1"
                          / "weights" / "tokenizer.json")
    before = model_statistics(server.grpc_url)
    t0 = time.perf_counter()
    options = PipelineOptions(inputs=[str(fasta)], chunk_size=chunk_size, servers=server.grpc_url,
                              restart=True)
    record = run_predict(options, outdir=str(root / f"out_{fasta.stem}"),
                         classifier=str(root / "classifiers" / f"{chunk_size}_model.pth"))
    wall = time.perf_counter() - t0
    after = model_statistics(server.grpc_url)
    frames = record["counts"]["frames"]
    out: dict[str, object] = {"chunk_size": chunk_size, "records": record["counts"]["records"],
                              "frames": frames, "wall_s": round(wall, 2),
                              "frames_per_s": round(frames / wall, 1)}
    for model in ("dnabert_s", "esm2"):
        busy = (after[model]["compute_s"] - before[model]["compute_s"]) / after[model]["instances"]
        mean_tokens = tokens[model] / max(1, tokens["frames"])
        per_token = (dnabert_flops_per_token(arch[model], mean_tokens) if model == "dnabert_s"
                     else flops_per_token(arch[model], mean_tokens))
        tflops = tokens[model] * per_token / busy / 1e12 if busy > 0 else 0.0
        formed = {b: n - before[model]["batches"].get(b, 0)
                  for b, n in sorted(after[model]["batches"].items())
                  if n - before[model]["batches"].get(b, 0) > 0}
        out[model] = {
            "tokens": tokens[model],
            "tokens_per_s": round(tokens[model] / wall, 1),
            "tokens_per_s_busy": round(tokens[model] / busy, 1) if busy > 0 else None,
            "busy_fraction": round(busy / wall, 3),
            "tflops_busy": round(tflops, 3),
            "fraction_of_matmul_peak": round(tflops / peak, 3) if peak > 0 else None,
            "batch_sizes_formed": {str(b): n for b, n in formed.items()},
        }
    return out


if __name__ == "__main__":
    main()
