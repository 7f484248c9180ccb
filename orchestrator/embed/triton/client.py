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

import itertools
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import numpy as np

from orchestrator.embed.contract import DNA_MODEL, INPUT_NAME, MODELS, OUTPUT_NAME, PROTEIN_MODEL
from orchestrator.embed.dispatch import (
    BUSY,
    FAILED,
    MALFORMED,
    OK,
    REJECTED,
    UNAVAILABLE,
    Dispatcher,
    Event,
    Identity,
    Listed,
    Liveness,
    Policy,
    Reply,
    Request,
    RunSetup,
    Start,
    StartEndpoint,
    Submit,
    Tick,
    Unreachable,
    model_differences,
    pin_versions,
)
from orchestrator.embed.dispatch.replay import DEBUG_DISPATCH_ENV, Recorder
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
DEFAULT_RETRY_DEADLINE_S = Policy.retry_deadline_s
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_REQUEST_TIMEOUT_S = 600.0
PROBE_INTERVAL_S = 0.5
# The dispatcher thread wakes at least this often (the core's wake_at() may ask for sooner).
IDLE_WAIT_S = 0.25

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


def outcome_of(error: BaseException) -> str:
    """The core's reply outcome for a failed call: rejected (bad request), busy or failed."""
    if not is_retriable(error):
        return REJECTED
    return BUSY if is_busy(error) else FAILED


class EmbeddingTicket:
    """One submitted window: its embeddings fill in as requests come back; `result()` waits.

    `first_sent` and `completed` (monotonic seconds) show how windows overlap.
    """

    def __init__(self, rows: dict[str, int], widths: dict[str, int]) -> None:
        self.outputs = {m: np.empty((rows[m], w), dtype=np.float32) for m, w in widths.items()}
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


