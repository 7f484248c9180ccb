"""The Triton gRPC client (`EmbeddingClient`): one run's requests spread over many servers.

Each window's frames become length-sorted requests (`batch_size` rows, at most the smallest
`max_batch_size` any endpoint serves) for both models; windows are submitted ahead (`submit`
returns at once) and handed back whole. Every decision (which endpoint gets a request, load
shedding, failover, frozen servers, hedging, admission, refusal, discovery, the retry deadline)
is taken by the I/O-free `orchestrator.embed.dispatch.Dispatcher`; this module is its driver: it
starts the endpoints (`startup`), turns tritonclient callbacks, probe answers, discovery reads and
a timer into the core's events on one dispatcher thread, and performs the actions it returns.
`VIRNUCPRO_RETRY_DEADLINE` (default 60 s), `VIRNUCPRO_CONNECT_TIMEOUT` (10 s) and
`VIRNUCPRO_REQUEST_TIMEOUT` (600 s) bound the waits; `--debug-dispatch FILE` (or
`VIRNUCPRO_DEBUG_DISPATCH`) logs the core's events for `python -m orchestrator.embed.dispatch.replay`.
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

from orchestrator.embed import dispatch as d
from orchestrator.embed.contract import DNA_MODEL, INPUT_NAME, OUTPUT_NAME, PROTEIN_MODEL
from orchestrator.embed.dispatch.replay import DEBUG_DISPATCH_ENV, Recorder
from orchestrator.embed.priority import PRIORITIES, resolve_priority
from orchestrator.embed.triton import discovery as disc
from orchestrator.embed.triton.endpoints import (
    ConnectionOptions,
    Endpoint,
    bytes_tensor_payload,
    first_line,
    outcome_of,
)
from orchestrator.embed.triton.startup import start_endpoints, timeouts
from orchestrator.errors import Interrupted, OrchestratorError, ServerUnavailable

log = logging.getLogger("orchestrator")

PROBE_INTERVAL_S = 0.5
# The dispatcher thread wakes at least this often (the core's wake_at() may ask for sooner).
IDLE_WAIT_S = 0.25


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
        resolver: disc.Resolver = disc.system_resolver,
        debug_dispatch: str | None = None,
    ) -> None:
        import tritonclient.grpc as grpcclient  # noqa: F401  (fail early if missing)

        self.priority = resolve_priority(priority)
        self.discovery = disc.Discovery(
            disc.parse_servers([servers] if isinstance(servers, str) else servers),
            disc.discovery_interval(discovery_interval_s), resolver)
        self.urls = self.discovery.refresh(time.monotonic(), force=True) or []
        self.asked_versions = dict(model_versions or {})
        self.versions: dict[str, str] = {}
        self.options = options or ConnectionOptions()
        self.connect_timeout, self.retry_deadline, self.request_timeout = timeouts(
            connect_timeout, retry_deadline)
        self.max_in_flight = max_in_flight
        self.endpoints: dict[str, Endpoint] = {}
        for url in self.urls:
            self.endpoint(url)
        self._events: queue.Queue[tuple[d.Event | None, Any]] = queue.Queue()
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._jobs: dict[int, _Job] = {}  # request id -> its window, rows and payload
        self._calls: dict[int, Any] = {}  # token -> tritonclient CallContext (to cancel a copy)
        self._open: dict[int, EmbeddingTicket] = {}  # window -> ticket
        self._request_ids = itertools.count()
        self._window_ids = itertools.count()
        path = debug_dispatch or os.environ.get(DEBUG_DISPATCH_ENV)
        self._recorder = Recorder(path) if path else None
        try:
            self.reference, self.batch_size = start_endpoints(self, batch_size)
        except BaseException:
            self._close_endpoints()
            raise
        self.widths = (self.reference[DNA_MODEL].width, self.reference[PROTEIN_MODEL].width)
        seed = random.SystemRandom().randrange(1 << 63)
        setup = d.RunSetup(self.reference, self.versions, self.batch_size,
                           PRIORITIES[self.priority], self.discovery.describe())
        policy = d.Policy(retry_deadline_s=self.retry_deadline)
        self.core = d.Dispatcher(setup, policy, random.Random(seed))
        if self._recorder is not None:
            self._recorder.header(setup, policy, seed)
        listed = set(self.discovery.addresses())
        self._feed(d.Start(tuple(
            d.StartEndpoint(e.url, e.settings if e.state == "up" else None, e.last_error,
                            e.url in listed) for e in self.endpoints.values())))
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="embed-dispatcher",
                                            daemon=True)
        self._dispatcher.start()
        if self.discovery.dynamic:
            threading.Thread(target=self._discover_loop, name="embed-discovery",
                             daemon=True).start()

    def endpoint(self, url: str) -> Endpoint:
        ep = self.endpoints.get(url)
        if ep is None:
            ep = self.endpoints[url] = Endpoint(url, self.options, self.request_timeout,
                                                priority=PRIORITIES[self.priority])
        return ep

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
                requests.append(d.Request(rid, job.model, len(job.rows)))
            self._events.put((d.Submit(window, tuple(requests)), None))
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
                    event, answer = d.Tick(), None
                if event is None:
                    break  # closing
                with self._lock:
                    self._feed(event, answer)
        except BaseException as exc:  # handed to every waiting window
            self._fail(exc)

    def _feed(self, event: d.Event, answer: Any = None) -> None:
        """Hand `event` to the core and perform its actions (`answer`: a reply's embeddings)."""
        now = time.monotonic()
        if isinstance(event, d.Reply):
            self._calls.pop(event.token, None)
        actions = self.core.handle(now, event)
        if self._recorder is not None:
            self._recorder.write(now, event, actions)
        for action in actions:
            self._perform(action, now, answer)

    def _perform(self, a: d.Action, now: float, answer: Any) -> None:
        """One action of the core (`Marked` needs no I/O: the state lives in the core)."""
        if isinstance(a, d.Send):
            self._send(a, now)
        elif isinstance(a, d.Cancel) and a.token in self._calls:
            self._calls[a.token].cancel()
        elif isinstance(a, d.Deliver):
            job = self._jobs.pop(a.request)
            job.ticket.outputs[job.model][job.rows] = answer
        elif isinstance(a, d.Finished):
            self._open.pop(a.window)._finish()
        elif isinstance(a, d.Fail):
            raise (ServerUnavailable if a.exit_class == d.UNAVAILABLE else OrchestratorError)(a.message)
        elif isinstance(a, d.Log):
            log.log(logging.WARNING if a.level == "warning" else logging.INFO, "%s", a.message)
        elif isinstance(a, d.Close):
            self.endpoints[a.url].close()
        elif isinstance(a, d.Connect):
            self._connect(a)
        elif isinstance(a, d.CheckLive):
            self._check_live(a)

    def _send(self, a: d.Send, now: float) -> None:
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
            """On tritonclient's thread: the answer as a Reply (checked here, off the core's
            thread), posted with its embeddings."""
            emb = None
            if error is not None:
                reply = d.Reply(a.token, outcome_of(error), first_line(error))
            else:
                try:
                    emb = result.as_numpy(OUTPUT_NAME)
                    reply = (d.Reply(a.token, d.OK) if emb is not None and emb.shape == expected
                             else d.Reply(a.token, d.MALFORMED, f"{where} returned shape "
                                          f"{None if emb is None else emb.shape}, expected {expected}"))
                except Exception as exc:
                    reply = d.Reply(a.token, d.MALFORMED, f"{where} answered without {OUTPUT_NAME}: {exc}")
            self._events.put((reply, emb))

        try:
            self._calls[a.token] = self.endpoints[a.url].client.async_infer(
                a.model, [inp], callback, model_version=a.version,
                headers=self.options.header_dict(), client_timeout=self.request_timeout,
                priority=a.priority)
        except Interrupted:
            raise
        except Exception as exc:  # channel closed under us: treat like a failed call
            self._events.put((d.Reply(a.token, outcome_of(exc), first_line(exc)), None))

    def _connect(self, a: d.Connect) -> None:
        """A fresh channel, probed on its own thread until it is live and both models are ready;
        then what it serves (the pinned versions) goes to the core for the identity check."""
        ep = self.endpoint(a.url)
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
                        settings = probe.read_settings(self.connect_timeout, self.max_in_flight,
                                                       self.versions, self.reference)
                        self._events.put((d.Identity(ep.url, a.epoch, settings), None))
                        return
                except OrchestratorError as exc:
                    probe.last_error = str(exc)
                if probe.last_error and probe.last_error != reported:
                    reported = probe.last_error
                    self._events.put((d.Unreachable(ep.url, a.epoch, reported), None))

        threading.Thread(target=run, name=f"health-{ep.url}", daemon=True).start()

    def _check_live(self, a: d.CheckLive) -> None:
        """Ask "live?" on a thread of its own with a short deadline (the check waits for no
        model, so only a frozen process or a dead node leaves it unanswered)."""
        client = self.endpoints[a.url].client
        headers = self.options.header_dict()

        def run() -> None:
            try:
                live = bool(client.is_server_live(headers=headers, client_timeout=a.timeout))
            except Exception:  # no answer in time (or the channel broke)
                live = False
            self._events.put((d.Liveness(a.url, a.epoch, live), None))

        threading.Thread(target=run, name=f"liveness-{a.url}", daemon=True).start()

    # -- servers found and lost during the run ----------------------------------------------------
    def _discover_loop(self) -> None:
        """Read the discovery sources again when due (own thread: a DNS lookup may take a while)
        and post the address list when it changed."""
        tick = min(disc.FILE_POLL_S, self.discovery.interval)
        while not self._closing.wait(tick):
            try:
                addresses = self.discovery.refresh(time.monotonic())
            except Exception as exc:  # a source that fails keeps its last answer; say why once
                log.warning("warning: discovery: %s", first_line(exc))
                continue
            if addresses is not None:
                self._events.put((d.Listed(tuple(addresses)), None))

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
        if self._recorder is not None:
            self._recorder.close()

    def close(self) -> None:
        self._closing.set()
        self._events.put((None, None))
        if self._dispatcher.is_alive() and self._dispatcher is not threading.current_thread():
            self._dispatcher.join(timeout=5.0)
        self._close_endpoints()

    def __enter__(self) -> EmbeddingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
