"""Embedding backends: the Triton gRPC client (`EmbeddingClient`) and the shared Protocol.

The client keeps several requests in flight to *both* models at once (DNABERT-S and ESM-2 run
side by side in the server), bounded per model so memory and server queues stay small. Defaults
come from the served model config: `batch_size = max_batch_size` and `max_in_flight = 2 x instance
count`, Triton's guidance for keeping every instance busy while the next batch already waits in
the queue. A server that goes away is retried with exponential backoff until
`VIRNUCPRO_RETRY_DEADLINE` seconds (default 60) pass without any successful response; then
`ServerUnavailable` (exit 3) names the URL and the model. At start the server must be live and
both models ready within `VIRNUCPRO_CONNECT_TIMEOUT` seconds (default 10); each request may take
up to `VIRNUCPRO_REQUEST_TIMEOUT` seconds (default 600).
"""

from __future__ import annotations

import logging
import os
import queue
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from orchestrator.errors import Interrupted, OrchestratorError, ServerUnavailable

log = logging.getLogger("orchestrator")

DNA_MODEL = "dnabert_s"
PROTEIN_MODEL = "esm2"
MODELS = (DNA_MODEL, PROTEIN_MODEL)
INPUT_NAME = "SEQUENCE"
OUTPUT_NAME = "EMBEDDING"

RETRY_DEADLINE_ENV = "VIRNUCPRO_RETRY_DEADLINE"
CONNECT_TIMEOUT_ENV = "VIRNUCPRO_CONNECT_TIMEOUT"
REQUEST_TIMEOUT_ENV = "VIRNUCPRO_REQUEST_TIMEOUT"
DEFAULT_RETRY_DEADLINE_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_REQUEST_TIMEOUT_S = 600.0
MAX_BACKOFF_S = 4.0
# Requests stay far below this; it only has to exceed the largest batch of embeddings
# (e.g. 256 frames x 2560 floats x 4 B = 2.6 MB) with room to spare.
MAX_MESSAGE_BYTES = 256 * 1024 * 1024

# gRPC status codes (as InferenceServerException.status() spells them) worth retrying: the
# server is restarting, overloaded or the connection dropped.
_RETRIABLE_STATUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED",
                     "CANCELLED")
_RETRIABLE_TEXT = ("not ready", "unknown model", "failed to connect", "socket closed",
                   "connection reset", "broken pipe", "unavailable", "not found")


