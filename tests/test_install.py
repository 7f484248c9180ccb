"""The install paths of docs/getting-started.md, each in a fresh virtual environment.

- A client only: `pip install .` runs `status` and `predict` against a real server and has no torch
  (so predict imports none).
- A server node without containers: CPU torch first, then `pip install ".[models,server]"`; its
  `orchestrator serve` brings the exported demo repository to READY and stops cleanly on SIGTERM.

Slow (a fresh environment each): pip reuses its cache (the default cache folder, or $PIP_CACHE_DIR),
so only the first run on a machine downloads. The developer path (`make setup`) is what every other
test runs in; the server image is checked by tests/test_deploy.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.embed.triton.server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.server]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "example.fa"
TORCH = "torch==2.13.0"  # the CPU build this machine installs (Makefile: setup)
INSTALL_TIMEOUT_S = 1800


def _venv(path: Path, *requirements: str) -> Path:
    """A fresh virtual environment with `requirements` installed in order, one pip call each
    (pip's cache is used: no --no-cache-dir). Returns its bin folder."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    pip = [str(path / "bin" / "python"), "-m", "pip", "install", "-q"]
    for requirement in requirements:
        proc = subprocess.run([*pip, requirement], capture_output=True, text=True,
                              timeout=INSTALL_TIMEOUT_S, cwd=ROOT)
        assert proc.returncode == 0, f"pip install {requirement}:\n{proc.stderr[-3000:]}"
    return path / "bin"


def _clean_env() -> dict[str, str]:
    """This environment without our .venv on PATH or PYTHONPATH: the fresh one must stand alone."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if str(ROOT / ".venv") not in p)
    return env


def test_a_client_only_install_runs_status_and_predict_without_torch(triton_server, demo_artifacts,
                                                                     tmp_path):
    bin_dir = _venv(tmp_path / "client", str(ROOT))
    env = _clean_env()
    no_torch = subprocess.run([str(bin_dir / "python"), "-c", "import torch"], capture_output=True,
                              text=True, env=env, cwd=tmp_path)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    status = subprocess.run([str(bin_dir / "orchestrator"), "status", "--server",
                             triton_server.grpc_url], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=300)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "they agree on the weights" in status.stdout
    out = tmp_path / "out"
    predict = subprocess.run([str(bin_dir / "orchestrator"), "predict", str(EXAMPLE), "-o", str(out),
                              "--chunk-size", "300", "--classifier",
                              str(demo_artifacts / "classifiers" / "300_model.pth"),
                              "--server", triton_server.grpc_url, "--no-report"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert predict.returncode == 0, predict.stderr
    assert (out / "prediction_results.txt").stat().st_size > 0
    assert (out / "sequence_calls.tsv").is_file()


def test_a_server_node_install_serves_the_exported_demo_repository(demo_artifacts, tmp_path):
    bin_dir = _venv(tmp_path / "server", TORCH, f"{ROOT}[models,server]")
    env = _clean_env()
    grpc, http, metrics = free_port(), free_port(), free_port()
    serve = subprocess.Popen(
        [str(bin_dir / "orchestrator"), "serve", "--model-repository",
         str(demo_artifacts / "model_repository"), "--grpc-port", str(grpc), "--http-port",
         str(http), "--metrics-port", str(metrics), "--ready-timeout", "300"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        status = None
        deadline = time.monotonic() + 330  # serve's own --ready-timeout, plus its start
        while time.monotonic() < deadline and serve.poll() is None:
            status = subprocess.run([str(bin_dir / "orchestrator"), "status", "--server",
                                     f"127.0.0.1:{grpc}", "--metrics-port", str(metrics)],
                                    capture_output=True, text=True, env=env, cwd=tmp_path,
                                    timeout=120)
            if status.returncode == 0:
                break
            time.sleep(1.0)
        assert serve.poll() is None, serve.communicate()[1][-3000:]
        assert status is not None and status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.startswith("ready ") and "dnabert_s v1" in status.stdout
        assert "esm2 v1" in status.stdout
    finally:
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=120)
    assert serve.returncode == 0, err[-3000:]
