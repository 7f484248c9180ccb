"""Session fixtures shared by the serving and predict tests: demo artifacts and a real Triton.

`demo_artifacts` builds the small random demo models once per session with the real export
command; `triton_server` serves them with a real tritonserver on free loopback ports.

Markers say what a test needs (declared in pyproject.toml). A test that starts any process
(a tritonserver, `python -m orchestrator`, a workflow tool, a browser) must carry one of
`SPAWNING_MARKERS`: the guard below fails it otherwise, so `make check` (the tests with none of
them) never starts a process and the markers cannot drift from what the tests do.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.embed.triton.server import TritonServer

ROOT = Path(__file__).resolve().parents[1]

SPAWNING_MARKERS = ("server", "workflow", "browser", "gpu")
# Processes libraries start on their own: matplotlib asks fontconfig once per machine.
LIBRARY_PROCESSES = ("fc-list",)

_running: list[pytest.Item | None] = [None]  # the test whose setup, call or teardown is running
_popen_init = subprocess.Popen.__init__


def _guarded_popen_init(self: subprocess.Popen, *args: Any, **kwargs: Any) -> None:
    item = _running[0]
    command = args[0] if args else kwargs.get("args")
    program = Path(str(command[0] if isinstance(command, list | tuple) else command)).name
    if (item is not None and program not in LIBRARY_PROCESSES
            and not any(item.get_closest_marker(m) for m in SPAWNING_MARKERS)):
        raise RuntimeError(
            f"{item.nodeid} starts a process ({command!r}) but has none of the markers "
            f"{', '.join(SPAWNING_MARKERS)}: mark it (pyproject.toml says what each means)")
    _popen_init(self, *args, **kwargs)


def pytest_configure(config: pytest.Config) -> None:
    subprocess.Popen.__init__ = _guarded_popen_init  # type: ignore[method-assign]
    _own_port_range()


def _own_port_range() -> None:
    """Under pytest-xdist, each worker picks its servers' free ports from a range of its own, so
    two workers starting servers at the same moment never choose the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return
    from orchestrator.embed.triton import server

    index, count = int(worker[2:]), int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    low = server._ephemeral_low()
    width = (low - server.PRIVATE_PORTS_FROM) // count
    start = server.PRIVATE_PORTS_FROM + index * width
    server.PRIVATE_PORTS_FROM = start
    server._ephemeral_low = lambda: start + width


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    _running[0] = item
    try:
        return (yield)
    finally:
        _running[0] = None


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


@pytest.fixture(scope="session")
def toy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The default toy repository (no delay), one server for the session: for tests that only send
    it work and read its answers. Tests that kill, freeze, restart or reconfigure a server, or count
    the rows it executed, start their own."""
    from predict_fixtures import write_toy_repository

    root = tmp_path_factory.mktemp("shared_toy")
    with TritonServer(write_toy_repository(root / "repo")) as server:
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

