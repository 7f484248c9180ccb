"""Session fixtures shared by the serving and predict tests: demo artifacts and a real Triton.

`demo_artifacts` builds the small random demo models once per session with the real export
command; `triton_server` serves them with a real tritonserver on free loopback ports.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.embed.triton.server import TritonServer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def demo_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT of `python -m export demo --out OUT`: model_repository/ and classifiers/."""
    out = tmp_path_factory.mktemp("artifacts")
    proc = subprocess.run(
        [sys.executable, "-m", "export", "demo", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"`python -m export demo` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return out


@pytest.fixture(scope="session")
def model_repository(demo_artifacts: Path) -> Path:
    return demo_artifacts / "model_repository"


@pytest.fixture(scope="session")
def triton_server(model_repository: Path) -> Iterator[TritonServer]:
    """A running tritonserver with both demo models ready.

    Attributes tests use: `grpc_url` ("127.0.0.1:PORT"), `http_url`, `model_repository`,
    `models`, `log_path`, `shm_prefix`. Stopped (and checked clean) at the end of the session.
    """
    with TritonServer(model_repository, ready_timeout=180) as server:
        yield server


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Toy models that sleep 0.15 s per request: a run lasts long enough to be killed mid-way."""
    from predict_fixtures import write_toy_repository

    root = tmp_path_factory.mktemp("slow_toy")
    with TritonServer(write_toy_repository(root / "repo", delay=0.15)) as server:
        yield server


@pytest.fixture(params=["server-list", "file-discovery"])
def server_source(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs a fault test twice: servers given as --server values, and as a file:/// endpoint list
    that the run re-reads (discovery on), so every fault is also handled with discovery running."""
    from predict_fixtures import TEST_DISCOVERY_ENV

    if request.param == "file-discovery":
        monkeypatch.setenv(TEST_DISCOVERY_ENV, "file")
    return str(request.param)

