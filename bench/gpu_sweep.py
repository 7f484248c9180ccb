"""ESM-2 3B serving variants through Triton in one GPU call: which one is fastest, at what cost.

For each variant (below) a fresh tritonserver serves the real ESM-2 3B shape (random weights,
written once) with the committed configs/gpu.pbtxt plus that variant's change; the script checks
its answers on a fixed protein set against fp32 in-process embeddings of the same weights, then
drives it like gpu_esm2_3b.py (many concurrent requests of 100-170 aa proteins) and measures
tokens/s over the wall time, the instances' busy fraction (Triton's batch statistics) and the
achieved fraction of the dense fp16 matmul peak measured in the same run. Variants run one at a
time; one that fails (does not load, errors, runs out of time) is reported with its reason and
the sweep goes on. Prints and writes one JSON:

    {"device", "torch", "tiny", "matmul_tflops", "proteins", "tokens", "budget_s", "wall_s",
     "variants": [{"name", "ok", "error", "tokens_per_s", "busy_fraction", "peak_fraction",
                   "max_abs_diff_vs_fp32", "cosine_min_vs_fp32", "config", "server_ready_s",
                   "seconds"}],
     "fastest_within_cosine": name of the fastest ok variant, fp8 excluded, with cosine >= 0.9999}

    bench/gpu_run.sh WHEEL_DIR --sweep --json $OUT/sweep.json     # on the GPU machine
    python bench/gpu_sweep.py --tiny --json sweep.json            # the same path on CPU (CI)

`--tiny` serves a 2-layer model with config.pbtxt (KIND_CPU, fp32) on CPU; there fp8 fails to
load (no fp8 tensor cores), which is what the CPU path shows for a failing variant.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gpu_esm2_3b import (  # noqa: E402
    ARCH_3B,
    ARCH_TINY,
    MODEL,
    compute_ns,
    drive,
    flops_per_token,
    proteins,
    write_checkpoint,
)
from gpu_run import matmul_tflops  # noqa: E402

from orchestrator.embed.triton.server import TritonServer  # noqa: E402

# name -> config changes on top of the committed configuration (parameters and instance count)
VARIANTS: dict[str, dict[str, str]] = {
    "today": {},
    "two_instances": {"instances": "2"},
    "compiled": {"compile": "true"},
    "bf16": {"precision": "bf16"},
    "fp8": {"precision": "fp8"},
}
MIN_COSINE = 0.9999  # a variant may become the GPU default only at or above this vs fp32
OPT_IN_ONLY = ("fp8",)  # random weights cannot show trained weights' outliers: never the default
DEFAULT_BUDGET_S = 480.0  # the whole sweep, weights and reference included
MIN_VARIANT_S = 30.0  # a variant that cannot get this much of the budget is skipped


def configure(text: str, overrides: dict[str, str]) -> str:
    """A config.pbtxt with a variant's changes: instance count, and string parameters set or
    added."""
    if "instances" in overrides:
        text = re.sub(r"count: \d+", f"count: {overrides['instances']}", text)
    for key, value in overrides.items():
        if key == "instances":
            continue
        pattern = rf'(key: "{key}"\s*value: \{{ string_value: )"[^"]*"'
        if re.search(pattern, text):
            text = re.sub(pattern, rf'\1"{value}"', text)
        else:
            text = text.replace("parameters [\n", "parameters [\n  {\n    key: "
                                f'"{key}"\n    value: {{ string_value: "{value}" }}\n  }},\n', 1)
    return text


def variant_repository(root: Path, overrides: dict[str, str], weights: Path) -> Path:
    """root/model_repository/esm2: the committed folder with the variant's configs; the weights
    folder is a link to the one written once."""
    repo = root / "model_repository"
    dest = repo / MODEL
    shutil.copytree(ROOT / "model_repository" / MODEL, dest,
                    ignore=shutil.ignore_patterns("__pycache__", "weights"))
    for cfg in (dest / "config.pbtxt", dest / "configs" / "gpu.pbtxt"):
        cfg.write_text(configure(cfg.read_text(), overrides))
    (dest / "1" / "weights").symlink_to(weights, target_is_directory=True)
    return repo


def embed_rows(url: str, seqs: list[str], rows: int) -> np.ndarray:
    """EMBEDDING of `seqs` from the server, `rows` per request, in order."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        out = []
        for i in range(0, len(seqs), rows):
            part = seqs[i : i + rows]
            inp = grpcclient.InferInput("SEQUENCE", [len(part), 1], "BYTES")
            inp.set_data_from_numpy(np.array([[s.encode()] for s in part], dtype=object))
            out.append(client.infer(MODEL, [inp]).as_numpy("EMBEDDING"))
        return np.concatenate(out)
    finally:
        client.close()