class EmbeddingClient:
    """Embeds frames through one or many Triton servers: `dnabert_s` on nucleotide slices,
    `esm2` on proteins. The decisions are `Dispatcher`'s; this class performs its actions."""

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
        debug_dispatch: str | None = None,
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
        self.endpoints: dict[str, Endpoint] = {}
        for url in self.urls:
            self._endpoint(url)
        self._events: queue.Queue[tuple[Event | None, Any]] = queue.Queue()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._jobs: dict[int, _Job] = {}  # request id -> its window, rows and payload
        self._calls: dict[int, Any] = {}  # token -> tritonclient CallContext (to cancel a copy)
        self._open: dict[int, EmbeddingTicket] = {}  # window -> ticket
        self._request_ids = itertools.count()
        self._window_ids = itertools.count()
        try:
            self.reference = self._start_endpoints()
        except BaseException:
            self._close_endpoints()
            raise
        usable = [e for e in self.endpoints.values()
                  if e.state == "up" and not model_differences(self.reference, e.settings)]
        self.batch_size = {m: min(batch_size or 1 << 30,
                                  *(e.settings[m].max_batch_size for e in usable))
                           for m in MODELS}
        self.widths = (self.reference[DNA_MODEL].width, self.reference[PROTEIN_MODEL].width)
        self._warn_clamped(usable)
        seed = random.SystemRandom().randrange(1 << 63)
        setup = RunSetup(self.reference, self.versions, self.batch_size,
                         PRIORITIES[self.priority], self.discovery.describe())
        policy = Policy(retry_deadline_s=self.retry_deadline)
        self.core = Dispatcher(setup, policy, random.Random(seed))
        path = debug_dispatch or os.environ.get(DEBUG_DISPATCH_ENV)
        self._recorder = Recorder(path, setup, policy, seed) if path else None
        listed = set(self.discovery.addresses())
        self._feed(Start(tuple(
            StartEndpoint(e.url, e.settings if e.state == "up" else None, e.last_error,
                          e.url in listed) for e in self.endpoints.values())))
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="embed-dispatcher",
                                            daemon=True)
        self._dispatcher.start()
        if self.discovery.dynamic:
            threading.Thread(target=self._discover_loop, name="embed-discovery",
                             daemon=True).start()

    def _endpoint(self, url: str) -> Endpoint:
        ep = self.endpoints.get(url)
        if ep is None:
            ep = self.endpoints[url] = Endpoint(url, self.options, self.request_timeout,
                                                priority=PRIORITIES[self.priority])
        return ep

    # -- start -----------------------------------------------------------------------------------
    def _start_endpoints(self) -> dict[str, ModelSettings]:
        """Connect to every endpoint at once and pin the run's model identity; refuse any that
        serves other models (exit 2), report those that are down (exit 3 only when none is
        usable). With a discovery source, wait up to the retry deadline for a first endpoint."""
        errors = self._try_start(list(self.endpoints.values()), self.connect_timeout)
        up = [e for e in self.endpoints.values() if e.state == "up"]
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
        self.versions = pin_versions(self._asked_versions, {e.url: e.settings for e in up})
        for ep in up:
            if any(ep.settings[m].version != v for m, v in self.versions.items()):
                ep.settings = ep.read_settings(self.connect_timeout, self._max_in_flight,
                                               self.versions)
        serving = [e for e in up if not any(s.missing for s in e.settings.values())]
        if not serving:
            raise InputError("no endpoint serves both pinned versions (" + ", ".join(
                f"{m} {v}" for m, v in self.versions.items()) + "); choose with --model-version")
        reference = serving[0]
        for ep in serving:
            diffs = model_differences(reference.settings, ep.settings)
            if diffs:
                raise InputError(
                    f"Triton at {ep.url} serves different models than {reference.url}: "
                    f"{'; '.join(diffs)}; every endpoint of a run must serve the same weights")
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
            current = [self._endpoint(url) for url in addresses]
            errors.update(self._try_start(current, min(self.connect_timeout, 2.0)))
            up = [e for e in current if e.state == "up"]
            if up:
                return up
            if time.monotonic() > deadline:
                why = [*self.discovery.problems.values(),
                       *(f"{e.url}: {first_line(errors[e.url])}" for e in current
                         if e.url in errors)]
                raise ServerUnavailable(
                    f"no Triton endpoint of {self.discovery.describe()} answered within "
                    f"{self.retry_deadline:.0f} s ({'; '.join(why) or 'no endpoint listed'})")
            time.sleep(PROBE_INTERVAL_S)

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
        with self._lock:
            up = [e.settings for e in self.core.endpoints.values()
                  if e.settings and e.state != "refused"]
        return [
            {"name": s.name, "version": s.version, "weights_sha256": s.weights_sha256,
             "width": s.width, "precision": s.precision,
             "max_batch_size": min(e[m].max_batch_size for e in up),
             "instances": sum(e[m].instances for e in up),
             "batch_size": self.batch_size[m],
             "max_in_flight": sum(e[m].max_in_flight for e in up)}
            for m, s in self.reference.items()
        ]

    def stats(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {m: dict(s) for m, s in self.core.stats.items()}

    def endpoints_info(self) -> list[dict[str, Any]]:
        """Per endpoint: state, requests, rows, failures, seconds unavailable (for run.json)."""
        with self._lock:
            now = time.monotonic()
            return [ep.info(now) for ep in self.core.endpoints.values()]

    # -- submitting ------------------------------------------------------------------------------
    def submit(self, nucleotides: list[str], proteins: list[str]) -> EmbeddingTicket:
        """Queue a window's frames for both models and return at once; the ticket's `result()`
        gives embeddings [len(nucleotides), dna_width] and [len(proteins), protein_width] float32
        in the given row order (the lists may differ in length: deduplication sends each model
        only the strings it has not embedded yet)."""
        ticket = EmbeddingTicket({DNA_MODEL: len(nucleotides), PROTEIN_MODEL: len(proteins)},
                                 {DNA_MODEL: self.widths[0], PROTEIN_MODEL: self.widths[1]})
        jobs = [*self._cut(ticket, DNA_MODEL, nucleotides),
                *self._cut(ticket, PROTEIN_MODEL, proteins)]
        if not jobs:
            ticket._finish()
            return ticket
        with self._lock:
            if self._failure is not None:
                raise self._failure
            window = next(self._window_ids)
            self._open[window] = ticket
            requests = []
            for job in jobs:
                rid = next(self._request_ids)
                self._jobs[rid] = job
                requests.append(Request(rid, job.model, len(job.rows)))
            self._events.put((Submit(window, tuple(requests)), None))
        return ticket

    def _cut(self, ticket: EmbeddingTicket, model: str, strings: list[str]) -> list[_Job]:
        """Length-sorted requests, so each pads little on the server."""
        size = self.batch_size[model]
        lengths = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
        order = np.argsort(lengths, kind="stable")
        return [_Job(ticket, model, rows, bytes_tensor_payload([strings[i] for i in rows]))
                for rows in (order[s:s + size] for s in range(0, len(order), size))]

    # -- the dispatcher thread: events to the core, its actions performed ------------------------
    def _dispatch_loop(self) -> None:
        try:
            while not self._closing.is_set():
                wake = self.core.wake_at()
                wait = IDLE_WAIT_S if wake is None else wake - time.monotonic()
                try:
                    event, answer = self._events.get(timeout=max(0.005, min(IDLE_WAIT_S, wait)))
                except queue.Empty:
                    event, answer = Tick(), None
                if event is None:
                    break  # closing
                with self._lock:
                    self._feed(event, answer)
        except BaseException as exc:  # handed to every waiting window
            self._fail(exc)

    def _feed(self, event: Event, answer: Any = None) -> None:
        """Hand `event` to the core and perform its actions (`answer`: a reply's embeddings)."""
        now = time.monotonic()
        if isinstance(event, Reply):
            self._calls.pop(event.token, None)
        actions = self.core.handle(now, event)
        if self._recorder is not None:
            self._recorder.write(now, event, actions)
        for action in actions:
            getattr(self, "_do_" + type(action).__name__)(action, now, answer)

    def _do_Send(self, a: Any, now: float, answer: Any) -> None:
        import tritonclient.grpc as grpcclient

        job = self._jobs[a.request]
        if job.ticket.first_sent is None:
            job.ticket.first_sent = now
        inp = grpcclient.InferInput(INPUT_NAME, [len(job.rows), 1], "BYTES")
        # The payload is already in Triton's BYTES wire format; handing it over directly skips
        # tritonclient's per-element serialisation (set_data_from_numpy does the same assignment).
        inp._raw_content = job.payload
        expected = (len(job.rows), self.reference[job.model].width)
        where = f"model {job.model} at {a.url}"

        def callback(result: Any, error: Any) -> None:
            if error is not None:
                self._events.put((Reply(a.token, outcome_of(error), first_line(error)), None))
                return
            try:
                emb = result.as_numpy(OUTPUT_NAME)
            except Exception as exc:
                self._events.put((Reply(a.token, MALFORMED,
                                        f"{where} answered without {OUTPUT_NAME}: {exc}"), None))
                return
            if emb is None or emb.shape != expected:
                self._events.put((Reply(a.token, MALFORMED, f"{where} returned shape "
                                        f"{None if emb is None else emb.shape}, expected "
                                        f"{expected}"), None))
                return
            self._events.put((Reply(a.token, OK), emb))

        try:
            self._calls[a.token] = self.endpoints[a.url].client.async_infer(
                a.model, [inp], callback, model_version=a.version,
                headers=self.options.header_dict(), client_timeout=self.request_timeout,
                priority=a.priority)
        except Interrupted:
            raise
        except Exception as exc:  # channel closed under us: treat like a failed call
            self._events.put((Reply(a.token, outcome_of(exc), first_line(exc)), None))

    def _do_Cancel(self, a: Any, now: float, answer: Any) -> None:
        call = self._calls.get(a.token)
        if call is not None:
            call.cancel()

    def _do_Deliver(self, a: Any, now: float, answer: Any) -> None:
        job = self._jobs.pop(a.request)
        job.ticket.outputs[job.model][job.rows] = answer

    def _do_Finished(self, a: Any, now: float, answer: Any) -> None:
        self._open.pop(a.window)._finish()

    def _do_Fail(self, a: Any, now: float, answer: Any) -> None:
        raise (ServerUnavailable if a.exit_class == UNAVAILABLE else OrchestratorError)(a.message)

    def _do_Log(self, a: Any, now: float, answer: Any) -> None:
        log.log(logging.WARNING if a.level == "warning" else logging.INFO, "%s", a.message)

    def _do_Marked(self, a: Any, now: float, answer: Any) -> None:
        """Nothing to do: the state lives in the core (Connect and Close carry the I/O)."""

    def _do_Close(self, a: Any, now: float, answer: Any) -> None:
        self.endpoints[a.url].close()

    def _do_Connect(self, a: Any, now: float, answer: Any) -> None:
        """A fresh channel, probed on its own thread until it is live and both models are ready;
        then what it serves (the pinned versions) goes to the core for the identity check."""
        ep = self._endpoint(a.url)
        ep.connect()  # closing the old channel cancels its calls; their answers are ignored
        client = ep.client

        def run() -> None:
            probe = Endpoint(ep.url, ep.options, ep.request_timeout, client=client,
                             priority=ep.priority)
            reported = ""
            while not self._closing.wait(PROBE_INTERVAL_S):
                if ep.client is not client:
                    return  # replaced (closed run, or marked down again)
                try:  # every time: a server restarted on the same port may serve other weights
                    if probe.probe(timeout=2.0):
                        settings = probe.read_settings(self.connect_timeout, self._max_in_flight,
                                                       self.versions, self.reference)
                        self._events.put((Identity(ep.url, a.epoch, settings), None))
                        return
                except OrchestratorError as exc:
                    probe.last_error = str(exc)
                if probe.last_error and probe.last_error != reported:
                    reported = probe.last_error
                    self._events.put((Unreachable(ep.url, a.epoch, reported), None))

        threading.Thread(target=run, name=f"health-{ep.url}", daemon=True).start()

    def _do_CheckLive(self, a: Any, now: float, answer: Any) -> None:
        """Ask "live?" on a thread of its own with a short deadline (the check waits for no
        model, so only a frozen process or a dead node leaves it unanswered)."""
        client = self.endpoints[a.url].client
        headers = self.options.header_dict()

        def run() -> None:
            try:
                live = bool(client.is_server_live(headers=headers, client_timeout=a.timeout))
            except Exception:  # no answer in time (or the channel broke)
                live = False
            self._events.put((Liveness(a.url, a.epoch, live), None))

        threading.Thread(target=run, name=f"liveness-{a.url}", daemon=True).start()

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
                self._events.put((Listed(tuple(addresses)), None))

    def _fail(self, exc: BaseException) -> None:
        """The run cannot go on: every window still waiting gets the error."""
        with self._lock:
            self._failure = exc
            waiting = list(self._open.values())
            self._open.clear()
            self._jobs.clear()
        for ticket in waiting:
            if not ticket.future.done():
                ticket.future.set_exception(exc)

    # -- closing ---------------------------------------------------------------------------------
    def _close_endpoints(self) -> None:
        for ep in self.endpoints.values():
            ep.close()

    def close(self) -> None:
        self._closing.set()
        self._events.put((None, None))
        if self._dispatcher.is_alive() and self._dispatcher is not threading.current_thread():
            self._dispatcher.join(timeout=5.0)
        self._close_endpoints()
        if self._recorder is not None:
            self._recorder.close()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
