"""Run a real tritonserver on a model repository: start, wait for every model, stop cleanly.

Two sources for the server binary: a `tritonserver` on PATH (NVIDIA's containers, backends in
/opt/tritonserver/backends) or the complete server bundled in the `nvidia-pytriton` wheel, which
lets tests and the demo use the real server on machines without Docker or a GPU. The wheel's Python
backend needs a backend folder holding the stub for the running Python and a PATH on which
`python3` is this interpreter (so model.py sees this environment's packages); we build both here.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import http.client
import importlib.util
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from orchestrator.embed.triton.lockdown import lockdown_flags
from orchestrator.errors import InputError, ServerUnavailable

log = logging.getLogger(__name__)

CONTAINER_BACKENDS = Path("/opt/tritonserver/backends")
# A private server (`predict --start-server`) waits this long for its models: the real encoders
# take minutes to load on a cold node.
PRIVATE_READY_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 60.0  # the server's own --exit-timeout-secs is 30 s; never shorten that
_POLL_S = 0.1
# Log lines that say nothing about why a server failed.
_NOISE = ("CudaDriverHelper has not been initialized", "Waiting for in-flight requests")


PRIVATE_PORTS_FROM = 20000  # above the well-known services most machines run


def free_port(host: str = "127.0.0.1", exclude: Collection[int] = ()) -> int:
    """A TCP port that nothing listens on right now (for tests and temporary servers), other than
    `exclude` (the ports already chosen for the same server, not yet bound).

    Chosen below the kernel's ephemeral range when possible: a port from that range can be taken
    by any outgoing connection (gRPC clients make many) between now and the server's start.
    """
    low = _ephemeral_low()
    for port in random.sample(range(PRIVATE_PORTS_FROM, low), min(50, max(0, low - PRIVATE_PORTS_FROM))):
        if port in exclude:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    """The first port the kernel hands to outgoing connections (Linux; 32768 elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_in_use(host: str, port: int) -> bool:
    """True when a listener holds host:port (TIME_WAIT leftovers do not count: Triton reuses them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def model_names(model_repository: str | os.PathLike[str]) -> list[str]:
    """Models Triton will load: every folder of the repository that holds a config.pbtxt."""
    root = Path(model_repository)
    return sorted(p.name for p in root.iterdir() if (p / "config.pbtxt").is_file())


def gpu_configs_usable(model_repository: str | os.PathLike[str]) -> bool:
    """Whether a private server should load `configs/gpu.pbtxt`: an NVIDIA device is visible to
    this process (not hidden by CUDA_VISIBLE_DEVICES) and every model of the repository has one."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1", "none", "NoDevFiles")
    devices = any(Path("/dev").glob("nvidia[0-9]*"))
    if hidden or not devices:
        return False
    repo = Path(model_repository)
    names = model_names(repo)
    return bool(names) and all((repo / m / "configs" / "gpu.pbtxt").is_file() for m in names)


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn making the child get SIGTERM when its parent dies (Linux), so a killed test
    run leaves no server behind. libc is resolved here, in the parent: loading a library in the
    forked child of a threaded process can deadlock. (Linux sends it when the *thread* that
    started the server ends: start servers from the main thread or a long-lived one.)"""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


@dataclass(frozen=True)
class ServerTLS:
    """TLS for Triton's gRPC endpoint: certificate + key; a root certificate makes it mutual
    (clients must present a certificate signed by that CA)."""

    cert: str
    key: str
    root_cert: str | None = None

    def check(self) -> None:
        for label, path in (("--ssl-cert", self.cert), ("--ssl-key", self.key),
                            ("--ssl-root-cert", self.root_cert)):
            if path is not None and not os.path.isfile(path):
                raise InputError(f"{label} {path}: no such file")

    def describe(self) -> str:
        return "TLS, client certificates required" if self.root_cert else "TLS"

    def flags(self) -> list[str]:
        flags = [f"--grpc-server-cert={Path(self.cert).resolve()}",
                 f"--grpc-server-key={Path(self.key).resolve()}"]
        if self.root_cert is None:
            return ["--grpc-use-ssl=true", *flags]
        return ["--grpc-use-ssl-mutual=true", *flags,
                f"--grpc-root-cert={Path(self.root_cert).resolve()}"]


class TritonServer:
    """One tritonserver process on fixed ports; use as a context manager (start + ready, stop).

    `grpc_port`/`http_port`/`metrics_port` of None pick free loopback ports. `gpu=True` loads
    `configs/gpu.pbtxt` of each model (KIND_GPU on every visible GPU) instead of `config.pbtxt`.
    Always locked down (`lockdown`): model repository, shared memory, logging and trace need the
    `admin_key` header (None: a key nobody knows); `model_control="explicit"` allows admins to
    load and unload models.
    """

    def __init__(
        self,
        model_repository: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        grpc_port: int | None = None,
        http_port: int | None = None,
        metrics_port: int | None = None,
        gpu: bool = False,
        ready_timeout: float = 120.0,
        tls: ServerTLS | None = None,
        extra_flags: Sequence[str] = (),
        admin_key: str | None = None,
        model_control: str = "none",
    ) -> None:
        self.model_repository = Path(model_repository).resolve()
        self.host = host
        self.tls = tls
        self.lockdown = lockdown_flags(admin_key, model_control)  # checks the key and mode now
        self.extra_flags = list(extra_flags)
        chosen: list[int] = []  # free ports are only bound at start: never hand one out twice

        def port(given: int | None) -> int:
            chosen.append(given if given is not None else free_port(_client_host(host), chosen))
            return chosen[-1]

        self.grpc_port, self.http_port, self.metrics_port = (
            port(grpc_port), port(http_port), port(metrics_port))
        self.gpu = gpu
        self.ready_timeout = ready_timeout
        # Unique per server: the Python backend names its /dev/shm regions with this prefix.
        self.shm_prefix = f"virnucpro_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self.process: subprocess.Popen[bytes] | None = None
        self.models: list[str] = []
        self._workdir: Path | None = None
        self._log_file: IO[bytes] | None = None

    # -- addresses ---------------------------------------------------------------------------
    @property
    def grpc_url(self) -> str:
        return f"{_client_host(self.host)}:{self.grpc_port}"

    @property
    def http_host(self) -> str:
        """Triton's HTTP endpoint has no TLS: with TLS on gRPC it listens on loopback only."""
        return "127.0.0.1" if self.tls is not None else self.host

    @property
    def http_url(self) -> str:
        return f"{_client_host(self.http_host)}:{self.http_port}"

    @property
    def log_path(self) -> Path | None:
        return self._workdir / "tritonserver.log" if self._workdir else None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Launch the server (returns at once; call wait_ready). Raises ServerUnavailable."""
        if self.process is not None:
            raise RuntimeError("server already started")
        if not self.model_repository.is_dir():
            raise InputError(f"model repository {self.model_repository} is not a folder")
        self._check_ports()
        self.models = model_names(self.model_repository)
        if not self.models:
            raise InputError(
                f"model repository {self.model_repository} holds no model "
                "(no <model>/config.pbtxt); build one with `python -m export demo --out DIR`"
            )
        for label, host, port in (("gRPC", self.host, self.grpc_port),
                                  ("HTTP", self.http_host, self.http_port),
                                  ("metrics", self.host, self.metrics_port)):
            if port_in_use(host, port):
                raise ServerUnavailable(
                    f"{label} port {port} on {host} is already in use (another tritonserver?); "
                    "stop it or choose another port"
                )
        self._workdir = Path(tempfile.mkdtemp(prefix="virnucpro-triton-"))
        binary, backends, env = _locate_server(self._workdir)
        cmd = [str(binary), *self._flags(backends)]
        log.debug("starting %s", " ".join(cmd))
        self._log_file = open(self.log_path, "wb")  # closed in stop()
        self.process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # terminal Ctrl-C reaches us; we forward it (serve)
            preexec_fn=_parent_death_signal(),
        )

    def _check_ports(self) -> None:
        ports = {"gRPC": self.grpc_port, "HTTP": self.http_port, "metrics": self.metrics_port}
        for label, port in ports.items():
            if not 0 < port < 65536:
                raise InputError(f"{label} port {port} is not a TCP port number (1-65535)")
        if len(set(ports.values())) < len(ports):
            raise InputError(f"the gRPC, HTTP and metrics ports must differ, got {ports}")
        if self.tls is not None:
            self.tls.check()

    def _flags(self, backends: Path | None) -> list[str]:
        flags = [
            f"--model-repository={self.model_repository}",
            f"--grpc-address={self.host}",
            f"--http-address={self.http_host}",
            f"--grpc-port={self.grpc_port}",
            f"--http-port={self.http_port}",
            f"--metrics-port={self.metrics_port}",
            "--disable-auto-complete-config",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            "--log-verbose=0",
            *self.lockdown,
        ]
        if self.tls is not None:
            flags += self.tls.flags()
        if backends is not None:
            flags.append(f"--backend-directory={backends}")
        if self.gpu:
            flags.append("--model-config-name=gpu")
        else:
            flags += ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
        return flags + self.extra_flags

    def wait_ready(
        self, timeout: float | None = None, *, should_stop: Callable[[], bool] | None = None
    ) -> None:
        """Block until every model is ready; on exit, deadline or failure kill the server and raise.

        Readiness is checked per model, over HTTP (plain even when gRPC requires TLS and client
        certificates): with strict readiness one failed model makes the whole server not-ready,
        and a model whose Python stub cannot start never becomes ready at all. `should_stop` lets
        a signal handler end the wait early (returns without raising).
        """
        if self.process is None:
            raise RuntimeError("server not started")
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            if should_stop is not None and should_stop():
                return
            code = self.process.poll()
            if code is not None:
                reason = f"tritonserver exited with code {code} before all models were ready"
                break
            waiting = self.models_not_ready()
            if not waiting:
                return
            if time.monotonic() > deadline:
                reason = f"not ready after {timeout:g} s: {', '.join(waiting)}; last server log line"
                break
            time.sleep(_POLL_S)
        self.stop()
        raise ServerUnavailable(f"{reason}: {self.last_log_line()}")

    def models_not_ready(self) -> list[str]:
        """Models whose HTTP ready endpoint does not answer 200 (all of them before it listens)."""
        waiting = []
        for model in self.models:
            url = f"http://{self.http_url}/v2/models/{model}/ready"
            try:
                with urllib.request.urlopen(url, timeout=2.0) as reply:
                    ready = reply.status == 200
            except (OSError, http.client.HTTPException):  # URLError is an OSError
                ready = False
            if not ready:
                waiting.append(model)
        return waiting

    def poll(self) -> int | None:
        """The server's exit code, or None while it runs."""
        return None if self.process is None else self.process.poll()

    def stop(self) -> int | None:
        """SIGTERM, wait for Triton's own graceful exit, SIGKILL as a fallback; clean /dev/shm.

        Returns the server's exit code (None if it was never started).
        """
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    log.warning("tritonserver ignored SIGTERM for %g s; killing it", STOP_TIMEOUT_S)
                    self.process.kill()
                    self.process.wait()
            code = self.process.returncode
            if code != 0:  # the stubs are children of the server; a killed server may orphan them
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.process.pid, signal.SIGKILL)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        left = self.leftover_shm()
        for path in left:
            log.warning("removing stale shared memory %s", path)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return code

    def leftover_shm(self) -> list[Path]:
        """/dev/shm files of this server's Python backend that still exist."""
        shm = Path("/dev/shm")
        return sorted(shm.glob(f"{self.shm_prefix}*")) if shm.is_dir() else []

    def cleanup(self) -> None:
        """Remove the temporary backend folder and log (after stop)."""
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def last_log_line(self) -> str:
        """The line of the server log that best says what went wrong."""
        if self.log_path is None or not self.log_path.is_file():
            return "(no server log)"
        if self._log_file is not None:
            self._log_file.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return _meaningful_line(lines)

    def __enter__(self) -> TritonServer:
        try:
            self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            self.cleanup()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        self.cleanup()


_GLOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ [^\]]+\] ")


def _meaningful_line(lines: list[str]) -> str:
    """The first model-load failure, else the server's closing message, else its last error."""
    lines = [ln.strip() for ln in lines if ln.strip()]
    lines = [ln for ln in lines if not any(n in ln for n in _NOISE)]
    lines = [ln for ln in lines if not ln.startswith(("+", "|"))]  # status tables
    if not lines:
        return "(empty server log)"
    chosen = next((ln for ln in lines if "failed to load '" in ln and "version" in ln), None)
    if chosen is None and not _GLOG_PREFIX.match(lines[-1]):
        chosen = lines[-1]  # tritonserver's own last word, e.g. a usage or "creating server" error
    if chosen is None:
        errors = [ln for ln in lines if re.match(r"^E\d{4} ", ln)]
        chosen = errors[-1] if errors else lines[-1]
    return _clean(chosen)


def _clean(line: str) -> str:
    """Drop the glog prefix, the quotes and the Python traceback Triton appends to a message."""
    text = _GLOG_PREFIX.sub("", line)
    if len(text) > 1 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text.split("\\n")[0].strip()


def _locate_server(workdir: Path) -> tuple[Path, Path | None, dict[str, str]]:
    """(binary, backend folder or None for the server default, environment) for this machine."""
    env = dict(os.environ)
    # The Python-backend stub embeds the first `python3` on PATH: make it this interpreter.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    on_path = shutil.which("tritonserver")
    if on_path:
        backends = CONTAINER_BACKENDS if CONTAINER_BACKENDS.is_dir() else None
        return Path(on_path), backends, env

    spec = importlib.util.find_spec("pytriton")
    if spec is not None:
        _check_stub_numpy()
    if spec is None or not spec.submodule_search_locations:
        raise ServerUnavailable(
            "no tritonserver found: none on PATH and the nvidia-pytriton package is not installed "
            "(pip install nvidia-pytriton==0.7.0, or run inside NVIDIA's tritonserver container)"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    binary = root / "bin" / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not binary.is_file():
        raise ServerUnavailable(f"nvidia-pytriton is installed but {binary} is missing")
    if not stub.is_file():
        raise ServerUnavailable(f"nvidia-pytriton has no Python backend stub for Python {version}")
    backends = workdir / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True)
    for src in (root / "backends" / "python" / "libtriton_python.so",
                root / "backends" / "python" / "triton_python_backend_utils.py", stub):
        (python_dir / src.name).symlink_to(src)
    libs = [sysconfig.get_config_var("LIBDIR") or "", str(root.parent.parent / "nvidia_pytriton.libs")]
    if env.get("LD_LIBRARY_PATH"):
        libs.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in libs if p)
    return binary, backends, env


