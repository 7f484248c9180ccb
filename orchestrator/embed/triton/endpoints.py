"""One Triton server as the client sees it: address, connection options, model settings, health.

`EmbeddingClient` (`client`) spreads a run's requests over several `Endpoint`s; everything about
talking to *one* server lives here: parsing the `--server` lists, TLS and header options, the
bounded start-up check (with a TLS diagnosis when the handshake fails), reading each model's
settings from its served config, and the health probe used to re-admit a server that came back.
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import ssl
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from encoders.repository import expected_sha256
from orchestrator.embed.contract import DNA_MODEL, INPUT_NAME, MODELS, OUTPUT_NAME
from orchestrator.embed.dispatch.events import BUSY, FAILED, REJECTED
from orchestrator.embed.dispatch.identity import (
    ModelSettings,
    in_flight_limit,
    model_differences,
    version_key,
)
from orchestrator.errors import InputError, Interrupted, ServerUnavailable, TLSProblem

log = logging.getLogger("orchestrator")

# Requests stay far below this; it only has to exceed the largest batch of embeddings
# (e.g. 256 frames x 2560 floats x 4 B = 2.6 MB) with room to spare.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

# Model config parameter: requests one client should keep in flight per instance of the model
# (its fair share of a shared queue); --max-in-flight above it is clamped.
FAIR_SHARE_PARAMETER = "max_in_flight_per_instance"
# A server shedding load: its queue is full (max_queue_size) or a request timed out in it.
_BUSY_TEXT = ("exceeds maximum queue size", "request timeout expired")
BUSY_RETRY_MAX_S = 2.0
PRECISION_PARAMETER = "precision"

# gRPC metadata keys: lowercase letters, digits, '-', '_', '.'; "grpc-" is reserved.
_HEADER_KEY = re.compile(r"^[0-9a-z_.-]+$")


def parse_headers(values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """KEY=VALUE pairs for gRPC metadata: keys lowercased, checked against gRPC's rules."""
    headers: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise InputError(f"--header {value!r} is not KEY=VALUE")
        if not _HEADER_KEY.match(key) or key.startswith("grpc-") or key.endswith("-bin"):
            raise InputError(f"--header key {key!r} is not a valid gRPC metadata key "
                             "(lowercase letters, digits, - _ .; not grpc-*, not *-bin)")
        if not text.isascii() or not text.isprintable():
            raise InputError(f"--header {key}: the value must be printable ASCII")
        headers[key] = text
    return tuple(headers.items())


@dataclass(frozen=True)
class ConnectionOptions:
    """How every endpoint of a run is reached: TLS (server CA, client certificate) and headers."""

    ssl: bool = False
    root_cert: str | None = None
    cert: str | None = None
    key: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise InputError("--ssl-cert and --ssl-key go together (client certificate and its key)")
        for label, path in (("--ssl-root-cert", self.root_cert), ("--ssl-cert", self.cert),
                            ("--ssl-key", self.key)):
            if path is not None and not os.path.isfile(path):
                raise InputError(f"{label} {path}: no such file")
        if not self.ssl and (self.root_cert or self.cert):
            object.__setattr__(self, "ssl", True)  # a certificate given means TLS is wanted

    def header_dict(self) -> dict[str, str] | None:
        return dict(self.headers) or None

    def describe(self) -> str:
        if not self.ssl:
            return "plaintext"
        return "TLS with client certificate" if self.cert else "TLS"


