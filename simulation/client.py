"""A simulated `predict` run: windows of frames handed to the client's real dispatch core.

`SimClient` is a driver of `orchestrator.embed.dispatch.Dispatcher`, as the gRPC client is: it
turns the simulated servers' answers, probes, discovery reads and timers into the core's events,
and performs the core's actions in simulated time. No decision is taken here.
"""

from __future__ import annotations

import random
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

from orchestrator.embed.contract import MODELS
from orchestrator.embed.dispatch import (
    BUSY,
    FAILED,
    OK,
    CheckLive,
    Close,
    Connect,
    Deliver,
    Dispatcher,
    Fail,
    Finished,
    Identity,
    Listed,
    Liveness,
    Marked,
    Policy,
    Reply,
    Request,
    RunSetup,
    Send,
    Start,
    StartEndpoint,
    Submit,
    Tick,
    Unreachable,
)
from orchestrator.embed.dispatch import Cancel as CancelAction
from orchestrator.embed.priority import PRIORITIES
from simulation.scenario import ClientGroup
from simulation.servers import Call, SimServer

# The real client re-probes a down endpoint this often (orchestrator.embed.triton.client).
PROBE_INTERVAL_S = 0.5
# An aperture passes over an endpoint that failed or did not answer for this long after it did.
LOST_FOR_S = 5.0


