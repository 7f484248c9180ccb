"""ESM-2 3B (random weights, real architecture) through Triton on a GPU: tokens/s and % of peak.

Prepared for one H200; run on the GPU machine from the repository root:

    .venv/bin/python bench/gpu_esm2_3b.py --json $OUT/esm2_3b.json

What it does, end to end as production would:
1. writes a fair-esm checkpoint `esm2_t36_3B_random.pt` (36 layers, 2560 wide, 40 heads, the
   published layout and key names; random fp16 weights made on the GPU) into a temporary model
   repository beside a copy of the committed `model_repository/esm2/` (config.pbtxt,
   configs/gpu.pbtxt, 1/model.py);
2. serves it with a real tritonserver and `--model-config-name=gpu` (KIND_GPU, fp16, dynamic
   batching: the production settings);
3. drives it from many concurrent async gRPC requests of realistic VirNucPro proteins
   (100-170 aa) and reports tokens/s, achieved TFLOP/s and the fraction of the fp16 dense peak
   (~5.7 GFLOP per token; H200 ~790 TFLOP/s measured; DESIGN.md target >= 55%), plus how busy
   the model instance was (Triton's compute statistics).

`--tiny` runs the same path on CPU with a 2-layer, 64-wide model and config.pbtxt, to check the
script itself where there is no GPU.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.embed.triton.server import TritonServer  # noqa: E402

MODEL = "esm2"
ARCH_3B = {"num_layers": 36, "embed_dim": 2560, "attention_heads": 40}
ARCH_TINY = {"num_layers": 2, "embed_dim": 64, "attention_heads": 4}
H200_PEAK_TFLOPS = 790.0  # dense fp16, measured (DESIGN.md)
# Amino-acid background frequencies (UniProt-like), so token statistics look like real proteins.
AMINO = "ACDEFGHIKLMNPQRSTVWY"
AMINO_FREQ = np.array([8.3, 1.4, 5.5, 6.8, 3.9, 7.1, 2.3, 5.9, 5.8, 9.7,
                       2.4, 4.1, 4.7, 3.9, 5.5, 6.6, 5.4, 6.9, 1.1, 2.9])


def flops_per_token(arch: dict[str, int], mean_tokens: float) -> float:
    """Forward FLOPs per token: QKV+out (8c^2) and FFN 4c (16c^2) GEMMs, plus attention (4tc)."""
    c, layers = arch["embed_dim"], arch["num_layers"]
    return layers * (24.0 * c * c + 4.0 * mean_tokens * c)


def proteins(n: int, lo: int, hi: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    letters = np.array(list(AMINO))
    p = AMINO_FREQ / AMINO_FREQ.sum()
    return ["".join(rng.choice(letters, int(rng.integers(lo, hi + 1)), p=p)) for _ in range(n)]


def write_checkpoint(wdir: Path, arch: dict[str, int], name: str, device: str) -> Path:
    """A fair-esm ESM-2 checkpoint with random weights: {"cfg": {"model": ns}, "model": {...}}.

    Shapes and key names come from fair-esm's own ESM2 built on the meta device; values are
    drawn on `device` in fp16 (a 3B model: ~5.7 GB, seconds on a GPU). Scaled so activations
    stay in fp16 range through 36 layers: matrices ~ N(0, 1/fan_in), LayerNorm weights ~ 1.
    """
    import argparse as _argparse

    import esm
    import torch

    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    with torch.device("meta"):
        ref = esm.model.esm2.ESM2(alphabet=alphabet, token_dropout=True, **arch)
    gen = torch.Generator(device=device).manual_seed(0)
    state = {}
    for key, meta in ref.state_dict().items():
        if key.endswith("rot_emb.inv_freq") or key.startswith(("lm_head.", "contact_head.")):
            continue
        x = torch.randn(meta.shape, generator=gen, device=device, dtype=torch.float16)
        if "layer_norm" in key:
            x = 1.0 + 0.1 * x if key.endswith("weight") else 0.02 * x
        elif key.endswith("bias"):
            x = 0.02 * x
        elif key != "embed_tokens.weight":
            x = x / float(np.sqrt(meta.shape[-1]))
        state["encoder.sentence_encoder." + key] = x.cpu()
    cfg = _argparse.Namespace(
        arch="esm2", encoder_layers=arch["num_layers"], encoder_embed_dim=arch["embed_dim"],
        encoder_ffn_embed_dim=4 * arch["embed_dim"],
        encoder_attention_heads=arch["attention_heads"], token_dropout=True, max_positions=1024,
    )
    wdir.mkdir(parents=True, exist_ok=True)
    path = wdir / f"{name}.pt"
    torch.save({"cfg": {"model": cfg}, "model": state}, path)
    return path


def build_repository(root: Path, arch: dict[str, int], name: str, device: str,
                     overrides: dict[str, str]) -> Path:
    """root/model_repository/esm2 = the committed folder + random weights in 1/weights."""
    repo = root / "model_repository"
    dest = repo / MODEL
    shutil.copytree(ROOT / "model_repository" / MODEL, dest,
                    ignore=shutil.ignore_patterns("__pycache__", "weights"))
    for cfg in (dest / "config.pbtxt", dest / "configs" / "gpu.pbtxt"):
        text = cfg.read_text()
        if "max_batch_size" in overrides:
            text = re.sub(r"max_batch_size: \d+", f"max_batch_size: {overrides['max_batch_size']}",
                          text)
            text = re.sub(r"\s*preferred_batch_size: \[[^\]]*\]", "", text)
            # warmup samples may not exceed the new limit
            limit = int(overrides["max_batch_size"])
            text = re.sub(r"(?<![a-z_])batch_size: (\d+)",
                          lambda m, cap=limit: f"batch_size: {min(int(m.group(1)), cap)}", text)
        if "instances" in overrides:
            text = re.sub(r"count: \d+", f"count: {overrides['instances']}", text)
        if "token_budget" in overrides:
            text = re.sub(r'(key: "token_budget"\s*value: \{ string_value: )"\d+"',
                          rf'\1"{overrides["token_budget"]}"', text)
        cfg.write_text(text)
    write_checkpoint(dest / "1" / "weights", arch, name, device)
    return repo


def drive(url: str, seqs: list[str], rows: int, in_flight: int) -> tuple[float, list[str]]:
    """Send all proteins as async requests of `rows`, `in_flight` at a time; (seconds, errors)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    slots = threading.Semaphore(in_flight)
    errors: list[str] = []
    bad_rows = [0]

    def done(result: object, error: object) -> None:
        if error is not None:
            errors.append(str(error))
        elif not np.isfinite(result.as_numpy("EMBEDDING")).all():  # type: ignore[attr-defined]
            bad_rows[0] += 1
        slots.release()

    payloads = []
    for i in range(0, len(seqs), rows):
        part = seqs[i : i + rows]
        inp = grpcclient.InferInput("SEQUENCE", [len(part), 1], "BYTES")
        inp.set_data_from_numpy(np.array([[s.encode()] for s in part], dtype=object))
        payloads.append(inp)
    start = time.perf_counter()
    for inp in payloads:
        slots.acquire()
        client.async_infer(MODEL, [inp], callback=partial(done))
    for _ in range(in_flight):
        slots.acquire()
    elapsed = time.perf_counter() - start
    client.close()
    if bad_rows[0]:
        errors.append(f"{bad_rows[0]} responses held non-finite embeddings (fp16 overflow?)")
    return elapsed, errors


