"""The server lifecycle against a real tritonserver, with tiny numpy-only models (fast to load).

What must hold: a clean start and stop (process gone, ports free, no /dev/shm leftovers), a
broken or hanging model ends in a clear error within a deadline (never a hang), a busy port is
named, and `orchestrator serve` behaves as a foreground service under SIGTERM/SIGINT.
"""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from timing import margin

from orchestrator.embed.triton.server import TritonServer, _meaningful_line, free_port, port_in_use
from orchestrator.errors import InputError, ServerUnavailable

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 8
input [ {{ name: "SEQUENCE" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "EMBEDDING" data_type: TYPE_FP32 dims: [ 2 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
dynamic_batching {{ max_queue_delay_microseconds: 1000 }}
"""

# EMBEDDING = [length, number of 'A'] per row: enough to see that rows come back in order.
MODEL = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        {init}

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, "SEQUENCE").as_numpy().reshape(-1)
            e = np.array([[len(s), s.count(b"A")] for s in x], dtype=np.float32)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor("EMBEDDING", e)]))
        return out
"""


def write_toy_repository(root: Path, init: str = "pass", names: tuple[str, ...] = ("toy",)) -> Path:
    """A model repository of numpy-only models; `init` is the body of initialize()."""
    for name in names:
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
        (root / name / "1" / "model.py").write_text(MODEL.format(init=init))
    return root


@pytest.fixture
def toy_repo(tmp_path: Path) -> Path:
    return write_toy_repository(tmp_path / "repo", names=("toy", "toy2"))


def _infer(url: str, model: str, seqs: list[bytes]) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    try:
        inp = grpcclient.InferInput("SEQUENCE", [len(seqs), 1], "BYTES")
        inp.set_data_from_numpy(np.array([[s] for s in seqs], dtype=object))
        return client.infer(model, [inp]).as_numpy("EMBEDDING")
    finally:
        client.close()


@pytest.mark.server
def test_start_serve_and_stop_cleanly(toy_repo: Path) -> None:
    server = TritonServer(toy_repo)
    with server:
        assert server.models == ["toy", "toy2"]
        out = _infer(server.grpc_url, "toy2", [b"AAC", b"GATTACA"])
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, [[3, 2], [7, 3]])
        pid = server.process.pid
        # The Python backend really uses this server's own shm prefix (so the check below means
        # something) and the stubs are running as its children.
        assert server.leftover_shm(), "expected live /dev/shm regions while serving"
        assert len(psutil.Process(pid).children(recursive=True)) >= 2
        log_dir = server.log_path.parent
    assert server.process.returncode == 0
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    for port in (server.grpc_port, server.http_port, server.metrics_port):
        assert not port_in_use("127.0.0.1", port)
    assert server.leftover_shm() == []
    assert not log_dir.exists()


def test_busy_port_is_named(toy_repo: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = TritonServer(toy_repo, http_port=port)
        with pytest.raises(ServerUnavailable, match=f"HTTP port {port} on 127.0.0.1 is already in use"):
            server.start()
        assert server.process is None


@pytest.mark.server
def test_model_that_fails_to_load_gives_its_reason(tmp_path: Path) -> None:
    repo = write_toy_repository(tmp_path, init='raise RuntimeError("weights are missing here")')
    server = TritonServer(repo)
    start = time.monotonic()
    with pytest.raises(ServerUnavailable) as info:
        with server:
            pass
    assert time.monotonic() - start < margin(30)
    message = str(info.value)
    assert "failed to load 'toy'" in message
    assert "RuntimeError: weights are missing here" in message
    assert server.process.poll() is not None
    assert server.leftover_shm() == []


@pytest.mark.server
def test_hanging_model_is_killed_at_the_deadline(tmp_path: Path) -> None:
    repo = write_toy_repository(tmp_path, init="import time; time.sleep(600)")
    server = TritonServer(repo)
    server.start()
    start = time.monotonic()
    try:
        with pytest.raises(ServerUnavailable, match=r"not ready after 2 s: toy"):
            server.wait_ready(timeout=2)
        assert time.monotonic() - start < margin(20)
        assert server.process.poll() is not None
        assert server.leftover_shm() == []
        assert not any(
            "triton_python_backend_stub" in " ".join(p.info["cmdline"] or [])
            and server.shm_prefix in " ".join(p.info["cmdline"] or [])
            for p in psutil.process_iter(["cmdline"])
        )
    finally:
        server.stop()
        server.cleanup()


def test_meaningful_line_prefers_the_model_failure() -> None:
    lines = [
        'E1128 13:54:34.415350 4703 server.cc:241] "CudaDriverHelper has not been initialized."',
        'E1128 13:54:34.806425 4703 model_lifecycle.cc:642] "failed to load \'esm2\' version 1: '
        'Internal: ValueError: bad weights\\n\\nAt:\\n  model.py(7): initialize\\n"',
        "| esm2 | 1 | UNAVAILABLE |",
        "error: creating server: Internal - failed to load all models",
    ]
    assert _meaningful_line(lines) == "failed to load 'esm2' version 1: Internal: ValueError: bad weights"
    assert _meaningful_line(lines[:1] + lines[2:]) == (
        "error: creating server: Internal - failed to load all models"
    )
    usage = ["I1128 14:19:06.157605 23472 cuda_memory_manager.cc:117] \"CUDA memory pool disabled\"",
             "  --trace-count <integer>", "\tthe number of traces, -1: no error limit.",
             "The server cannot listen to HTTP requests and metrics requests at the same address"]
    assert _meaningful_line(usage) == usage[-1]
    assert _meaningful_line([]) == "(empty server log)"


@pytest.mark.parametrize(("ports", "message"), [
    ({"grpc_port": 0}, "gRPC port 0 is not a TCP port number"),
    ({"http_port": 70000}, "HTTP port 70000 is not a TCP port number"),
    ({"http_port": 8123, "metrics_port": 8123}, "ports must differ"),
])
def test_bad_port_numbers_are_usage_errors(toy_repo: Path, ports: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        TritonServer(toy_repo, **ports).start()


def test_repository_without_models_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="holds no model"):
        TritonServer(tmp_path).start()
    with pytest.raises(InputError, match="is not a folder"):
        TritonServer(tmp_path / "missing").start()


# -- `orchestrator serve` as a real foreground process ----------------------------------------


def _serve(repo: Path, *extra: str) -> tuple[subprocess.Popen[str], list[int]]:
    ports = [free_port() for _ in range(3)]
    cmd = [
        sys.executable, "-m", "orchestrator", "serve", "--model-repository", str(repo),
        "--grpc-port", str(ports[0]), "--http-port", str(ports[1]),
        "--metrics-port", str(ports[2]), "--ready-timeout", "60", *extra,
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    return proc, ports


def _read_until(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    """stderr lines up to the one containing `needle` (fails on exit or after `timeout`)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stderr:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if needle in line:
            return seen
    pytest.fail(f"no line with {needle!r} (exit {proc.poll()}); stderr so far: {seen}")


@pytest.mark.server
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_until_signal_and_exits_zero(toy_repo: Path, signum: int) -> None:
    proc, ports = _serve(toy_repo)
    try:
        lines = _read_until(proc, "ready:", timeout=60)
        ready = next(ln for ln in lines if "ready:" in ln)
        assert f"grpc 127.0.0.1:{ports[0]}" in ready and "models: toy, toy2" in ready
        np.testing.assert_array_equal(_infer(f"127.0.0.1:{ports[0]}", "toy", [b"AT"]), [[2, 1]])
        proc.send_signal(signum)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not any(port_in_use("127.0.0.1", p) for p in ports)
    assert not list(Path("/dev/shm").glob(f"virnucpro_{proc.pid}_*"))


@pytest.mark.server
def test_serve_broken_repository_exits_nonzero_with_reason(tmp_path: Path) -> None:
    repo = write_toy_repository(tmp_path, init='raise ValueError("no weights in 1/weights")')
    proc, _ = _serve(repo)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3
    last = err.strip().splitlines()[-1]
    assert last.startswith("orchestrator: error: tritonserver exited with code 1")
    assert "failed to load 'toy' version 1" in last and "no weights in 1/weights" in last


@pytest.mark.server
def test_serve_busy_port_exits_nonzero(toy_repo: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "orchestrator", "serve", "--model-repository", str(toy_repo),
             "--grpc-port", str(port), "--http-port", str(free_port()),
             "--metrics-port", str(free_port())],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )
    assert proc.returncode == 3
    assert f"gRPC port {port} on 127.0.0.1 is already in use" in proc.stderr


@pytest.mark.server
def test_serve_signal_while_models_load_stops_promptly(tmp_path: Path) -> None:
    repo = write_toy_repository(tmp_path, init="import time; time.sleep(600)")
    proc, ports = _serve(repo)
    try:
        time.sleep(3)  # the server is up, its model still in initialize()
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert time.monotonic() - start < margin(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not any(port_in_use("127.0.0.1", p) for p in ports)
    assert not list(Path("/dev/shm").glob(f"virnucpro_{proc.pid}_*"))


def test_pytriton_server_refuses_numpy_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """nvidia-pytriton's stub corrupts string tensors under numpy 2 (seen on a GPU image): one line.

    numpy 2 cannot be installed beside this environment's 1.x, so its version string stands in.
    """
    import numpy

    monkeypatch.setattr(numpy, "__version__", "2.5.2")
    server = TritonServer(write_toy_repository(tmp_path / "repo"))
    with pytest.raises(ServerUnavailable, match=r"needs numpy<2 .* has numpy 2\.5\.2"):
        server.start()
    server.cleanup()


def _bindable(port: int) -> bool:
    """As free_port tests a port: a plain bind (a port in TIME_WAIT fails it)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _two_free_ports() -> int:
    """p where p and p + 1 are free now, from the kernel's ephemeral range, where the suite's
    servers never pick ports (each worker picks below it, in a range of its own)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            p = probe.getsockname()[1]
        if _bindable(p) and _bindable(p + 1):
            return p
    raise AssertionError("no two free ports side by side")


def test_a_servers_three_free_ports_differ(monkeypatch, tmp_path):
    """Free ports are only bound when the server starts, so one server's gRPC, HTTP and metrics
    ports are chosen apart: with two free ports in the range, the second choice takes the other."""
    from orchestrator.embed.triton import server as triton_server_module

    p = _two_free_ports()
    monkeypatch.setattr(triton_server_module, "PRIVATE_PORTS_FROM", p)
    monkeypatch.setattr(triton_server_module, "_ephemeral_low", lambda: p + 2)
    first = triton_server_module.free_port()
    assert triton_server_module.free_port(exclude=[first]) == 2 * p + 1 - first
    repo = tmp_path / "repo"
    repo.mkdir()
    server = TritonServer(repo, grpc_port=p)  # given: kept; the other two are chosen apart
    assert server.grpc_port == p and server.http_port == p + 1
    assert server.metrics_port not in (p, p + 1)