@dataclass
class Endpoint:
    """One Triton server's connection and what it serves. `state` is its start-up check ("up"
    when it answered, else "down"); during a run the dispatch core keeps its state."""

    url: str
    options: ConnectionOptions
    request_timeout: float
    state: str = "down"
    settings: dict[str, ModelSettings] = field(default_factory=dict)
    last_error: str = ""
    client: Any = None
    priority: int = 0  # Triton request priority of this run's calls (0: the model's default)

    # -- connection ------------------------------------------------------------------------------
    def connect(self) -> None:
        """A fresh gRPC channel (the old one, if any, is closed: its calls end as CANCELLED)."""
        import tritonclient.grpc as grpcclient

        args = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # Reconnect quickly once a restarted server listens again (gRPC's default backoff
            # grows to 120 s, longer than the whole retry deadline).
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        old = self.client
        o = self.options
        self.client = grpcclient.InferenceServerClient(
            self.url, ssl=o.ssl, root_certificates=o.root_cert, private_key=o.key,
            certificate_chain=o.cert, channel_args=args)
        if old is not None:
            close_quietly(old)

    def close(self) -> None:
        if self.client is not None:
            close_quietly(self.client)
            self.client = None

    def wait_ready(self, timeout: float) -> None:
        """Bounded start-up check: server live and both models ready, else ServerUnavailable.

        A failed TLS handshake (or a plaintext client meeting a TLS server) is reported at once
        as a TLS problem: waiting longer would not change the answer.
        """
        deadline = time.monotonic() + timeout
        problem: str | None = "no answer"
        while True:
            per_call = max(0.5, min(3.0, deadline - time.monotonic()))
            try:
                problem = self._not_ready(per_call)
                if problem is None:
                    return
            except Interrupted:
                raise
            except Exception as exc:  # tritonclient raises InferenceServerException
                problem = first_line(exc)
                tls = tls_problem(self.url, self.options, problem)
                if tls is not None:
                    raise TLSProblem(f"TLS problem with Triton at {self.url}: {tls}") from exc
            if time.monotonic() + 0.5 > deadline:
                break
            time.sleep(0.5)
        raise ServerUnavailable(f"Triton server at {self.url} unavailable after {timeout:.0f} s: "
                                f"{problem}")

    def _not_ready(self, timeout: float) -> str | None:
        """None when the server is live and both models are ready, else what is missing
        (`timeout` seconds per call; transport errors are raised)."""
        headers = self.options.header_dict()
        if not self.client.is_server_live(headers=headers, client_timeout=timeout):
            return "server is not live"
        missing = [m for m in MODELS
                   if not self.client.is_model_ready(m, headers=headers, client_timeout=timeout)]
        return f"model {', '.join(missing)} not ready (or not in the repository)" if missing else None

    def probe(self, timeout: float) -> bool:
        """Health check: live and both models ready within `timeout` seconds per call."""
        try:
            return self._not_ready(timeout) is None
        except Interrupted:
            raise
        except Exception as exc:
            self.last_error = first_line(exc)
            return False

    # -- model settings --------------------------------------------------------------------------
    def read_settings(self, timeout: float, max_in_flight: int | None,
                      versions: dict[str, str] | None = None,
                      reference: dict[str, ModelSettings] | None = None
                      ) -> dict[str, ModelSettings]:
        """Each model's identity, batch limit and instance count from the served config.

        `versions`: the version to describe per model (else the newest served). With a
        `reference`, a model whose width is left to the weights is asked once with a tiny input
        only when nothing else already tells it apart: a refused server gets no request at all.
        """
        versions = versions or {}
        settings = {m: self._model_settings(m, timeout, max_in_flight, versions.get(m))
                    for m in MODELS}
        if reference is not None and model_differences(reference, settings):
            return settings
        for model, s in settings.items():
            if s.width <= 0 and s.missing is None:  # variable output dims: ask the model once
                probe = "ACGTACGTAC" if model == DNA_MODEL else "MKV"
                s.width = int(self.infer_sync(model, [probe], s.version).shape[1])
        return settings

    def _model_settings(self, model: str, timeout: float, max_in_flight: int | None,
                        version: str | None) -> ModelSettings:
        headers = self.options.header_dict()
        try:
            config = self.client.get_model_config(model, headers=headers, as_json=True,
                                                  client_timeout=timeout)["config"]
            meta = self.client.get_model_metadata(model, headers=headers, as_json=True,
                                                  client_timeout=timeout)
        except Interrupted:
            raise
        except Exception as exc:
            raise ServerUnavailable(f"Triton server at {self.url}: cannot read model {model}: "
                                    f"{first_line(exc)}") from exc
        max_bs = int(config.get("max_batch_size", 0) or 0)
        if max_bs <= 0:
            raise ServerUnavailable(f"model {model} at {self.url} has max_batch_size {max_bs}; "
                                    "the contract needs a batching model (max_batch_size > 0)")
        instances = 0
        for group in config.get("instance_group", []) or [{}]:
            count = int(group.get("count", 1) or 1)
            gpus = group.get("gpus") or []
            instances += count * max(1, len(gpus))
        instances = max(1, instances)
        params = config.get("parameters", {}) or {}

        def param(key: str) -> str | None:
            return (params.get(key, {}) or {}).get("string_value") or None

        limit, clamped_from = in_flight_limit(
            _fair_share(param(FAIR_SHARE_PARAMETER), instances, f"model {model} at {self.url}"),
            instances, max_in_flight)
        served = tuple(sorted((str(v) for v in meta.get("versions") or []), key=version_key))
        missing = None
        if version is None:
            version = served[-1] if served else "unknown"
        elif version not in served:
            missing = version
        sha = expected_sha256({k: param(k) for k in params}, version) or "unknown"
        width = -1
        for out in meta.get("outputs", []):
            if out.get("name") == OUTPUT_NAME:
                width = int(out.get("shape", [-1])[-1])
        return ModelSettings(name=model, version=version, width=width, max_batch_size=max_bs,
                             instances=instances, max_in_flight=limit, weights_sha256=sha,
                             precision=param(PRECISION_PARAMETER) or "unknown", versions=served,
                             missing=missing, clamped_from=clamped_from)

    def infer_sync(self, model: str, strings: list[str], version: str = "") -> Any:
        import tritonclient.grpc as grpcclient

        inp = grpcclient.InferInput(INPUT_NAME, [len(strings), 1], "BYTES")
        inp._raw_content = bytes_tensor_payload(strings)
        deadline = time.monotonic() + self.request_timeout
        pause = 0.05
        while True:
            try:
                res = self.client.infer(model, [inp], model_version=version,
                                        headers=self.options.header_dict(),
                                        client_timeout=self.request_timeout,
                                        priority=self.priority)
                return res.as_numpy(OUTPUT_NAME)
            except Interrupted:
                raise
            except Exception as exc:
                # a server shedding load is busy, not broken: try again after a jittered pause
                if not is_busy(exc) or time.monotonic() + pause > deadline:
                    raise ServerUnavailable(f"model {model} at {self.url} failed: "
                                            f"{first_line(exc)}") from exc
            time.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(BUSY_RETRY_MAX_S, 2 * pause)