def reference(weights: Path, seqs: list[str], device: str) -> np.ndarray:
    """fp32 in-process embeddings of the check set (the same encoder code, no server)."""
    import torch

    from encoders import load_embedder

    embedder = load_embedder(MODEL, weights, device=device, precision="fp32")
    out = embedder.embed(seqs)
    del embedder
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def failure_line(server: TritonServer, exc: BaseException) -> str:
    """The model's own load error from the server log when there is one, else the exception."""
    try:
        log = Path(server.log_path).read_text(errors="replace").splitlines()
    except (OSError, TypeError):
        log = []
    for line in log:
        for marker in ("WeightsError: ", "failed to load"):
            if marker in line:  # the log writes the message's line breaks as \\n
                return line[line.index(marker):].split("\\n")[0].strip()[:500]
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def run_variant(name: str, overrides: dict[str, str], root: Path, weights: Path, *,
                gpu: bool, seqs: list[str], warmup: list[str], check: list[str],
                ref: np.ndarray, rows: int, in_flight: int, tokens: int, per_token: float,
                peak: float, seconds_left: float) -> dict[str, Any]:
    """One variant on a fresh server: its figures, or ok=False and the reason."""
    result: dict[str, Any] = {"name": name, "ok": False, "error": None, "tokens_per_s": None,
                              "busy_fraction": None, "peak_fraction": None,
                              "max_abs_diff_vs_fp32": None, "cosine_min_vs_fp32": None,
                              "config": overrides, "server_ready_s": None, "seconds": None}
    if seconds_left < MIN_VARIANT_S:
        result["error"] = f"skipped: {seconds_left:.0f} s of the sweep's budget left"
        return result
    t0 = time.perf_counter()
    repo = variant_repository(root / name, overrides, weights)
    server = TritonServer(repo, gpu=gpu, ready_timeout=max(1.0, seconds_left - 10.0))
    try:
        server.start()
        try:
            server.wait_ready()
        except Exception as exc:
            result["error"] = failure_line(server, exc)
            return result
        result["server_ready_s"] = round(time.perf_counter() - t0, 1)
        got = embed_rows(server.grpc_url, check, rows)
        result["max_abs_diff_vs_fp32"] = float(np.abs(got - ref).max())
        cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
        result["cosine_min_vs_fp32"] = float(cos.min())
        _, errors = drive(server.grpc_url, warmup, rows, in_flight)
        if errors:
            result["error"] = f"warm-up: {errors[0]}"
            return result
        before = compute_ns(server.grpc_url)
        elapsed, errors = drive(server.grpc_url, seqs, rows, in_flight)
        busy = (compute_ns(server.grpc_url) - before) / 1e9
        if errors:
            result["error"] = f"{len(errors)} requests failed; first: {errors[0]}"
            return result
        instances = int(overrides.get("instances", "1"))
        tflops = tokens / elapsed * per_token / 1e12
        result.update(ok=True, tokens_per_s=round(tokens / elapsed, 1),
                      busy_fraction=round(min(1.0, busy / instances / elapsed), 3),
                      peak_fraction=round(tflops / peak, 4) if peak > 0 else None)
    except Exception as exc:  # one failing variant must not end the sweep
        result["error"] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
    finally:
        server.stop()
        server.cleanup()
        result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def fastest(variants: list[dict[str, Any]]) -> str | None:
    """The fastest variant that ran, keeps cosine >= MIN_COSINE vs fp32 and may be a default."""
    fit = [v for v in variants if v["ok"] and v["name"] not in OPT_IN_ONLY
           and (v["cosine_min_vs_fp32"] or 0.0) >= MIN_COSINE]
    return max(fit, key=lambda v: v["tokens_per_s"])["name"] if fit else None


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="2-layer model on CPU (the CI path)")
    ap.add_argument("--proteins", type=int, default=None,
                    help="proteins driven per variant (default 6000; --tiny 200)")
    ap.add_argument("--check", type=int, default=None,
                    help="proteins compared with fp32 per variant (default 256; --tiny 32)")
    ap.add_argument("--rows", type=int, default=64, help="proteins per request (default 64)")
    ap.add_argument("--in-flight", type=int, default=16,
                    help="requests outstanding at once, as from many clients (default 16)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated subset, in order (default {','.join(VARIANTS)})")
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S,
                    help="seconds for the whole sweep; variants that would not fit are skipped "
                    f"(default {DEFAULT_BUDGET_S:g})")
    ap.add_argument("--json", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    import torch

    start = time.perf_counter()
    gpu = not args.tiny
    if gpu and not torch.cuda.is_available():
        ap.error("no CUDA device: run with --tiny for the CPU path")
    device = "cuda" if gpu else "cpu"
    arch = ARCH_3B if gpu else ARCH_TINY
    n = args.proteins or (6000 if gpu else 200)
    seqs = proteins(n, 100, 170)
    warmup = proteins(args.rows * args.in_flight, 100, 170, seed=1)
    check = proteins(args.check or (256 if gpu else 32), 20, 400, seed=2)
    tokens = sum(len(s) + 2 for s in seqs)
    per_token = flops_per_token(arch, tokens / n)
    figures: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if gpu else "cpu", "torch": torch.__version__,
        "tiny": args.tiny, "proteins": n, "tokens": tokens, "budget_s": args.budget_s}
    with tempfile.TemporaryDirectory(prefix="esm2-sweep-") as tmp:
        root = Path(tmp)
        weights = root / "weights"
        write_checkpoint(weights, arch, "esm2_t36_3B_random" if gpu else "esm2_t2_tiny_random",
                         device)
        figures["matmul_tflops"] = round(matmul_tflops(device), 2)
        ref = reference(weights, check, device)
        variants = []
        for name in names:
            left = args.budget_s - (time.perf_counter() - start)
            variants.append(run_variant(
                name, VARIANTS[name], root, weights, gpu=gpu, seqs=seqs, warmup=warmup,
                check=check, ref=ref, rows=args.rows, in_flight=args.in_flight, tokens=tokens,
                per_token=per_token, peak=figures["matmul_tflops"], seconds_left=left))
            print(json.dumps(variants[-1]), file=sys.stderr, flush=True)
    figures["variants"] = variants
    figures["fastest_within_cosine"] = fastest(variants)
    figures["wall_s"] = round(time.perf_counter() - start, 1)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return figures


if __name__ == "__main__":
    main()
