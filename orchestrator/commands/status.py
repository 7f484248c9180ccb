"""`orchestrator status`: what an operator of the shared servers needs to see at a glance.

Per endpoint: reachable and ready, TLS, each model's version, width, weights checksum, instances,
batch limit and priority levels (from the served config, as predict reads them), and live load
from the server's metrics page (pending requests, inferences/s, mean queue and compute time per
request over a short interval, GPU utilisation and memory). The last line says how many endpoints
a predict would use now and whether they agree on the weights: the same check predict makes, with
the same consequence (exit 2 when they disagree, 3 when none is usable).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

from orchestrator.embed.contract import MODELS
from orchestrator.embed.triton.discovery import resolve_servers
from orchestrator.embed.triton.endpoints import (
    ConnectionOptions,
    Endpoint,
    ModelSettings,
    first_line,
    model_differences,
    tls_problem,
    version_key,
)
from orchestrator.embed.triton.lockdown import ADMIN_GRPC_HEADER, ADMIN_KEY_ENV
from orchestrator.embed.triton.metrics import (
    DEFAULT_METRICS_PORT,
    GpuLoad,
    ModelLoad,
    Scrape,
    check_metrics_url,
    gpu_load,
    metrics_url_for,
    model_load,
    scrape,
)
from orchestrator.errors import InputError, Interrupted

log = logging.getLogger("orchestrator")

EXIT_OK, EXIT_DISAGREE, EXIT_NONE_USABLE = 0, 2, 3
SHA_CHARS = 12


@dataclass
class ModelStatus:
    name: str
    ready: bool
    version: str | None = None  # the one a new run would pin
    versions: list[str] = field(default_factory=list)  # every version it serves
    width: int | None = None
    weights_sha256: str | None = None
    precision: str | None = None
    kind: str | None = None
    instances: int | None = None
    max_batch_size: int | None = None
    priority_levels: int | None = None
    default_priority_level: int | None = None


@dataclass
class EndpointStatus:
    """One endpoint; `state` is "ready", "not ready" (answers, a model is missing or not ready)
    or "unreachable"; `agrees` is None until compared with the first usable endpoint."""

    url: str
    transport: str
    state: str = "unreachable"
    problem: str = ""
    models: dict[str, ModelStatus] = field(default_factory=dict)
    metrics_url: str = ""
    metrics_problem: str = ""
    load: dict[str, ModelLoad] = field(default_factory=dict)
    gpus: list[GpuLoad] = field(default_factory=list)
    agrees: bool | None = None
    differences: list[str] = field(default_factory=list)
    settings: dict[str, ModelSettings] = field(default_factory=dict, repr=False)

    @property
    def usable(self) -> bool:
        return self.state == "ready" and len(self.settings) == len(MODELS)


@dataclass
class Report:
    time: str
    endpoints: list[EndpointStatus]
    usable: int
    agree: bool
    exit_code: int
    summary: str
    pinned: dict[str, str] = field(default_factory=dict)  # model -> version a new run would pin


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _check(url: str, options: ConnectionOptions, timeout: float,
           versions: dict[str, str] | None = None) -> EndpointStatus:
    """Readiness per model, then each model's settings (at `versions`, else the newest it
    serves): what predict would see at start."""
    status = EndpointStatus(url=url, transport=options.describe())
    ep = Endpoint(url=url, options=options, request_timeout=timeout)
    headers = options.header_dict()
    try:
        ep.connect()
        if not ep.client.is_server_live(headers=headers, client_timeout=timeout):
            status.state, status.problem = "not ready", "server is not live"
            return status
        ready = {m: bool(ep.client.is_model_ready(m, headers=headers, client_timeout=timeout))
                 for m in MODELS}
        status.models = {m: ModelStatus(m, ok) for m, ok in ready.items()}
        missing = [m for m, ok in ready.items() if not ok]
        if missing:
            status.state = "not ready"
            status.problem = f"model {', '.join(missing)} not ready (or not in the repository)"
            reasons = _load_failures(ep, missing, timeout)
            if reasons:
                status.problem += ": " + "; ".join(reasons)
            return status
        status.settings = ep.read_settings(timeout, None, versions)
        for model, s in status.settings.items():
            config = ep.client.get_model_config(model, headers=headers, as_json=True,
                                                client_timeout=timeout)["config"]
            kinds = sorted({str(g.get("kind", "KIND_AUTO")).removeprefix("KIND_").lower()
                            for g in config.get("instance_group", []) or []})
            batching = config.get("dynamic_batching") or {}
            status.models[model] = ModelStatus(
                name=model, ready=True, version=s.version, versions=list(s.versions),
                width=s.width, weights_sha256=s.weights_sha256, precision=s.precision,
                kind="+".join(kinds) or "auto",
                instances=s.instances, max_batch_size=s.max_batch_size,
                priority_levels=_int(batching.get("priority_levels")),
                default_priority_level=_int(batching.get("default_priority_level")))
        status.state = "ready"
    except Interrupted:
        raise
    except Exception as exc:  # tritonclient's errors, ServerUnavailable from read_settings
        text = first_line(exc)
        tls = tls_problem(url, options, text)
        status.problem = f"TLS problem: {tls}" if tls else _short(text)
        status.state = "not ready" if status.models else "unreachable"
        status.settings = {}
    finally:
        ep.close()
    return status


def _load_failures(ep: Endpoint, models: list[str], timeout: float) -> list[str]:
    """Why each of `models` failed to load (e.g. a weights checksum mismatch), from the server's
    repository index: an administrative call, so only with $VIRNUCPRO_ADMIN_KEY set (else [])."""
    key = os.environ.get(ADMIN_KEY_ENV)
    if not key:
        return []
    try:
        index = ep.client.get_model_repository_index(headers={ADMIN_GRPC_HEADER: key}, as_json=True,
                                                     client_timeout=timeout)
    except Exception as exc:  # a wrong key, an old server: the reason stays unknown
        log.debug("%s: repository index unreadable: %s", ep.url, first_line(exc))
        return []
    return [" ".join(str(m.get("reason", "")).split()) for m in index.get("models", [])
            if m.get("name") in models and m.get("reason")]


def _short(grpc_error: str) -> str:
    """gRPC's connection failures end with the reason that matters ("Connection refused")."""
    if "failed to connect to all addresses" in grpc_error:
        return grpc_error.rpartition(": ")[2]
    return grpc_error