class EmbeddingBackend(Protocol):
    """What predict needs from an embedding backend (Triton client or in-process encoders)."""

    widths: tuple[int, int]

    def models_info(self) -> list[dict[str, Any]]: ...

    def embed(self, nucleotides: list[str], proteins: list[str]
              ) -> tuple[np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise OrchestratorError(f"{name}={value!r} is not a number of seconds") from exc


def _status_text(exc: BaseException) -> tuple[str, str]:
    status = getattr(exc, "status", None)
    code = str(status() if callable(status) else status or "")
    return code, str(exc)


def is_retriable(exc: BaseException) -> bool:
    """True for errors that mean "server or connection not there right now", not "bad request"."""
    code, text = _status_text(exc)
    if any(code.endswith(s) for s in _RETRIABLE_STATUS):
        return True
    lowered = text.lower()
    return any(t in lowered for t in _RETRIABLE_TEXT)


def bytes_tensor_payload(strings: Sequence[str]) -> bytes:
    """Triton's BYTES wire format: each element as uint32 little-endian length + raw bytes."""
    pack = struct.Struct("<I").pack
    parts: list[bytes] = []
    for s in strings:
        b = s.encode("ascii")
        parts.append(pack(len(b)))
        parts.append(b)
    return b"".join(parts)


@dataclass
class _Job:
    model: str
    rows: np.ndarray  # indices into the window's frame list, shape [b]
    payload: bytes
    attempts: int = 0
    not_before: float = 0.0


@dataclass
class _ModelSettings:
    name: str
    version: str
    width: int
    max_batch_size: int
    instances: int
    batch_size: int
    max_in_flight: int
    weights_sha256: str
    stats: dict[str, float] = field(default_factory=lambda: {"requests": 0, "retries": 0,
                                                             "seconds": 0.0, "frames": 0})


class EmbeddingClient:
    """Embeds frames through Triton: `dnabert_s` on nucleotide slices, `esm2` on proteins."""

    def __init__(
        self,
        url: str,
        *,
        batch_size: int | None = None,
        max_in_flight: int | None = None,
        connect_timeout: float | None = None,
        retry_deadline: float | None = None,
    ) -> None:
        import tritonclient.grpc as grpcclient  # noqa: F401  (fail early if missing)

        self.url = url
        self.connect_timeout = (connect_timeout if connect_timeout is not None
                                else _env_seconds(CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT_S))
        self.retry_deadline = (retry_deadline if retry_deadline is not None
                               else _env_seconds(RETRY_DEADLINE_ENV, DEFAULT_RETRY_DEADLINE_S))
        self.request_timeout = _env_seconds(REQUEST_TIMEOUT_ENV, DEFAULT_REQUEST_TIMEOUT_S)
        self._client = self._new_client()
        self._lock = threading.Lock()
        self._wait_ready()
        self.models = {m: self._settings(m, batch_size, max_in_flight) for m in MODELS}
        self.widths = (self.models[DNA_MODEL].width, self.models[PROTEIN_MODEL].width)

    # -- connection ------------------------------------------------------------------------------
    def _new_client(self) -> Any:
        import tritonclient.grpc as grpcclient

        args = [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            # Reconnect quickly once a restarted server listens again (gRPC's default backoff
            # grows to 120 s, longer than our whole retry deadline).
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
        ]
        return grpcclient.InferenceServerClient(self.url, channel_args=args)

    def _reconnect(self) -> None:
        old = self._client
        self._client = self._new_client()
        try:
            old.close()
        except Exception:  # the old channel may already be broken; nothing to save
            pass

    def _wait_ready(self) -> None:
        """Bounded start-up check: server live and both models ready, else ServerUnavailable."""
        deadline = time.monotonic() + self.connect_timeout
        problem = "no answer"
        while True:
            remaining = deadline - time.monotonic()
            per_call = max(0.5, min(3.0, remaining))
            try:
                if not self._client.is_server_live(client_timeout=per_call):
                    problem = "server is not live"
                else:
                    missing = [m for m in MODELS
                               if not self._client.is_model_ready(m, client_timeout=per_call)]
                    if not missing:
                        return
                    problem = f"model {', '.join(missing)} not ready (or not in the repository)"
            except Interrupted:
                raise
            except Exception as exc:  # tritonclient raises InferenceServerException
                problem = _status_text(exc)[1].splitlines()[0] if str(exc) else type(exc).__name__
            if time.monotonic() + 0.5 > deadline:
                break
            time.sleep(0.5)
        raise ServerUnavailable(
            f"Triton server at {self.url} unavailable after {self.connect_timeout:.0f} s: "
            f"{problem}; "
            "start it (orchestrator serve --model-repository ...) or pass --server HOST:PORT"
        )

    # -- model settings --------------------------------------------------------------------------
    def _settings(self, model: str, batch_size: int | None, max_in_flight: int | None
                  ) -> _ModelSettings:
        try:
            config = self._client.get_model_config(model, as_json=True,
                                                   client_timeout=self.connect_timeout)["config"]
            meta = self._client.get_model_metadata(model, as_json=True,
                                                   client_timeout=self.connect_timeout)
        except Exception as exc:
            raise ServerUnavailable(f"Triton server at {self.url}: cannot read model {model}: "
                                    f"{_status_text(exc)[1]}") from exc
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
        sha = (params.get("weights_sha256", {}) or {}).get("string_value") or "unknown"
        versions = meta.get("versions") or ["unknown"]
        version = str(max(versions, key=lambda v: int(v) if str(v).isdigit() else -1))
        width = -1
        for out in meta.get("outputs", []):
            if out.get("name") == OUTPUT_NAME:
                width = int(out.get("shape", [-1])[-1])
        settings = _ModelSettings(
            name=model, version=version, width=width, max_batch_size=max_bs, instances=instances,
            batch_size=min(batch_size or max_bs, max_bs),
            max_in_flight=max_in_flight or 2 * instances,
            weights_sha256=sha,
        )
        if settings.width <= 0:  # variable output dims: ask the model once with a tiny input
            probe = "ACGTACGTAC" if model == DNA_MODEL else "MKV"
            settings.width = int(self._infer_sync(model, [probe]).shape[1])
        return settings

    def _infer_sync(self, model: str, strings: list[str]) -> np.ndarray:
        import tritonclient.grpc as grpcclient

        inp = grpcclient.InferInput(INPUT_NAME, [len(strings), 1], "BYTES")
        inp._raw_content = bytes_tensor_payload(strings)
        try:
            res = self._client.infer(model, [inp], client_timeout=self.request_timeout)
        except Exception as exc:
            raise ServerUnavailable(f"model {model} at {self.url} failed: {exc}") from exc
        return res.as_numpy(OUTPUT_NAME)

    def models_info(self) -> list[dict[str, Any]]:
        """Names, versions, checksums and widths as the server reports them (for run.json)."""
        return [
            {"name": s.name, "version": s.version, "weights_sha256": s.weights_sha256,
             "width": s.width, "max_batch_size": s.max_batch_size, "instances": s.instances,
             "batch_size": s.batch_size, "max_in_flight": s.max_in_flight}
            for s in self.models.values()
        ]

    def stats(self) -> dict[str, dict[str, float]]:
        return {m: dict(s.stats) for m, s in self.models.items()}

    # -- embedding -------------------------------------------------------------------------------
    def _jobs(self, model: str, strings: list[str]) -> deque[_Job]:
        """Length-sorted batches, so each request pads little on the server."""
        settings = self.models[model]
        lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
        order = np.argsort(lengths, kind="stable")
        jobs: deque[_Job] = deque()
        for start in range(0, len(order), settings.batch_size):
            rows = order[start:start + settings.batch_size]
            payload = bytes_tensor_payload([strings[i] for i in rows])
            jobs.append(_Job(model, rows, payload))
        return jobs

    def _submit(self, job: _Job, done: queue.Queue[tuple[_Job, Any, Any]]) -> None:
        import tritonclient.grpc as grpcclient

        inp = grpcclient.InferInput(INPUT_NAME, [len(job.rows), 1], "BYTES")
        # The payload is already in Triton's BYTES wire format; handing it over directly skips
        # tritonclient's per-element serialisation (set_data_from_numpy does the same assignment).
        inp._raw_content = job.payload

        def callback(result: Any, error: Any) -> None:
            done.put((job, result, error))

        self._client.async_infer(job.model, [inp], callback,
                                 client_timeout=self.request_timeout)

    def embed(self, nucleotides: list[str], proteins: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings [n, dna_width] and [n, protein_width] float32, rows in the given order."""
        n = len(nucleotides)
        outputs = {m: np.empty((n, s.width), dtype=np.float32) for m, s in self.models.items()}
        if n == 0:
            return outputs[DNA_MODEL], outputs[PROTEIN_MODEL]
        pending = {DNA_MODEL: self._jobs(DNA_MODEL, nucleotides),
                   PROTEIN_MODEL: self._jobs(PROTEIN_MODEL, proteins)}
        remaining = sum(len(j) for j in pending.values())
        in_flight = dict.fromkeys(MODELS, 0)
        started: dict[int, float] = {}
        done: queue.Queue[tuple[_Job, Any, Any]] = queue.Queue()
        outage_since: float | None = None
        last_error = ""
        while remaining:
            now = time.monotonic()
            for model in MODELS:
                settings = self.models[model]
                jobs = pending[model]
                while (jobs and in_flight[model] < settings.max_in_flight
                       and jobs[0].not_before <= now):
                    job = jobs.popleft()
                    started[id(job)] = now
                    try:
                        self._submit(job, done)
                    except Interrupted:
                        raise
                    except Exception as exc:  # channel closed under us: treat like a failed call
                        done.put((job, None, exc))
                    in_flight[model] += 1
            try:
                job, result, error = done.get(timeout=0.25)
            except queue.Empty:
                self._check_deadline(outage_since, last_error)
                continue
            in_flight[job.model] -= 1
            settings = self.models[job.model]
            elapsed = time.monotonic() - started.pop(id(job), now)
            if error is None:
                try:
                    emb = result.as_numpy(OUTPUT_NAME)
                except Interrupted:
                    raise
                except Exception as exc:
                    raise OrchestratorError(f"model {job.model} at {self.url} answered without "
                                            f"{OUTPUT_NAME}: {exc}") from exc
                if emb is None or emb.shape != (len(job.rows), settings.width):
                    raise OrchestratorError(
                        f"model {job.model} at {self.url} returned shape "
                        f"{None if emb is None else emb.shape}, expected "
                        f"{(len(job.rows), settings.width)}")
                outputs[job.model][job.rows] = emb
                remaining -= 1
                outage_since = None
                settings.stats["requests"] += 1
                settings.stats["frames"] += len(job.rows)
                settings.stats["seconds"] += elapsed
                continue
            if not is_retriable(error):
                raise OrchestratorError(f"model {job.model} at {self.url} rejected a request: "
                                        f"{_status_text(error)[1]}")
            last_error = f"model {job.model}: {_status_text(error)[1].splitlines()[0]}"
            if outage_since is None:
                outage_since = now
                log.warning("Triton at %s: %s; retrying for up to %.0f s",
                            self.url, last_error, self.retry_deadline)
                with self._lock:
                    self._reconnect()
            self._check_deadline(outage_since, last_error)
            job.attempts += 1
            settings.stats["retries"] += 1
            job.not_before = time.monotonic() + min(MAX_BACKOFF_S, 0.25 * 2 ** (job.attempts - 1))
            pending[job.model].appendleft(job)
        return outputs[DNA_MODEL], outputs[PROTEIN_MODEL]

    def _check_deadline(self, outage_since: float | None, last_error: str) -> None:
        if outage_since is not None and time.monotonic() - outage_since > self.retry_deadline:
            raise ServerUnavailable(
                f"Triton server at {self.url} unavailable for {self.retry_deadline:.0f} s "
                f"({last_error}); finished windows are checkpointed, rerun the same command "
                "to resume once the server is back")

    def close(self) -> None:
        try:
            self._client.close()
        except Exception:  # closing a broken channel must not hide the real error
            pass

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