def _fair_share(per_instance: str | None, instances: int, where: str) -> int | None:
    """The config's fair-share parameter x instances; None when absent or not a positive number."""
    if not per_instance:
        return None
    try:
        share = int(per_instance) * instances
    except ValueError:
        log.warning("warning: %s: parameter %s=%r is not a whole number; ignored", where,
                    FAIR_SHARE_PARAMETER, per_instance)
        return None
    return share if share > 0 else None


def is_busy(exc: BaseException) -> bool:
    """True for "queue full" answers: the server is there but sheds load; retry later."""
    status = getattr(exc, "status", None)
    code = str(status() if callable(status) else status or "")
    if code.endswith("RESOURCE_EXHAUSTED"):
        return True
    lowered = str(exc).lower()
    return any(t in lowered for t in _BUSY_TEXT)


# gRPC status codes (as InferenceServerException.status() spells them) that mean "server or
# connection not there right now": restarting, overloaded, or the connection dropped.
_RETRIABLE_STATUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED",
                     "CANCELLED")
# "is not healthy": the Python backend's process of that model on that server stopped answering
# its health checks (the server was frozen and came back, or the process died); the server's
# fault, not the request's, so the request goes elsewhere.
_RETRIABLE_TEXT = ("not ready", "unknown model", "failed to connect", "socket closed",
                   "connection reset", "broken pipe", "unavailable", "not found", "is not healthy")

def is_retriable(exc: BaseException) -> bool:
    """True for errors that mean "server or connection not there right now", not "bad request"."""
    status = getattr(exc, "status", None)
    code = str(status() if callable(status) else status or "")
    if any(code.endswith(s) for s in _RETRIABLE_STATUS):
        return True
    lowered = str(exc).lower()
    return any(t in lowered for t in _RETRIABLE_TEXT)