def _read(url: str, timeout: float) -> Scrape | str:
    try:
        return scrape(url, timeout)
    except OSError as exc:
        return str(getattr(exc, "reason", None) or exc)


def collect(servers: list[str], options: ConnectionOptions, *, metrics_urls: list[str] | None = None,
            metrics_port: int = DEFAULT_METRICS_PORT, interval: float = 2.0,
            timeout: float = 5.0) -> Report:
    """Check every endpoint (dns:/// names resolved now) and its metrics page, all at once."""
    urls = resolve_servers(servers)
    if metrics_urls:
        if len(metrics_urls) != len(urls):
            raise InputError(f"{len(metrics_urls)} --metrics-url for {len(urls)} endpoint(s) "
                             f"({', '.join(urls)}): give one per endpoint, in the same order")
        pages = [check_metrics_url(u) for u in metrics_urls]
    else:
        pages = [metrics_url_for(u, metrics_port) for u in urls]
    with ThreadPoolExecutor(max_workers=min(32, len(urls))) as pool:
        # Checks first: their calls (a width probe, for models of variable width) are not load.
        endpoints = list(pool.map(lambda url: _check(url, options, timeout), urls))
        pinned = _pins([e for e in endpoints if e.usable])
        # described again at the versions a new run would pin, where that is not the newest
        endpoints = list(pool.map(
            lambda e: _check(e.url, options, timeout, pinned) if e.usable and any(
                e.settings[m].version != v for m, v in pinned.items()) else e, endpoints))
        firsts = list(pool.map(lambda page: _read(page, timeout), pages))
        began = min((s.at for s in firsts if isinstance(s, Scrape)), default=time.monotonic())
        time.sleep(max(0.0, began + interval - time.monotonic()))
        seconds = list(pool.map(lambda pair: _read(pair[0], timeout) if isinstance(pair[1], Scrape)
                                else pair[1], zip(pages, firsts, strict=True)))
    for ep, page, a, b in zip(endpoints, pages, firsts, seconds, strict=True):
        ep.metrics_url = page
        if isinstance(a, Scrape) and isinstance(b, Scrape):
            ep.load = model_load(a, b, MODELS)
            ep.gpus = gpu_load(b)
        else:
            ep.metrics_problem = b if isinstance(b, str) else str(a)
    report = _verdict(endpoints)
    report.pinned = pinned
    if any(len(e.settings[m].versions) > 1 for e in endpoints if e.usable for m in MODELS):
        report.summary += "; a new run would pin " + ", ".join(
            f"{m} v{v}" for m, v in pinned.items())
    return report


def _pins(usable: list[EndpointStatus]) -> dict[str, str]:
    """Per model, the newest version every usable endpoint serves (predict's default)."""
    pins = {}
    for m in MODELS:
        common = set.intersection(*(set(e.settings[m].versions) for e in usable)) if usable else set()
        if common:
            pins[m] = max(common, key=version_key)
    return pins


