"""Triton's Prometheus metrics as an operator reads them: live load per model and per GPU.

A server publishes counters (inferences, successful requests, microseconds spent queued and
computing) and gauges (pending requests, GPU utilisation and memory) on its metrics port in the
Prometheus text format. Counters only mean something as a difference: two scrapes a short
interval apart give inferences per second and the mean queue and compute time per request in
that interval. The names below are the ones the dashboard and alert rules in deploy/monitoring
use too (tests check them against a live server and Triton's documented GPU metrics).
"""

from __future__ import annotations

import http.client
import re
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from orchestrator.errors import InputError

DEFAULT_METRICS_PORT = 8002

PENDING = "nv_inference_pending_request_count"
INFERENCES = "nv_inference_count"
SUCCESSES = "nv_inference_request_success"
QUEUE_US = "nv_inference_queue_duration_us"
COMPUTE_US = "nv_inference_compute_infer_duration_us"
GPU_UTILIZATION = "nv_gpu_utilization"
GPU_MEMORY_USED = "nv_gpu_memory_used_bytes"
GPU_MEMORY_TOTAL = "nv_gpu_memory_total_bytes"
MODEL_METRICS = (PENDING, INFERENCES, SUCCESSES, QUEUE_US, COMPUTE_US)
# Published only by a server that sees a GPU (and runs with --allow-gpu-metrics=true).
GPU_METRICS = (GPU_UTILIZATION, GPU_MEMORY_USED, GPU_MEMORY_TOTAL)

_SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?\s*$")
_LABEL = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Scrape:
    """One read of a metrics page; `at` is time.monotonic() when it was read."""

    at: float
    samples: list[Sample]

    def total(self, name: str, **labels: str) -> float | None:
        """Sum over every series of `name` matching `labels` (e.g. all versions of a model);
        None when the page has no such series."""
        values = [s.value for s in self.samples
                  if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
        return sum(values) if values else None

    def names(self) -> set[str]:
        return {s.name for s in self.samples}


def parse(text: str) -> list[Sample]:
    """Samples of a Prometheus text-format page (comments and unparsable lines skipped)."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, label_text, value = match.groups()
        labels = {k: re.sub(r'\\[\\"n]', lambda m: _UNESCAPE[m.group(0)], v)
                  for k, v in _LABEL.findall(label_text or "")}
        try:
            samples.append(Sample(name, labels, float(value)))
        except ValueError:
            continue
    return samples


def scrape(url: str, timeout: float) -> Scrape:
    """Read and parse one metrics page; OSError (URLError included) when it cannot be read."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            text = reply.read().decode("utf-8", "replace")
    except http.client.HTTPException as exc:
        raise OSError(f"bad answer from {url}: {exc}") from exc
    return Scrape(time.monotonic(), parse(text))


def metrics_url_for(grpc_address: str, port: int = DEFAULT_METRICS_PORT) -> str:
    """The metrics page of the server whose gRPC endpoint is HOST:PORT: same host, `port`."""
    host = grpc_address.rpartition(":")[0] or grpc_address
    return f"http://{host}:{port}/metrics"


def check_metrics_url(url: str) -> str:
    """http(s)://HOST:PORT[/path], with /metrics added when no path is given."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InputError(f"--metrics-url {url!r} is not http://HOST:PORT/metrics")
    return parts._replace(path=parts.path or "/metrics").geturl()


@dataclass
class ModelLoad:
    """One model's load: pending now; rates and means over the interval (None: no requests)."""

    pending: float | None
    inferences_per_s: float | None
    queue_ms: float | None
    compute_ms: float | None


@dataclass
class GpuLoad:
    gpu: str
    utilization: float | None  # 0..1
    memory_used_bytes: float | None
    memory_total_bytes: float | None


def model_load(first: Scrape, second: Scrape, models: Iterable[str]) -> dict[str, ModelLoad]:
    """Each model's load from two scrapes of the same server, `first` the earlier one."""
    seconds = max(second.at - first.at, 1e-9)
    out = {}
    for model in models:
        def delta(name: str, model: str = model) -> float | None:
            a, b = first.total(name, model=model), second.total(name, model=model)
            return None if a is None or b is None else max(0.0, b - a)

        inferences, requests = delta(INFERENCES), delta(SUCCESSES)
        queue, compute = delta(QUEUE_US), delta(COMPUTE_US)
        per_request = requests is not None and requests > 0
        out[model] = ModelLoad(
            pending=second.total(PENDING, model=model),
            inferences_per_s=None if inferences is None else inferences / seconds,
            queue_ms=queue / requests / 1000 if per_request and queue is not None else None,
            compute_ms=compute / requests / 1000 if per_request and compute is not None else None,
        )
    return out


def gpu_load(scrape: Scrape) -> list[GpuLoad]:
    """Utilisation and memory of every GPU the page reports, by GPU UUID (none on CPU servers)."""
    gpus = sorted({s.labels.get("gpu_uuid", "") for s in scrape.samples if s.name in GPU_METRICS})
    return [GpuLoad(gpu=g, utilization=scrape.total(GPU_UTILIZATION, gpu_uuid=g),
                    memory_used_bytes=scrape.total(GPU_MEMORY_USED, gpu_uuid=g),
                    memory_total_bytes=scrape.total(GPU_MEMORY_TOTAL, gpu_uuid=g))
            for g in gpus]