def compute_ns(url: str) -> int:
    """Nanoseconds the model instance(s) spent executing batches so far (Triton statistics).

    From batch_stats (one entry per merged batch), not inference_stats, which charges every
    request of a merged batch the whole batch's time.
    """
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        s = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    finally:
        client.close()
    return sum(int(b.get(k, {}).get("ns", 0)) for b in s.get("batch_stats", [])
               for k in ("compute_input", "compute_infer", "compute_output"))


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="2-layer model on CPU (script check)")
    ap.add_argument("--proteins", type=int, default=None,
                    help="proteins to embed (default 40000; --tiny 600)")
    ap.add_argument("--rows", type=int, default=64, help="proteins per request (default 64)")
    ap.add_argument("--in-flight", type=int, default=16,
                    help="requests outstanding at once, as from many clients (default 16)")
    ap.add_argument("--min-len", type=int, default=100)
    ap.add_argument("--max-len", type=int, default=170)
    ap.add_argument("--peak-tflops", type=float, default=H200_PEAK_TFLOPS,
                    help="dense fp16 peak of the GPU (default H200: 790)")
    ap.add_argument("--max-batch-size", help="override the config's max_batch_size")
    ap.add_argument("--token-budget", help="override the config's token_budget")
    ap.add_argument("--instances", help="override the instance count per GPU")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)

    if args.max_batch_size and int(args.max_batch_size) < args.rows:
        ap.error(f"--rows {args.rows} exceeds --max-batch-size {args.max_batch_size}")
    arch = ARCH_TINY if args.tiny else ARCH_3B
    name = "esm2_t2_tiny_random" if args.tiny else "esm2_t36_3B_random"
    n = args.proteins or (600 if args.tiny else 40_000)
    gpu = not args.tiny
    overrides = {k: v for k, v in (("max_batch_size", args.max_batch_size),
                                   ("token_budget", args.token_budget),
                                   ("instances", args.instances)) if v}
    seqs = proteins(n, args.min_len, args.max_len)
    warmup = proteins(args.rows * args.in_flight, args.min_len, args.max_len, seed=1)
    tokens = sum(len(s) + 2 for s in seqs)  # <cls> + residues + <eos>

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="esm2-3b-") as tmp:
        repo = build_repository(Path(tmp), arch, name, "cuda" if gpu else "cpu", overrides)
        t_weights = time.perf_counter() - t0
        t1 = time.perf_counter()
        with TritonServer(repo, gpu=gpu, ready_timeout=900) as server:
            t_ready = time.perf_counter() - t1
            _, errors = drive(server.grpc_url, warmup, args.rows, args.in_flight)
            if errors:
                raise SystemExit(f"warm-up failed: {errors[0]}")
            busy_before = compute_ns(server.grpc_url)
            elapsed, errors = drive(server.grpc_url, seqs, args.rows, args.in_flight)
            busy = (compute_ns(server.grpc_url) - busy_before) / 1e9
    if errors:
        raise SystemExit(f"{len(errors)} requests failed; first: {errors[0]}")

    mean_tokens = tokens / n
    tflops = tokens / elapsed * flops_per_token(arch, mean_tokens) / 1e12
    figures: dict[str, object] = {
        "model": name, "device": _device_name() if gpu else "cpu", "proteins": n,
        "mean_tokens": round(mean_tokens, 1), "rows_per_request": args.rows,
        "in_flight": args.in_flight, "overrides": overrides,
        "weights_written_s": round(t_weights, 1), "server_ready_s": round(t_ready, 1),
        "seconds": round(elapsed, 2), "proteins_per_s": round(n / elapsed, 1),
        "tokens_per_s": round(tokens / elapsed), "gflop_per_token": round(
            flops_per_token(arch, mean_tokens) / 1e9, 4),
        "tflops": round(tflops, 1), "instance_busy_fraction": round(busy / elapsed, 3),
    }
    if gpu:
        figures["fraction_of_peak"] = round(tflops / args.peak_tflops, 3)
        figures["peak_tflops"] = args.peak_tflops
    for key, value in figures.items():
        print(f"{key:>24}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def _device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"


if __name__ == "__main__":
    main()
