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