class SimClient:
    """One `predict` process: `frames` frames in windows of `window`, up to 1 + lookahead windows
    with the core at once, finished in order. `world` (simulation.world.World, which imports this
    module) gives the clock, the servers, their settings and the discovery list."""

    def __init__(self, world: Any, number: int, group: ClientGroup, start_s: float,
                 policy: Policy, seed: int) -> None:
        self.world = world
        self.env = world.env
        self.number = number
        self.group = group
        self.start_s = start_s
        self.end_s: float | None = None
        self.failed: str | None = None
        self.policy = policy
        self.seed = seed
        self.rng = random.Random(seed)
        self._aperture_key = random.Random(seed + 2).getrandbits(64)
        self._given: tuple[str, ...] = ()  # the addresses this client's core was last handed
        # endpoints its core found down, refused or not answering, and when (last)
        self._lost: dict[str, float] = {}
        self.core: Dispatcher | None = None
        self.rows: dict[int, int] = {}  # request id -> rows
        self.model_of: dict[int, str] = {}
        self.delivered: dict[int, int] = {}  # request id -> times delivered (must be 1)
        self.sends: dict[int, int] = {}  # request id -> copies sent (more than 1: a duplicate)
        self.rows_sent = dict.fromkeys(MODELS, 0)
        self.calls: dict[int, tuple[Call, SimServer]] = {}
        self.events = 0
        self._next_request = 0
        self._windows_left = -(-group.frames // group.window)
        self._open: deque[int] = deque()
        self._finished: set[int] = set()
        self._next_window = 0
        self._preparing = False
        self._tick_at: float | None = None
        self._probing: set[tuple[str, int]] = set()
        self.env.process(self._run())

    # -- the run -----------------------------------------------------------------------------------
    def _run(self):
        yield self.env.timeout(self.start_s + self.group.startup_s)
        world = self.world
        reference = world.settings("v1")
        batch = {m: min(self.group.batch, world.max_batch()) for m in MODELS}
        setup = RunSetup(reference=reference, versions={m: reference[m].version for m in MODELS},
                         batch_size=batch, priority=PRIORITIES[self.group.priority],
                         sources="simulated discovery")
        self.core = Dispatcher(setup, self.policy, self.rng)
        listed = world.listed_urls()
        self._lost = {u: self.env.now for u in listed if world.server_at(u).state != "up"}
        self._given = self._subset(listed)
        if all(u in self._lost for u in self._given):
            # the real client's start-up check: no listed server answers (exit 3)
            self.failed = "no Triton endpoint answered at start"
            self.end_s = self.env.now
            world.client_done(self)
            return
        start = []
        for url in self._given:
            server = world.server_at(url)
            if server.state == "up":
                start.append(StartEndpoint(url, world.settings(server.weights)))
            else:
                start.append(StartEndpoint(url, None, "connection refused" if server.state == "dead"
                                           else "timed out"))
        self._feed(Start(tuple(start)))
        self._fill()
        world.discovery.subscribe(self)

    def _fill(self) -> None:
        """Prepare and hand the core windows, up to 1 + lookahead open ones; preparing one takes
        frames / frames_per_cpu_s of the client's time (one window at a time, as predict's reader)."""
        g = self.group
        while (self.failed is None and not self._preparing and self._next_window < self._windows_left
               and len(self._open) <= g.lookahead):
            w = self._next_window
            self._next_window += 1
            self._open.append(w)
            frames = min(g.window, g.frames - w * g.window)
            if g.frames_per_cpu_s:
                self._preparing = True
                self._later(frames / g.frames_per_cpu_s, lambda w=w, f=frames: self._prepared(w, f))
                return
            self._submit(w, frames)

    def _prepared(self, window: int, frames: int) -> None:
        self._preparing = False
        self._submit(window, frames)
        self._fill()

    def _submit(self, w: int, frames: int) -> None:
        requests = []
        for model in MODELS:
            size = self.core.setup.batch_size[model]
            for first in range(0, frames, size):
                rid = self._next_request
                self._next_request += 1
                rows = min(size, frames - first)
                self.rows[rid] = rows
                self.model_of[rid] = model
                requests.append(Request(rid, model, rows))
        self._feed(Submit(w, tuple(requests)))

    def listed(self, urls: tuple[str, ...]) -> None:
        """A discovery read (the world calls it on this client's schedule); the core hears of it
        when what it is handed changes, as the real client posts a changed list."""
        if self.end_s is None and self.failed is None:
            given = self._subset(urls)
            if given != self._given:
                self._given = given
                self._feed(Listed(given))

    def _subset(self, urls: tuple[str, ...]) -> tuple[str, ...]:
        """All of `urls`, or with an aperture of K the first K by rendezvous rank among those this
        client's core has not found down or refused (kept in list order)."""
        k = self.world.knobs["aperture"]
        if not k or len(urls) <= k:
            return urls
        bad = {u for u, t in self._lost.items() if self.env.now - t < LOST_FOR_S}
        ranked = sorted(urls, key=lambda u: (u in bad, zlib.crc32(f"{u}|{self._aperture_key}".encode())))
        chosen = set(ranked[:k])
        return tuple(u for u in urls if u in chosen)

    # -- events in, actions out ------------------------------------------------------------------------
    def _feed(self, event: Any) -> None:
        if self.core is None or self.end_s is not None or self.failed is not None:
            return
        self.events += 1
        for action in self.core.handle(self.env.now, event):
            self._perform(action)
        self._schedule_tick()

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        ev = self.env.timeout(delay)
        ev.callbacks.append(lambda _ev: fn())

    def _schedule_tick(self) -> None:
        if self.core is None or self.end_s is not None or self.failed is not None:
            return
        at = self.core.wake_at()
        if at is None or (self._tick_at is not None and self._tick_at <= at):
            return
        self._tick_at = at

        def fire() -> None:
            if self._tick_at == at:
                self._tick_at = None
                self._feed(Tick())
        self._later(max(0.0, at - self.env.now), fire)

    def _perform(self, action: Any) -> None:
        kind = type(action)
        if kind is Send:
            self.world.count(self.world.sends_bins)
            self._send(action)
        elif kind is Deliver:
            self.delivered[action.request] = self.delivered.get(action.request, 0) + 1
        elif kind is Finished:
            self._finished.add(action.window)
            while self._open and self._open[0] in self._finished:
                self._open.popleft()
            if not self._open and self._next_window == self._windows_left:
                self.end_s = self.env.now
                self.world.client_done(self)
            else:
                self._fill()
        elif kind is CancelAction:
            entry = self.calls.pop(action.token, None)
            if entry is not None:
                call, server = entry
                self._later(self.world.network_s(server), lambda: server.cancel(call))
        elif kind is Connect:
            self._probe(action.url, action.epoch)
        elif kind is CheckLive:
            self._check_live(action)
        elif kind is Fail:
            self.failed = action.message
            self.end_s = self.env.now
            self.world.client_done(self)
        elif kind is Marked:
            if action.state == "up":
                self._lost.pop(action.url, None)
            elif action.state in ("down", "refused") and not action.reason.startswith("listed"):
                self._lose(action.url)  # failed or refused, not merely listed again
        elif kind is Close:
            pass  # the simulated channel holds nothing

    def _lose(self, url: str) -> None:
        """`url` failed, was refused or does not answer: an aperture replaces it."""
        fresh = self.env.now - self._lost.get(url, -LOST_FOR_S) < LOST_FOR_S
        self._lost[url] = self.env.now
        if not fresh:
            if self.world.knobs["aperture"]:
                self._later(0.0, lambda: self.listed(self.world.listed_urls()))

    def _send(self, action: Send) -> None:
        server = self.world.server_at(action.url)
        rows = self.rows[action.request]
        self.rows_sent[action.model] += rows
        self.sends[action.request] = self.sends.get(action.request, 0) + 1
        token = action.token
        delay = self.world.network_s(server)

        def reply(status: str) -> None:
            self.calls.pop(token, None)
            outcome = {"ok": OK, "busy": BUSY}.get(status, FAILED)
            detail = {"busy": "exceeds maximum queue size"}.get(status, "" if status == "ok" else
                                                                  "failed to connect")
            self._later(delay, lambda: self._feed(Reply(token, outcome, detail)))

        call = Call(request=action.request, model=action.model, rows=rows,
                    tokens=rows * self.group.tokens_per_frame, level=action.priority - 1,
                    reply=reply)
        self.calls[token] = (call, server)
        self._later(delay, lambda: server.call(call))

    def _probe(self, url: str, epoch: int) -> None:
        """Connect: probe until the server is live and ready, then report its identity."""
        if (url, epoch) in self._probing:
            return
        self._probing.add((url, epoch))
        server = self.world.server_at(url)

        def attempt() -> None:
            ep = self.core.endpoints.get(url)
            if (self.end_s is not None or self.failed is not None or ep is None
                    or ep.epoch != epoch or ep.state != "down"):
                self._probing.discard((url, epoch))
                return
            if server.state == "up":
                self._probing.discard((url, epoch))
                self._feed(Identity(url, epoch, self.world.settings(server.weights)))
                return
            self._feed(Unreachable(url, epoch, "connection refused" if server.state == "dead"
                                   else "timed out"))
            self._lose(url)
            self._later(PROBE_INTERVAL_S, attempt)
        self._later(2 * self.world.network_s(server), attempt)

    def _check_live(self, action: CheckLive) -> None:
        server = self.world.server_at(action.url)
        answer = server.answers_probe()
        delay = action.timeout if answer is None else 2 * self.world.network_s(server)
        self._later(delay, lambda: self._feed(Liveness(action.url, action.epoch, bool(answer))))