def outcome_of(error: BaseException) -> str:
    """The core's reply outcome for a failed call: rejected (bad request), busy or failed."""
    if not is_retriable(error):
        return REJECTED
    return BUSY if is_busy(error) else FAILED


def parse_model_versions(values: Iterable[str]) -> dict[str, str]:
    """`--model-version` values: `N` (both models) or `MODEL=N`, later ones win (InputError)."""
    pinned: dict[str, str] = {}
    for value in values:
        model, sep, version = value.strip().rpartition("=")
        if not version.isdigit() or int(version) <= 0 or (sep and model not in MODELS):
            raise InputError(f"--model-version {value!r} is not N or MODEL=N (a version number "
                             f"above 0; models: {', '.join(MODELS)})")
        for m in ([model] if sep else MODELS):
            pinned[m] = str(int(version))
    return pinned


def bytes_tensor_payload(strings: Sequence[str]) -> bytes:
    """Triton's BYTES wire format: each element as uint32 little-endian length + raw bytes."""
    parts: list[bytes] = []
    for s in strings:
        b = s.encode("ascii")
        parts.append(len(b).to_bytes(4, "little"))
        parts.append(b)
    return b"".join(parts)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def close_quietly(client: Any) -> None:
    try:
        client.close()
    except Exception:  # closing a broken channel must not hide the real error
        pass


# -- TLS diagnosis ---------------------------------------------------------------------------------
_HANDSHAKE_TEXT = re.compile(r"(?:Tls|Ssl) handshake failed[^:]*:\s*(?:SSL_ERROR_SSL:\s*)?(.*)",
                             re.IGNORECASE)


def tls_problem(url: str, options: ConnectionOptions, grpc_error: str) -> str | None:
    """A one-line explanation when a failed connection is a TLS problem, else None.

    gRPC names a failed handshake in its error text; a plaintext client meeting a TLS server,
    or a TLS client without the certificate a mutual-TLS server demands, only sees the socket
    close, so those cases are told apart by a handshake of our own with Python's `ssl`.
    """
    match = _HANDSHAKE_TEXT.search(grpc_error)
    if match:
        reason = match.group(1).rstrip(": OK").strip()
        reason = reason.split("OPENSSL_internal:")[-1]
        return (f"handshake failed ({reason}); check --ssl-root-cert (the CA that signed the "
                "server's certificate) and that the address matches the certificate")
    if "socket closed" not in grpc_error.lower() and "connection reset" not in grpc_error.lower():
        return None
    host, _, port = url.rpartition(":")
    host = host.strip("[]")
    if not options.ssl:
        if _speaks_tls(host, int(port)):
            return "the server requires TLS but this client connected in plaintext; pass --ssl " \
                   "(and --ssl-root-cert CA.pem for a private CA)"
        return None
    rejection = _tls_rejection(host, int(port), options)
    if rejection is None:
        return None
    if options.cert:
        return (f"the server rejected this client's certificate ({rejection}); --ssl-cert must be "
                "signed by a CA the server trusts")
    return (f"the server requires a client certificate ({rejection}); pass --ssl-cert and "
            "--ssl-key signed by a CA the server trusts")


def _speaks_tls(host: str, port: int, timeout: float = 2.0) -> bool:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=host):
            return True
    except (OSError, ssl.SSLError):
        return False


def _tls_rejection(host: str, port: int, options: ConnectionOptions, timeout: float = 2.0
                   ) -> str | None:
    """How a TLS server turns us away after the handshake, or None if it talks HTTP/2 to us.

    With TLS 1.3 the client finishes its handshake before the server has checked the client's
    certificate; a server that wants one (or rejects ours) then sends an alert or just closes.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # gRPC has accepted the server's certificate already
    ctx.set_alpn_protocols(["h2"])
    if options.cert and options.key:
        ctx.load_cert_chain(options.cert, options.key)
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")  # the HTTP/2 client preface
            if tls.recv(1):
                return None  # the server answered: not a TLS problem
            return "connection closed right after the TLS handshake"
    except ssl.SSLError as exc:
        return str(getattr(exc, "reason", "") or exc).lower().replace("_", " ")
    except OSError:
        return None