def _check_stub_numpy() -> None:
    """nvidia-pytriton 0.7.0's Python-backend stub needs numpy<2 (its own requirement).

    With numpy 2 the string tensors the stub hands to model.py arrive corrupted and the stub dies
    on the first request (or at warmup), which the server only reports as "Stub process ... is
    not healthy". Seen on an H200 machine whose image has numpy 2.5; refused here in one line.
    """
    import numpy

    major = int(numpy.__version__.split(".")[0])
    if major >= 2:
        raise ServerUnavailable(
            f"the tritonserver of nvidia-pytriton needs numpy<2 in the interpreter its Python "
            f"backend embeds ({sys.executable} has numpy {numpy.__version__}); install numpy<2 "
            "there (pip install 'numpy<2') or run NVIDIA's tritonserver container")


@contextlib.contextmanager
def _stop_signals() -> Iterator[list[int]]:
    """Record SIGTERM/SIGINT instead of dying on them; yields the list of signals received."""
    received: list[int] = []

    def handler(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def serve(
    *,
    model_repository: str,
    host: str = "127.0.0.1",
    grpc_port: int = 8001,
    http_port: int = 8000,
    metrics_port: int = 8002,
    gpu: bool = False,
    ready_timeout: float = 300.0,
    tls: ServerTLS | None = None,
    admin_key: str | None = None,
    model_control: str = "none",
) -> int:
    """Run tritonserver in the foreground until SIGTERM/SIGINT (returns 0 then), locked down:
    administrative protocols need `admin_key` (None: refused to everyone).

    Raises ServerUnavailable (exit 3) with the server's own reason when a model fails to load,
    readiness times out, or the server dies while serving.
    """
    server = TritonServer(
        model_repository, host=host, grpc_port=grpc_port, http_port=http_port,
        metrics_port=metrics_port, gpu=gpu, ready_timeout=ready_timeout, tls=tls,
        admin_key=admin_key, model_control=model_control,
    )
    with _stop_signals() as received:
        try:
            server.start()
            server.wait_ready(should_stop=lambda: bool(received))
            if not received:
                log.info("ready: grpc %s%s models: %s (http %s, server log %s)",
                         server.grpc_url, f" ({tls.describe()})" if tls else "",
                         ", ".join(server.models),
                         server.http_url, server.log_path)
            while not received:
                code = server.poll()
                if code is not None:
                    raise ServerUnavailable(
                        f"tritonserver exited with code {code} while serving: "
                        f"{server.last_log_line()}"
                    )
                time.sleep(0.2)
            name = signal.Signals(received[0]).name
            log.info("%s received: stopping tritonserver", name)
            code = server.stop()
            if code not in (0, None):
                log.warning("tritonserver exited with code %s: %s", code, server.last_log_line())
            log.info("stopped")
            return 0
        finally:
            server.stop()
            server.cleanup()

