"""bench/gpu_run.sh end to end on the CPU path (--tiny): the JSON a GPU run reports, every field.

On a GPU machine the same call (with the carried wheels and without --tiny) serves the real
DNABERT-S and ESM-2 3B architectures with configs/gpu.pbtxt; here it serves small models with
config.pbtxt, through the same wheel-folder handling, Triton, predict and statistics code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.server

ROOT = Path(__file__).resolve().parents[1]
MODEL_FIELDS = {"tokens", "tokens_per_s", "tokens_per_s_busy", "busy_fraction", "tflops_busy",
                "fraction_of_matmul_peak", "batch_sizes_formed"}


def test_gpu_run_cpu_path_reports_every_field(tmp_path):
    wheels = tmp_path / "wheels"  # nothing to carry: this environment has every package
    wheels.mkdir()
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_run.sh"), str(wheels), "--tiny",
                           "--json", str(out)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert json.loads(proc.stdout[proc.stdout.index("{"):]) == figures
    assert figures["tiny"] is True and figures["device"] == "cpu"
    assert figures["matmul_tflops"] > 0 and figures["server_load_s"] > 0
    assert "gpu_memory_loaded_bytes" in figures and "gpu_memory_peak_bytes" in figures
    assert set(figures["inputs"]) == {"reads_150bp", "chunks_500bp"}
    for name, run in figures["inputs"].items():
        assert run["frames"] > 0 and run["frames_per_s"] > 0, name
        assert run["chunk_size"] == (300 if name == "reads_150bp" else 500)
        for model in ("dnabert_s", "esm2"):
            stats = run[model]
            assert set(stats) == MODEL_FIELDS, (name, model)
            assert stats["tokens"] > run["frames"] and stats["tokens_per_s"] > 0
            assert 0 < stats["busy_fraction"] <= 1.0
            assert 0 < stats["fraction_of_matmul_peak"]
            formed = {int(b): n for b, n in stats["batch_sizes_formed"].items()}
            assert sum(b * n for b, n in formed.items()) == run["frames"]


def test_gpu_run_names_what_is_missing(tmp_path):
    """A bare Python (no torch, no client) with an empty wheel folder: exit 3 naming them."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")],
                   check=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_run.sh"), str(wheels), "--tiny"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": str(tmp_path / "bare" / "bin" / "python")})
    assert proc.returncode == 3, proc.stderr
    assert "not on this machine and not among the wheels" in proc.stderr
    assert "torch" in proc.stderr and "nvidia-pytriton" in proc.stderr


VARIANT_FIELDS = {"name", "ok", "error", "tokens_per_s", "busy_fraction", "peak_fraction",
                  "max_abs_diff_vs_fp32", "cosine_min_vs_fp32", "config", "server_ready_s",
                  "seconds"}


def test_gpu_sweep_cpu_path_runs_every_variant_and_reports_a_failing_one(tmp_path):
    """`gpu_run.sh --sweep --tiny`: each variant on its own tritonserver; fp8 cannot load on CPU
    and is reported with its reason while the others still run."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    out = tmp_path / "sweep.json"
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_run.sh"), str(wheels), "--sweep",
                           "--tiny", "--json", str(out)], capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert json.loads(proc.stdout[proc.stdout.index("{"):]) == figures
    assert figures["tiny"] is True and figures["matmul_tflops"] > 0
    variants = {v["name"]: v for v in figures["variants"]}
    assert list(variants) == ["today", "two_instances", "compiled", "bf16", "fp8"]
    for name, v in variants.items():
        assert set(v) == VARIANT_FIELDS, name
    fp8 = variants.pop("fp8")
    assert fp8["ok"] is False and "fp8 tensor cores" in fp8["error"] and "\n" not in fp8["error"]
    for name, v in variants.items():
        assert v["ok"] is True and v["error"] is None, (name, v["error"])
        assert v["tokens_per_s"] > 0 and 0 < v["busy_fraction"] <= 1 and v["peak_fraction"] > 0
    # the tiny config is fp32: served, two instances and compiled are the reference's numbers
    # (<= 1e-5 in float32: other batch compositions and fused kernels reorder sums)
    for name in ("today", "two_instances", "compiled"):
        assert variants[name]["max_abs_diff_vs_fp32"] <= 1e-5, name
    assert 0 < variants["bf16"]["max_abs_diff_vs_fp32"] and variants["bf16"]["cosine_min_vs_fp32"] > 0.999
    assert figures["fastest_within_cosine"] in variants
