"""The start of a run over Triton servers: every endpoint at once, the model versions pinned.

Connects to every endpoint in parallel within the connect timeout, pins each model's version
(the one asked for, else the newest every endpoint serves) and the run's identity from the first
serving endpoint; one that serves other weights ends the run (exit 2), none usable exit 3. With a
discovery source and no endpoint up yet, waits up to the retry deadline for the first one. The
endpoints' states then go to the dispatch core (`Start`), which decides from there on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Protocol

from orchestrator.embed.contract import MODELS
from orchestrator.embed.dispatch import Policy, model_differences, pin_versions
from orchestrator.embed.triton.discovery import Discovery
from orchestrator.embed.triton.endpoints import FAIR_SHARE_PARAMETER, Endpoint, ModelSettings, first_line
from orchestrator.errors import InputError, OrchestratorError, ServerUnavailable, TLSProblem

log = logging.getLogger("orchestrator")

RETRY_DEADLINE_ENV = "VIRNUCPRO_RETRY_DEADLINE"
CONNECT_TIMEOUT_ENV = "VIRNUCPRO_CONNECT_TIMEOUT"
REQUEST_TIMEOUT_ENV = "VIRNUCPRO_REQUEST_TIMEOUT"
DEFAULT_RETRY_DEADLINE_S = Policy.retry_deadline_s
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_REQUEST_TIMEOUT_S = 600.0
# Between two rounds of start-up checks while waiting for a first endpoint.
START_RETRY_S = 0.5


class EmbeddingClient(Protocol):
    """What the start reads and fills in of the client being started (`client.EmbeddingClient`)."""

    urls: list[str]
    endpoints: dict[str, Endpoint]
    discovery: Discovery
    asked_versions: dict[str, str]
    versions: dict[str, str]
    connect_timeout: float
    retry_deadline: float
    max_in_flight: int | None

    def endpoint(self, url: str) -> Endpoint: ...


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise OrchestratorError(f"{name}={value!r} is not a number of seconds") from exc


def timeouts(connect: float | None, retry_deadline: float | None) -> tuple[float, float, float]:
    """(connect timeout, retry deadline, request timeout): the arguments, else the environment,
    else the defaults."""
    return (connect if connect is not None
            else _env_seconds(CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT_S),
            retry_deadline if retry_deadline is not None
            else _env_seconds(RETRY_DEADLINE_ENV, DEFAULT_RETRY_DEADLINE_S),
            _env_seconds(REQUEST_TIMEOUT_ENV, DEFAULT_REQUEST_TIMEOUT_S))


def start_endpoints(client: EmbeddingClient, batch_size: int | None
                    ) -> tuple[dict[str, ModelSettings], dict[str, int]]:
    """The run's pinned identity and its request size per model (`batch_size`, at most the
    smallest max_batch_size of the usable endpoints)."""
    reference = _start(client)
    usable = [e for e in client.endpoints.values()
              if e.state == "up" and not model_differences(reference, e.settings)]
    warn_clamped(client, usable)
    return reference, {m: min(batch_size or 1 << 30, *(e.settings[m].max_batch_size for e in usable))
                       for m in MODELS}


def _start(client: EmbeddingClient) -> dict[str, ModelSettings]:
    """Connect to every endpoint at once and pin the run's model identity; refuse any that
    serves other models (exit 2), report those that are down (exit 3 only when none is
    usable). With a discovery source, wait up to the retry deadline for a first endpoint."""
    errors = try_start(client, list(client.endpoints.values()), client.connect_timeout)
    up = [e for e in client.endpoints.values() if e.state == "up"]
    if not up and client.discovery.dynamic:
        up = wait_for_first(client, errors)
    if not up:
        if len(client.endpoints) == 1:
            exc = errors[client.urls[0]]
            if isinstance(exc, TLSProblem):
                raise exc
            if not isinstance(exc, OrchestratorError):
                raise ServerUnavailable(f"Triton server at {client.urls[0]}: {first_line(exc)}")
            raise ServerUnavailable(f"{exc}; start it (orchestrator serve --model-repository "
                                    "...) or pass --server HOST:PORT") from exc
        raise ServerUnavailable(
            f"none of the {len(client.endpoints)} Triton endpoints is usable: "
            + "; ".join(first_line(errors[u]) for u in client.urls))
    client.versions = pin_versions(client.asked_versions, {e.url: e.settings for e in up})
    for ep in up:
        if any(ep.settings[m].version != v for m, v in client.versions.items()):
            ep.settings = ep.read_settings(client.connect_timeout, client.max_in_flight,
                                           client.versions)
    serving = [e for e in up if not any(s.missing for s in e.settings.values())]
    if not serving:
        raise InputError("no endpoint serves both pinned versions (" + ", ".join(
            f"{m} {v}" for m, v in client.versions.items()) + "); choose with --model-version")
    reference = serving[0]
    for ep in serving:
        diffs = model_differences(reference.settings, ep.settings)
        if diffs:
            raise InputError(
                f"Triton at {ep.url} serves different models than {reference.url}: "
                f"{'; '.join(diffs)}; every endpoint of a run must serve the same weights")
    return reference.settings

def try_start(client: EmbeddingClient, endpoints: list[Endpoint], timeout: float) -> dict[str, BaseException]:
    """Connect, wait until ready and read the settings of each endpoint, all at once; the
    errors of those that did not come up, per address."""
    errors: dict[str, BaseException] = {}

    def start(ep: Endpoint) -> None:
        try:
            ep.connect()
            ep.wait_ready(timeout)
            ep.settings = ep.read_settings(timeout, client.max_in_flight, client.asked_versions)
            ep.state = "up"
        except BaseException as exc:  # reported by the caller, per endpoint
            errors[ep.url] = exc
            ep.last_error = first_line(exc)

    threads = [threading.Thread(target=start, args=(ep,), daemon=True) for ep in endpoints]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors

def wait_for_first(client: EmbeddingClient, errors: dict[str, BaseException]) -> list[Endpoint]:
    """No endpoint of a discovery source answers yet (pods still starting, an empty list):
    read the sources again and try every address until one is up or the deadline passes."""
    deadline = time.monotonic() + client.retry_deadline
    log.warning("warning: no endpoint of %s answers yet; waiting up to %.0f s for the first",
                client.discovery.describe(), client.retry_deadline)
    while True:
        addresses = client.discovery.refresh(time.monotonic(), force=True) or []
        current = [client.endpoint(url) for url in addresses]
        errors.update(try_start(client, current, min(client.connect_timeout, 2.0)))
        up = [e for e in current if e.state == "up"]
        if up:
            return up
        if time.monotonic() > deadline:
            why = [*client.discovery.problems.values(),
                   *(f"{e.url}: {first_line(errors[e.url])}" for e in current
                     if e.url in errors)]
            raise ServerUnavailable(
                f"no Triton endpoint of {client.discovery.describe()} answered within "
                f"{client.retry_deadline:.0f} s ({'; '.join(why) or 'no endpoint listed'})")
        time.sleep(START_RETRY_S)

def warn_clamped(client: EmbeddingClient, endpoints: list[Endpoint]) -> None:
    """One line when the servers' fair share lowered --max-in-flight (per model: the limit)."""
    limits = {m: sorted({e.settings[m].max_in_flight for e in endpoints
                         if e.settings[m].clamped_from is not None}) for m in MODELS}
    clamped = [f"{m} to {'/'.join(map(str, v))}" for m, v in limits.items() if v]
    if clamped:
        log.warning("warning: --max-in-flight %d is more than one client's fair share of the "
                    "servers' queue; clamped %s (model parameter %s x instances)",
                    client.max_in_flight, ", ".join(clamped), FAIR_SHARE_PARAMETER)