def _verdict(endpoints: list[EndpointStatus]) -> Report:
    """Predict's start-up rule: the first usable endpoint is the reference; any other usable one
    serving other weights or widths stops the run."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    usable = [e for e in endpoints if e.usable]
    if not usable:
        return Report(now, endpoints, 0, False, EXIT_NONE_USABLE,
                      f"no usable endpoint of {len(endpoints)}: predict would stop (exit 3)")
    reference = usable[0]
    reference.agrees = True
    for ep in usable[1:]:
        ep.differences = model_differences(reference.settings, ep.settings)
        ep.agrees = not ep.differences
    differing = [e for e in usable if not e.agrees]
    if differing:
        detail = "; ".join(f"{e.url}: {', '.join(e.differences)}" for e in differing)
        return Report(now, endpoints, len(usable), False, EXIT_DISAGREE,
                      f"endpoints disagree on the models (reference {reference.url}): {detail}; "
                      "predict would refuse to run (exit 2)")
    return Report(now, endpoints, len(usable), True, EXIT_OK,
                  f"predict would use {len(usable)} of {len(endpoints)} endpoint(s); "
                  "they agree on the weights")


# -- output ----------------------------------------------------------------------------------------
def _num(value: float | None, fmt: str, unit: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{unit}"


def _model_text(m: ModelStatus, load: ModelLoad | None) -> str:
    if m.version is None:
        text = f"{m.name} {'ready' if m.ready else 'NOT READY'}"
    else:
        prio = "-" if m.priority_levels is None else str(m.priority_levels)
        if m.default_priority_level is not None:
            prio += f" (default {m.default_priority_level})"
        text = (f"{m.name} v{m.version} width {m.width} sha {(m.weights_sha256 or '')[:SHA_CHARS]} "
                f"{m.kind} x{m.instances} batch {m.max_batch_size} priorities {prio} "
                f"serves v{','.join(m.versions) or m.version} precision {m.precision}")
    if load is not None:
        text += (f": pending {_num(load.pending, '.0f')}, {_num(load.inferences_per_s, '.1f')} inf/s, "
                 f"queue {_num(load.queue_ms, '.1f', ' ms')}, compute {_num(load.compute_ms, '.1f', ' ms')}")
    return text


def _gpu_text(g: GpuLoad) -> str:
    gib = 1024 ** 3
    used = _num(None if g.memory_used_bytes is None else g.memory_used_bytes / gib, ".1f")
    total = _num(None if g.memory_total_bytes is None else g.memory_total_bytes / gib, ".1f")
    util = _num(None if g.utilization is None else 100 * g.utilization, ".0f", "%")
    return f"{g.gpu[:12] or 'gpu'} {util} {used}/{total} GiB"


def render(report: Report) -> str:
    """One line per endpoint and a final verdict line."""
    lines = []
    for ep in report.endpoints:
        parts = [f"{ep.state:<11} {ep.url}  {ep.transport}"]
        if ep.problem:
            parts.append(ep.problem)
        names = list(ep.models) or list(ep.load)
        parts += [_model_text(ep.models.get(n) or ModelStatus(n, False), ep.load.get(n))
                  for n in names]
        parts += [_gpu_text(g) for g in ep.gpus]
        if ep.metrics_problem:
            parts.append(f"metrics {ep.metrics_url}: {ep.metrics_problem}")
        if ep.agrees is False:
            parts.append(f"DIFFERS: {', '.join(ep.differences)}")
        lines.append(" | ".join(parts))
    lines.append(report.summary)
    return "\n".join(lines)


def as_json(report: Report) -> dict[str, Any]:
    data = asdict(report)
    for ep in data["endpoints"]:
        ep.pop("settings", None)
    return data


def run_status(servers: list[str], options: ConnectionOptions, *, metrics_urls: list[str] | None = None,
               metrics_port: int = DEFAULT_METRICS_PORT, interval: float = 2.0,
               timeout: float = 5.0, json_output: bool = False, watch: float | None = None,
               out: IO[str] | None = None) -> int:
    """Print the status once (or every `watch` seconds until Ctrl-C); returns the exit code of
    the last check: 0 usable and agreeing, 2 disagreeing, 3 none usable."""
    out = out or sys.stdout
    if interval <= 0 or timeout <= 0 or (watch is not None and watch <= 0):
        raise InputError("--interval, --timeout and --watch must be positive")
    code = EXIT_NONE_USABLE
    try:
        while True:
            began = time.monotonic()
            report = collect(servers, options, metrics_urls=metrics_urls, metrics_port=metrics_port,
                             interval=interval, timeout=timeout)
            code = report.exit_code
            if json_output:
                out.write(json.dumps(as_json(report)) + "\n")
            else:
                if watch is not None and out.isatty():
                    out.write("\033[H\033[J")
                out.write(f"{report.time}\n{render(report)}\n" if watch is not None
                          else render(report) + "\n")
            out.flush()
            if watch is None:
                return code
            time.sleep(max(0.0, watch - (time.monotonic() - began)))
    except KeyboardInterrupt:
        return code
