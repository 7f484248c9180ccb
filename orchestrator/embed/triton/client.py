"""The Triton gRPC client (`EmbeddingClient`): one run's requests spread over many servers.

Each window's frames become length-sorted requests (`batch_size` rows, at most the smallest
`max_batch_size` any endpoint serves) for both models. One dispatcher thread sends them to the
endpoint with the most free capacity; an endpoint's capacity per model is `2 x instance count`
from *its own* config (Triton's guidance for keeping every instance busy while the next request
waits in its queue), so an 8-GPU node takes 8x the requests of a 1-GPU node. Windows are
submitted ahead (`submit` returns at once) and their requests queue behind the earlier windows',
so servers never wait for the client between windows; results are handed back per window.

Failover: an endpoint whose call fails with a connection-level error is marked down, its
outstanding requests go back to the front of the queue at once (for the other endpoints), and a
health probe re-admits it when it answers again. Only when no endpoint is up and none has
answered for `VIRNUCPRO_RETRY_DEADLINE` seconds (default 60) does the run end with
`ServerUnavailable` (exit 3, checkpoint intact). At start every endpoint must become ready within
`VIRNUCPRO_CONNECT_TIMEOUT` seconds (default 10) and serve the same models; each request may take
up to `VIRNUCPRO_REQUEST_TIMEOUT` seconds (default 600).

A run's model identity (per model: version, width, weights checksum, precision) is pinned at
start, and every request names the pinned version. An endpoint is checked against it whenever it
is admitted (at start, back after an outage, found mid-run); one that differs is refused for the
rest of the run and gets no request. The servers come from fixed addresses, `dns:///` names and
`file:///` endpoint lists (`discovery`), read again during the run: new addresses join after the
identity check, addresses that are gone get no new requests and their outstanding ones are re-sent
as in failover.

A shared cluster: requests carry the run's priority; "queue full" answers (load shedding) mean
busy, not down: the request waits for a jittered, growing backoff of that endpoint and is sent
again, never failing the run. A server that holds requests but answers no liveness check for a
few seconds (a frozen process) is marked down; a request that outlives a deadline derived from
this run's latencies while its server returns nothing else (a stuck model) is re-sent to another
endpoint (hedged: the first answer wins). A deep queue on a working server triggers neither.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.embed.contract import DNA_MODEL, INPUT_NAME, MODELS, OUTPUT_NAME, PROTEIN_MODEL
from orchestrator.embed.priority import PRIORITIES, resolve_priority
from orchestrator.embed.triton.discovery import (
    FILE_POLL_S,
    Discovery,
    Resolver,
    discovery_interval,
    parse_servers,
    system_resolver,
)
from orchestrator.embed.triton.endpoints import (
    FAIR_SHARE_PARAMETER,
    ConnectionOptions,
    Endpoint,
    ModelSettings,
    bytes_tensor_payload,
    first_line,
    is_busy,
    model_differences,
    version_key,
)
from orchestrator.errors import (
    InputError,
    Interrupted,
    OrchestratorError,
    ServerUnavailable,
    TLSProblem,
)

log = logging.getLogger("orchestrator")

RETRY_DEADLINE_ENV = "VIRNUCPRO_RETRY_DEADLINE"
CONNECT_TIMEOUT_ENV = "VIRNUCPRO_CONNECT_TIMEOUT"
REQUEST_TIMEOUT_ENV = "VIRNUCPRO_REQUEST_TIMEOUT"
DEFAULT_RETRY_DEADLINE_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_REQUEST_TIMEOUT_S = 600.0
PROBE_INTERVAL_S = 0.5
# A request that fails this often while others succeed is the request's fault, not an outage.
MAX_ATTEMPTS = 20
# Load shedding: after a "queue full" answer an endpoint gets no request of that model for a
# jittered backoff that doubles per consecutive rejection, from BACKOFF_MIN_S up to BACKOFF_MAX_S.
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 2.0
# Frozen server: while it holds requests it is asked "live?" every LIVENESS_INTERVAL_S; this many
# consecutive checks without an answer within LIVENESS_TIMEOUT_S mark it down. A busy server
# still answers (the check does not wait for a model).
LIVENESS_INTERVAL_S = 1.0
LIVENESS_TIMEOUT_S = 2.0
LIVENESS_FAILURES = 2
# Stuck model: a request is overdue after max(HEDGE_FLOOR_S, HEDGE_FACTOR x p99) of this run's
# latencies of that model (send to answer, queueing included), HEDGE_DEFAULT_S before
# HEDGE_MIN_SAMPLES answers (few: a stuck request holds back its window, and with it the answers
# the run could learn from); it is re-sent elsewhere only if its server returned nothing of that
# model for as long (or it is HEDGE_ALONE_FACTOR x overdue: one hung instance among working ones).
HEDGE_FLOOR_S = 10.0
HEDGE_FACTOR = 5.0
HEDGE_DEFAULT_S = 60.0
HEDGE_MIN_SAMPLES = 4
HEDGE_ALONE_FACTOR = 3.0
HEDGE_CHECK_S = 0.5
LATENCY_SAMPLES = 512

# gRPC status codes (as InferenceServerException.status() spells them) that mean "server or
# connection not there right now": restarting, overloaded, or the connection dropped.
_RETRIABLE_STATUS = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED",
                     "CANCELLED")
_RETRIABLE_TEXT = ("not ready", "unknown model", "failed to connect", "socket closed",
                   "connection reset", "broken pipe", "unavailable", "not found")


def _env_seconds(name: str, default: float) -> float:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise OrchestratorError(f"{name}={value!r} is not a number of seconds") from exc


def is_retriable(exc: BaseException) -> bool:
    """True for errors that mean "server or connection not there right now", not "bad request"."""
    status = getattr(exc, "status", None)
    code = str(status() if callable(status) else status or "")
    if any(code.endswith(s) for s in _RETRIABLE_STATUS):
        return True
    lowered = str(exc).lower()
    return any(t in lowered for t in _RETRIABLE_TEXT)


class EmbeddingTicket:
    """One submitted window: its embeddings fill in as requests come back; `result()` waits.

    `first_sent` and `completed` (monotonic seconds) show how windows overlap.
    """

    def __init__(self, rows: dict[str, int], widths: dict[str, int]) -> None:
        self.outputs = {m: np.empty((rows[m], w), dtype=np.float32) for m, w in widths.items()}
        self.remaining = 0
        self.first_sent: float | None = None
        self.completed: float | None = None
        self.future: Future[tuple[np.ndarray, np.ndarray]] = Future()

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.future.result()

    def done(self) -> bool:
        return self.future.done()

    def _finish(self) -> None:
        self.completed = time.monotonic()
        self.future.set_result((self.outputs[DNA_MODEL], self.outputs[PROTEIN_MODEL]))


@dataclass
class _Job:
    ticket: EmbeddingTicket
    model: str
    rows: np.ndarray  # indices into the window's frame list
    payload: bytes
    order: int  # global submission order: earlier windows' requests go first
    attempts: int = 0
    copies: int = 0  # sends of it still outstanding (more than one once hedged)
    queued: bool = False  # waiting in the pending queue
    done: bool = False  # answered: other copies' answers are ignored
    avoid: set[str] = field(default_factory=set)  # endpoints where it is overdue

    def __lt__(self, other: _Job) -> bool:
        return self.order < other.order


class EmbeddingClient:
    """Embeds frames through one or many Triton servers: `dnabert_s` on nucleotide slices,
    `esm2` on proteins."""

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        batch_size: int | None = None,
        max_in_flight: int | None = None,
        connect_timeout: float | None = None,
        retry_deadline: float | None = None,
        options: ConnectionOptions | None = None,
        priority: str | None = None,
        model_versions: dict[str, str] | None = None,
        discovery_interval_s: str | float | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        import tritonclient.grpc as grpcclient  # noqa: F401  (fail early if missing)

        self.priority = resolve_priority(priority)
        self.discovery = Discovery(parse_servers([servers] if isinstance(servers, str)
                                                 else servers),
                                   discovery_interval(discovery_interval_s), resolver)
        self.urls = self.discovery.refresh(time.monotonic(), force=True) or []
        self._asked_versions = dict(model_versions or {})
        self.versions: dict[str, str] = {}
        self.options = options or ConnectionOptions()
        self.connect_timeout = (connect_timeout if connect_timeout is not None
                                else _env_seconds(CONNECT_TIMEOUT_ENV, DEFAULT_CONNECT_TIMEOUT_S))
        self.retry_deadline = (retry_deadline if retry_deadline is not None
                               else _env_seconds(RETRY_DEADLINE_ENV, DEFAULT_RETRY_DEADLINE_S))
        self.request_timeout = _env_seconds(REQUEST_TIMEOUT_ENV, DEFAULT_REQUEST_TIMEOUT_S)
        self._max_in_flight = max_in_flight
        self.endpoints: list[Endpoint] = []
        for url in self.urls:
            self._new_endpoint(url)
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._pending: dict[str, list[_Job]] = {m: [] for m in MODELS}
        self._outstanding: dict[int, tuple[Endpoint, _Job, float]] = {}
        self._calls: dict[int, Any] = {}  # token -> tritonclient CallContext (to cancel a copy)
        self._overdue: set[int] = set()  # tokens already hedged
        self._latencies = {m: deque(maxlen=LATENCY_SAMPLES) for m in MODELS}
        self._next_hedge_check = 0.0
        self._open: set[EmbeddingTicket] = set()
        self._tokens = itertools.count()
        self._order = itertools.count()
        self._rotation = itertools.count()
        self._outage_since: float | None = None
        self._model_stats = {m: {"requests": 0, "retries": 0, "seconds": 0.0, "frames": 0,
                                 "rejections": 0, "hedged": 0} for m in MODELS}
        try:
            self.reference = self._start_endpoints()
        except BaseException:
            self._close_endpoints()
            raise
        up = [e for e in self.endpoints if e.state == "up"]
        self.batch_size = {m: min(batch_size or 1 << 30, *(e.settings[m].max_batch_size for e in up))
                           for m in MODELS}
        self.widths = (self.reference[DNA_MODEL].width, self.reference[PROTEIN_MODEL].width)
        self._warn_clamped(up)
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="embed-dispatcher",
                                            daemon=True)
        self._dispatcher.start()
        for ep in self.endpoints:
            if ep.state == "up":
                self._check_liveness(ep)
            elif ep.state == "down":
                self._watch(ep)
        if self.discovery.dynamic:
            threading.Thread(target=self._discover_loop, name="embed-discovery",
                             daemon=True).start()

    def _new_endpoint(self, url: str) -> Endpoint:
        ep = Endpoint(url, self.options, self.request_timeout, priority=PRIORITIES[self.priority])
        self.endpoints.append(ep)
        return ep

    # -- start -----------------------------------------------------------------------------------
    def _start_endpoints(self) -> dict[str, ModelSettings]:
        """Connect to every endpoint at once and pin the run's model identity; refuse any that
        serves other models (exit 2), report those that are down (exit 3 only when none is
        usable). With a discovery source, wait up to the retry deadline for a first endpoint."""
        errors = self._try_start(self.endpoints, self.connect_timeout)
        up = [e for e in self.endpoints if e.state == "up"]
        if not up and self.discovery.dynamic:
            up = self._wait_for_first(errors)
        if not up:
            if len(self.endpoints) == 1:
                exc = errors[self.urls[0]]
                if isinstance(exc, TLSProblem):
                    raise exc
                if not isinstance(exc, OrchestratorError):
                    raise ServerUnavailable(f"Triton server at {self.urls[0]}: {first_line(exc)}")
                raise ServerUnavailable(f"{exc}; start it (orchestrator serve --model-repository "
                                        "...) or pass --server HOST:PORT") from exc
            raise ServerUnavailable(
                f"none of the {len(self.endpoints)} Triton endpoints is usable: "
                + "; ".join(first_line(errors[u]) for u in self.urls))
        self.versions = self._pin_versions(up)
        for ep in up:
            if any(ep.settings[m].version != v for m, v in self.versions.items()):
                ep.settings = ep.read_settings(self.connect_timeout, self._max_in_flight,
                                               self.versions)
        serving = [e for e in up if not any(s.missing for s in e.settings.values())]
        if not serving:
            raise InputError("no endpoint serves both pinned versions (" + ", ".join(
                f"{m} {v}" for m, v in self.versions.items()) + "); choose with --model-version")
        reference = serving[0]
        for ep in up:
            diffs = model_differences(reference.settings, ep.settings)
            if diffs and ep in serving:
                ep.state = "refused"
                raise InputError(
                    f"Triton at {ep.url} serves different models than {reference.url}: "
                    f"{'; '.join(diffs)}; every endpoint of a run must serve the same weights")
            if diffs:
                self._refuse(ep, diffs)
        now = time.monotonic()
        usable = sum(e.state == "up" for e in self.endpoints)
        for ep in self.endpoints:
            if ep.state == "down":
                ep.down_since = now
                log.warning("warning: Triton at %s is unavailable at start (%s); running on %d of "
                            "%d endpoints, it joins when it answers", ep.url, ep.last_error,
                            usable, len(self.endpoints))
        return reference.settings

    def _try_start(self, endpoints: list[Endpoint], timeout: float) -> dict[str, BaseException]:
        """Connect, wait until ready and read the settings of each endpoint, all at once; the
        errors of those that did not come up, per address."""
        errors: dict[str, BaseException] = {}

        def start(ep: Endpoint) -> None:
            try:
                ep.connect()
                ep.wait_ready(timeout)
                ep.settings = ep.read_settings(timeout, self._max_in_flight, self._asked_versions)
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

    def _wait_for_first(self, errors: dict[str, BaseException]) -> list[Endpoint]:
        """No endpoint of a discovery source answers yet (pods still starting, an empty list):
        read the sources again and try every address until one is up or the deadline passes."""
        deadline = time.monotonic() + self.retry_deadline
        log.warning("warning: no endpoint of %s answers yet; waiting up to %.0f s for the first",
                    self.discovery.describe(), self.retry_deadline)
        while True:
            addresses = self.discovery.refresh(time.monotonic(), force=True) or []
            known = {e.url for e in self.endpoints}
            for url in addresses:
                if url not in known:
                    self._new_endpoint(url)
            current = [e for e in self.endpoints if e.url in addresses]
            errors.update(self._try_start(current, min(self.connect_timeout, 2.0)))
            up = [e for e in current if e.state == "up"]
            if up:
                for ep in self.endpoints:
                    if ep not in current:
                        ep.state = "gone"
                return up
            if time.monotonic() > deadline:
                why = [*self.discovery.problems.values(),
                       *(f"{e.url}: {first_line(errors[e.url])}" for e in current
                         if e.url in errors)]
                raise ServerUnavailable(
                    f"no Triton endpoint of {self.discovery.describe()} answered within "
                    f"{self.retry_deadline:.0f} s ({'; '.join(why) or 'no endpoint listed'})")
            time.sleep(PROBE_INTERVAL_S)

    def _pin_versions(self, up: list[Endpoint]) -> dict[str, str]:
        """Per model: the version asked for (InputError when no endpoint serves it), else the
        newest version every endpoint up at start serves."""
        pinned = {}
        for m in MODELS:
            served = [set(e.settings[m].versions) for e in up]
            listing = "; ".join(f"{e.url}: {', '.join(e.settings[m].versions) or 'none'}"
                                for e in up)
            asked = self._asked_versions.get(m)
            if asked is not None:
                if not any(asked in v for v in served):
                    raise InputError(f"no endpoint serves {m} version {asked} (versions served: "
                                     f"{listing})")
                pinned[m] = asked
                continue
            common = set.intersection(*served)
            if not common:
                raise InputError(f"no version of {m} is served by every endpoint ({listing}); "
                                 "choose one with --model-version")
            pinned[m] = max(common, key=version_key)
        return pinned

    def _warn_clamped(self, endpoints: list[Endpoint]) -> None:
        """One line when the servers' fair share lowered --max-in-flight (per model: the limit)."""
        limits = {m: sorted({e.settings[m].max_in_flight for e in endpoints
                             if e.settings[m].clamped_from is not None}) for m in MODELS}
        clamped = [f"{m} to {'/'.join(map(str, v))}" for m, v in limits.items() if v]
        if clamped:
            log.warning("warning: --max-in-flight %d is more than one client's fair share of the "
                        "servers' queue; clamped %s (model parameter %s x instances)",
                        self._max_in_flight, ", ".join(clamped), FAIR_SHARE_PARAMETER)

    # -- information -----------------------------------------------------------------------------
    def models_info(self) -> list[dict[str, Any]]:
        """Names, versions, checksums and widths as the servers report them (for run.json)."""
        up = [e for e in self.endpoints if e.settings and e.state != "refused"]
        return [
            {"name": s.name, "version": s.version, "weights_sha256": s.weights_sha256,
             "width": s.width, "precision": s.precision,
             "max_batch_size": min(e.settings[m].max_batch_size for e in up),
             "instances": sum(e.settings[m].instances for e in up),
             "batch_size": self.batch_size[m],
             "max_in_flight": sum(e.settings[m].max_in_flight for e in up)}
            for m, s in self.reference.items()
        ]

    def stats(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {m: dict(s) for m, s in self._model_stats.items()}

    def endpoints_info(self) -> list[dict[str, Any]]:
        """Per endpoint: state, requests, rows, failures, seconds unavailable (for run.json)."""
        with self._lock:
            now = time.monotonic()
            return [ep.info(now) for ep in self.endpoints]

    # -- submitting ------------------------------------------------------------------------------
    def submit(self, nucleotides: list[str], proteins: list[str]) -> EmbeddingTicket:
        """Queue a window's frames for both models and return at once; the ticket's `result()`
        gives embeddings [len(nucleotides), dna_width] and [len(proteins), protein_width] float32
        in the given row order (the lists may differ in length: deduplication sends each model
        only the strings it has not embedded yet)."""
        ticket = EmbeddingTicket({DNA_MODEL: len(nucleotides), PROTEIN_MODEL: len(proteins)},
                                 {DNA_MODEL: self.widths[0], PROTEIN_MODEL: self.widths[1]})
        jobs = [*self._jobs(ticket, DNA_MODEL, nucleotides),
                *self._jobs(ticket, PROTEIN_MODEL, proteins)]
        if not jobs:
            ticket._finish()
            return ticket
        ticket.remaining = len(jobs)
        with self._lock:
            if self._failure is not None:
                raise self._failure
            self._events.put(("submit", ticket, jobs))
        return ticket

    def _jobs(self, ticket: EmbeddingTicket, model: str, strings: list[str]) -> list[_Job]:
        """Length-sorted requests, so each pads little on the server."""
        size = self.batch_size[model]
        lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
        order = np.argsort(lengths, kind="stable")
        return [_Job(ticket, model, rows, bytes_tensor_payload([strings[i] for i in rows]),
                     next(self._order))
                for rows in (order[s:s + size] for s in range(0, len(order), size))]

    # -- the dispatcher thread -------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        try:
            while not self._closing.is_set():
                self._send_pending()
                self._check_deadline()
                self._hedge_overdue()
                try:
                    event = self._events.get(timeout=self._idle_wait())
                except queue.Empty:
                    continue
                with self._lock:
                    self._handle(event)
        except BaseException as exc:  # handed to every waiting window
            self._fail(exc)

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "submit":
            _, ticket, jobs = event
            self._open.add(ticket)
            for job in jobs:
                job.queued = True
                heapq.heappush(self._pending[job.model], job)
        elif kind == "done":
            self._done(*event[1:])
        elif kind == "up":
            self._admit(*event[1:])
        elif kind == "frozen":
            self._frozen(*event[1:])
        elif kind == "servers":
            self._servers_changed(event[1])

    def _send_pending(self) -> None:
        """Each queued request to the endpoint with the most free slots; ties rotate, so equal
        endpoints share the work evenly even when there is more capacity than work."""
        n = len(self.endpoints)
        if not any(e.state == "up" for e in self.endpoints):
            return
        now = time.monotonic()
        for model in MODELS:
            heap = self._pending[model]
            while heap:
                job = heap[0]
                if job.done:  # a hedge whose original answered meanwhile
                    heapq.heappop(heap).queued = False
                    continue
                if job.avoid and all(e.url in job.avoid for e in self.endpoints
                                     if e.state == "up"):
                    job.avoid.clear()  # nowhere else to go any more
                start = next(self._rotation) % n
                candidates = (self.endpoints[(start + i) % n] for i in range(n))
                ep = max((e for e in candidates if e.state == "up" and e.free_slots(model) > 0
                          and e.backoff_until[model] <= now and e.url not in job.avoid),
                         key=lambda e, m=model: e.free_slots(m), default=None)
                if ep is None:
                    break
                heapq.heappop(heap).queued = False
                self._send(ep, job)

    def _idle_wait(self) -> float:
        """How long the dispatcher may wait for an event: until the first backoff with queued
        work ends, at most 0.25 s."""
        now = time.monotonic()
        ends = [e.backoff_until[m] - now for e in self.endpoints for m in MODELS
                if self._pending[m] and e.backoff_until[m] > now]
        return max(0.005, min([0.25, *ends]))

    def _send(self, ep: Endpoint, job: _Job) -> None:
        import tritonclient.grpc as grpcclient

        token = next(self._tokens)
        now = time.monotonic()
        ep.in_flight[job.model] += 1
        job.copies += 1
        self._outstanding[token] = (ep, job, now)
        if job.ticket.first_sent is None:
            job.ticket.first_sent = now
        inp = grpcclient.InferInput(INPUT_NAME, [len(job.rows), 1], "BYTES")
        # The payload is already in Triton's BYTES wire format; handing it over directly skips
        # tritonclient's per-element serialisation (set_data_from_numpy does the same assignment).
        inp._raw_content = job.payload

        def callback(result: Any, error: Any) -> None:
            self._events.put(("done", token, result, error))

        try:
            self._calls[token] = ep.client.async_infer(
                job.model, [inp], callback, model_version=self.versions[job.model],
                headers=self.options.header_dict(),
                client_timeout=self.request_timeout, priority=ep.priority)
        except Interrupted:
            raise
        except Exception as exc:  # channel closed under us: treat like a failed call
            self._events.put(("done", token, None, exc))

    def _done(self, token: int, result: Any, error: Any) -> None:
        entry = self._outstanding.pop(token, None)
        self._calls.pop(token, None)
        self._overdue.discard(token)
        if entry is None:
            return  # its endpoint was marked down and the request already re-sent
        ep, job, sent = entry
        ep.in_flight[job.model] -= 1
        job.copies -= 1
        if error is not None:
            self._failed(ep, job, error)
            return
        now = time.monotonic()
        ep.last_answer[job.model] = now
        ep.busy_streak[job.model] = 0
        if job.done:
            return  # the other copy of a hedged request answered first
        width = self.reference[job.model].width
        try:
            emb = result.as_numpy(OUTPUT_NAME)
        except Exception as exc:
            raise OrchestratorError(f"model {job.model} at {ep.url} answered without "
                                    f"{OUTPUT_NAME}: {exc}") from exc
        if emb is None or emb.shape != (len(job.rows), width):
            raise OrchestratorError(f"model {job.model} at {ep.url} returned shape "
                                    f"{None if emb is None else emb.shape}, expected "
                                    f"{(len(job.rows), width)}")
        job.done = True
        if job.avoid:
            self._cancel_copies(job)
        self._latencies[job.model].append(now - sent)
        ticket = job.ticket
        ticket.outputs[job.model][job.rows] = emb
        ticket.remaining -= 1
        if ticket.remaining == 0:
            self._open.discard(ticket)
            ticket._finish()
        self._outage_since = None
        ep.stats.requests += 1
        ep.stats.rows += len(job.rows)
        stats = self._model_stats[job.model]
        stats["requests"] += 1
        stats["frames"] += len(job.rows)
        stats["seconds"] += now - sent

    def _cancel_copies(self, job: _Job) -> None:
        """The first answer of a hedged request won: cancel its copies still waiting on healthy
        endpoints (their slots free up). Copies on the endpoint where it was overdue stay counted
        there until they return, so a stuck server is not handed more work meanwhile."""
        for token, (_, other, _) in self._outstanding.items():
            if other is job and token not in self._overdue and token in self._calls:
                self._calls[token].cancel()

    def _failed(self, ep: Endpoint, job: _Job, error: Any) -> None:
        if job.done:
            return  # a copy of an answered request: cancelled, or lost with its server
        if not is_retriable(error):
            raise OrchestratorError(f"model {job.model} at {ep.url} rejected a request: "
                                    f"{first_line(error)}")
        if is_busy(error):
            self._busy(ep, job, error)
            return
        ep.stats.failures += 1
        if job.copies == 0 and not job.queued:  # else a hedged copy is still on its way
            self._requeue(job)
        if job.attempts > MAX_ATTEMPTS:
            raise ServerUnavailable(f"a request to {job.model} failed {job.attempts} times "
                                    f"(last at {ep.url}: {first_line(error)})")
        self._mark_down(ep, f"model {job.model}: {first_line(error)}")

    def _busy(self, ep: Endpoint, job: _Job, error: Any) -> None:
        """Load shedding: the endpoint stays up, takes no request of this model for a jittered
        backoff (doubling per consecutive rejection), and the request goes back to the queue;
        never counted as a failed attempt, however long the shedding lasts."""
        ep.stats.rejections += 1
        self._model_stats[job.model]["rejections"] += 1
        streak = ep.busy_streak[job.model] = ep.busy_streak[job.model] + 1
        delay = min(BACKOFF_MAX_S, BACKOFF_MIN_S * 2 ** min(streak - 1, 16))
        until = time.monotonic() + delay * random.uniform(0.5, 1.0)
        ep.backoff_until[job.model] = max(ep.backoff_until[job.model], until)
        if job.copies == 0 and not job.queued:
            job.queued = True
            heapq.heappush(self._pending[job.model], job)
        if ep.stats.rejections == 1:
            log.warning("warning: Triton at %s sheds load (%s); backing off and retrying there "
                        "and elsewhere (rejections are counted in run.json)", ep.url,
                        first_line(error))

    def _requeue(self, job: _Job) -> None:
        job.attempts += 1
        job.queued = True
        self._model_stats[job.model]["retries"] += 1
        heapq.heappush(self._pending[job.model], job)

    def _mark_down(self, ep: Endpoint, reason: str, failed: int = 1) -> None:
        """Take `ep` out of rotation: its outstanding requests go back to the queue now (the
        other endpoints take them), its channel is replaced, a probe watches for its return."""
        if ep.state != "up":
            return
        now = time.monotonic()
        ep.state = "down"
        ep.down_since = now
        ep.last_error = reason
        ep.stats.down += 1
        moved = self._take_back(ep)
        others = sum(e.state == "up" for e in self.endpoints)
        log.warning("Triton at %s failed (%s); %d outstanding requests re-sent to %d other "
                    "endpoint(s); retrying it for up to %.0f s", ep.url, reason, len(moved) + failed,
                    others, self.retry_deadline)
        ep.connect()  # closing the old channel cancels its calls; their answers are ignored
        self._watch(ep)

    def _take_back(self, ep: Endpoint) -> list[int]:
        """`ep`'s outstanding requests back to the queue (for the other endpoints); the outage
        clock starts (the next answer from anywhere stops it). Returns the tokens taken back."""
        moved = [t for t, (e, _, _) in self._outstanding.items() if e is ep]
        for token in moved:
            job = self._outstanding.pop(token)[1]
            self._calls.pop(token, None)
            self._overdue.discard(token)
            job.copies -= 1
            if not job.done and job.copies == 0 and not job.queued:
                self._requeue(job)
        ep.in_flight = dict.fromkeys(MODELS, 0)
        if self._outage_since is None:  # reset by the next answer from anywhere
            self._outage_since = time.monotonic()
        return moved

    # -- servers found and lost during the run ----------------------------------------------------
    def _discover_loop(self) -> None:
        """Read the discovery sources again when due (own thread: a DNS lookup may take a while)
        and post the address list when it changed."""
        tick = min(FILE_POLL_S, self.discovery.interval)
        while not self._closing.wait(tick):
            try:
                addresses = self.discovery.refresh(time.monotonic())
            except Exception as exc:  # a source that fails keeps its last answer; say why once
                log.warning("warning: discovery: %s", first_line(exc))
                continue
            if addresses is not None:
                self._events.put(("servers", addresses))

    def _servers_changed(self, addresses: list[str]) -> None:
        """New addresses are probed and admitted after the identity check; addresses that are
        gone get no new request, their outstanding ones are re-sent elsewhere. A refused
        endpoint stays refused."""
        listed = set(addresses)
        known = {e.url: e for e in self.endpoints}
        now = time.monotonic()
        for url in addresses:
            ep = known.get(url) or self._new_endpoint(url)
            if ep.state == "gone" or url not in known:
                ep.state = "down"
                ep.down_since = now
                ep.connect()
                log.info("Triton at %s listed by %s; admitted once it answers and serves this "
                         "run's models", url, self.discovery.describe())
                self._watch(ep)
        for ep in self.endpoints:
            if ep.url in listed or ep.state in ("gone", "refused"):
                continue
            was_up = ep.state == "up"
            ep.state = "gone"
            if ep.down_since is not None:
                ep.stats.unavailable_seconds += now - ep.down_since
                ep.down_since = None
            moved = self._take_back(ep) if was_up else []
            ep.close()
            log.warning("Triton at %s is no longer listed by %s; %d outstanding requests re-sent "
                        "to %d other endpoint(s)", ep.url, self.discovery.describe(), len(moved),
                        sum(e.state == "up" for e in self.endpoints))

    def _watch(self, ep: Endpoint) -> None:
        """Probe a down endpoint on its own thread; once it is live and both models are ready,
        read what it serves (the pinned versions) and post "up" for the identity check."""
        client = ep.client

        def run() -> None:
            probe = Endpoint(ep.url, ep.options, ep.request_timeout, client=client,
                             priority=ep.priority)
            while not self._closing.wait(PROBE_INTERVAL_S):
                if ep.client is not client:
                    return  # replaced (closed run, or marked down again)
                if not probe.probe(timeout=2.0):
                    ep.last_error = probe.last_error or ep.last_error
                    continue
                try:  # every time: a server restarted on the same port may serve other weights
                    settings = probe.read_settings(self.connect_timeout, self._max_in_flight,
                                                   self.versions, self.reference)
                except OrchestratorError as exc:
                    ep.last_error = str(exc)
                    continue
                self._events.put(("up", ep, client, settings))
                return

        threading.Thread(target=run, name=f"health-{ep.url}", daemon=True).start()

    def _admit(self, ep: Endpoint, client: Any, settings: dict[str, ModelSettings]) -> None:
        if ep.client is not client or ep.state != "down":
            return
        diffs = model_differences(self.reference, settings)
        diffs += [f"{m} max_batch_size {settings[m].max_batch_size} is below this run's "
                  f"requests of {self.batch_size[m]}" for m in MODELS
                  if settings[m].max_batch_size < self.batch_size[m]]
        ep.settings = settings
        if diffs:
            self._refuse(ep, diffs)
            return
        now = time.monotonic()
        if ep.down_since is not None:
            ep.stats.unavailable_seconds += now - ep.down_since
        ep.down_since = None
        ep.state = "up"
        log.info("Triton at %s answers again; re-admitted", ep.url)
        self._check_liveness(ep)

    def _refuse(self, ep: Endpoint, diffs: list[str]) -> None:
        """`ep` serves other models than the run pinned: never used again in this run."""
        if ep.down_since is not None:
            ep.stats.unavailable_seconds += time.monotonic() - ep.down_since
            ep.down_since = None
        ep.state = "refused"
        ep.refused = ep.last_error = "; ".join(diffs)
        ep.close()
        log.warning("warning: Triton at %s refused for the rest of this run: it serves other "
                    "models than the run pinned (%s); no request of this run goes there",
                    ep.url, ep.refused)

    # -- frozen servers and stuck models ---------------------------------------------------------
    def _check_liveness(self, ep: Endpoint) -> None:
        """While `ep` holds requests, ask its server "live?" with a short deadline on a thread of
        its own; LIVENESS_FAILURES unanswered checks in a row post "frozen". A frozen process
        (SIGSTOP, a hung node) answers nothing, while a busy one answers at once, since the
        check waits for no model. Ends when the endpoint's channel is replaced."""
        client = ep.client
        headers = self.options.header_dict()

        def run() -> None:
            failures = 0
            first_failure = 0.0
            while not self._closing.wait(LIVENESS_INTERVAL_S if failures == 0 else 0.0):
                if ep.client is not client or ep.state != "up":
                    return
                if not any(ep.in_flight.values()):
                    failures = 0
                    continue
                asked = time.monotonic()
                try:
                    if client.is_server_live(headers=headers, client_timeout=LIVENESS_TIMEOUT_S):
                        failures = 0
                        continue
                except Exception:  # no answer in time (or the channel broke): counted below
                    pass
                if failures == 0:
                    first_failure = asked
                failures += 1
                if failures >= LIVENESS_FAILURES:
                    self._events.put(("frozen", ep, client, first_failure))
                    return

        threading.Thread(target=run, name=f"liveness-{ep.url}", daemon=True).start()

    def _frozen(self, ep: Endpoint, client: Any, since: float) -> None:
        if ep.client is not client or ep.state != "up":
            return
        ep.stats.frozen += 1
        held = sum(ep.in_flight.values())
        self._mark_down(ep, f"frozen: holds {held} requests but answered no liveness check for "
                        f"{time.monotonic() - since:.1f} s", failed=0)
        ep.down_since = since  # unusable since the first unanswered check

    def _deadline(self, model: str) -> float:
        """Seconds after which a request of `model` is overdue, from this run's latencies."""
        samples = self._latencies[model]
        if len(samples) < HEDGE_MIN_SAMPLES:
            return HEDGE_DEFAULT_S
        return max(HEDGE_FLOOR_S, HEDGE_FACTOR * float(np.percentile(samples, 99)))

    def _hedge_overdue(self) -> None:
        """Re-send overdue requests to another up endpoint (first answer wins). The original
        stays outstanding on its endpoint, which therefore gets no new work while stuck."""
        now = time.monotonic()
        if now < self._next_hedge_check or not self._outstanding:
            return
        self._next_hedge_check = now + HEDGE_CHECK_S
        up = [e for e in self.endpoints if e.state == "up"]
        if len(up) < 2:
            return
        deadlines = {m: self._deadline(m) for m in MODELS}
        for token, (ep, job, sent) in self._outstanding.items():
            deadline = deadlines[job.model]
            age = now - sent
            if (token in self._overdue or job.done or age < deadline
                    or (now - ep.last_answer[job.model] < deadline
                        and age < HEDGE_ALONE_FACTOR * deadline)):
                continue
            if not any(e is not ep and e.url not in job.avoid for e in up):
                continue
            self._overdue.add(token)
            job.avoid.add(ep.url)
            ep.stats.hedged += 1
            self._model_stats[job.model]["hedged"] += 1
            log.warning("warning: a %s request to %s has had no answer for %.1f s (deadline "
                        "%.1f s from this run's latencies) while that server returned nothing "
                        "else; re-sent to another endpoint (hedged)", job.model, ep.url, age,
                        deadline)
            if not job.queued:
                job.queued = True
                heapq.heappush(self._pending[job.model], job)

    def _check_deadline(self) -> None:
        if self._outage_since is None or any(e.state == "up" for e in self.endpoints):
            return
        if time.monotonic() - self._outage_since > self.retry_deadline:
            errors = "; ".join(f"{e.url}: {e.last_error}" for e in self.endpoints)
            raise ServerUnavailable(
                f"no Triton endpoint answered for {self.retry_deadline:.0f} s ({errors}); "
                "finished windows are checkpointed, rerun the same command to resume once a "
                "server is back")

    def _fail(self, exc: BaseException) -> None:
        """The run cannot go on: every window still waiting gets the error."""
        with self._lock:
            self._failure = exc
            waiting = list(self._open)
            self._open.clear()
            while True:
                try:
                    event = self._events.get_nowait()
                except queue.Empty:
                    break
                if event[0] == "submit":
                    waiting.append(event[1])
        for ticket in waiting:
            if not ticket.future.done():
                ticket.future.set_exception(exc)

    # -- closing ---------------------------------------------------------------------------------
    def _close_endpoints(self) -> None:
        for ep in self.endpoints:
            ep.close()

    def close(self) -> None:
        self._closing.set()
        self._events.put(("close",))
        if self._dispatcher.is_alive() and self._dispatcher is not threading.current_thread():
            self._dispatcher.join(timeout=5.0)
        self._close_endpoints()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
