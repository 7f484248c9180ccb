"""One simulated run of a scenario: servers, discovery, faults and clients on a SimPy clock.

`simulate(scenario)` returns the result object `python -m simulation run --json` prints; the same
seed gives the same object apart from `wall_s` (and the speed figures derived from it).
"""

from __future__ import annotations

import json
import random
import sys
import time
from typing import Any

import simpy

from orchestrator.embed.contract import MODELS
from orchestrator.embed.dispatch import ModelSettings, Policy
from orchestrator.embed.dispatch.identity import in_flight_limit
from orchestrator.embed.priority import PRIORITIES
from orchestrator.errors import InputError
from simulation.client import SimClient
from simulation.scenario import Fault, Scenario
from simulation.servers import SimServer

# A run stops here at the latest when the scenario gives no until_s (simulated seconds).
DEFAULT_LIMIT_S = 86_400.0
# Width of the time series bins (seconds) for --series and the study's plots.
SERIES_BIN_S = 1.0


def url_of(index: int) -> str:
    return f"sim-{index}:8001"


# Knobs of the driver rather than the core (the gRPC client's discovery loop would hold them):
# `discovery_jitter` J re-reads the list every interval x uniform(1 - J, 1 + J) instead of on a
# fixed period; `aperture` K hands each client's core only K of the listed servers, chosen by
# rendezvous hashing with a per-client key, replacing one that is down or refused (0: all).
DRIVER_KNOBS = {"discovery_jitter": 0.0, "aperture": 0}


def driver_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    out = dict(DRIVER_KNOBS)
    for key in DRIVER_KNOBS:
        if key in knobs:
            value = knobs[key]
            ok = (isinstance(value, int) and value >= 0) if key == "aperture" else (
                isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1)
            if not ok:
                raise InputError(f"policy.{key}: {value!r} is not "
                                 f"{'a whole number >= 0' if key == 'aperture' else 'in [0, 1)'}")
            out[key] = value
    return out


def make_policy(knobs: dict[str, Any]) -> Policy:
    """The core's Policy with the scenario's knobs; an unknown knob or bad value is named."""
    knobs = {k: v for k, v in knobs.items() if k not in DRIVER_KNOBS}
    try:
        return Policy(**knobs)
    except TypeError as exc:
        known = ", ".join(sorted(Policy().to_json()))
        raise InputError(f"policy: {exc} (knobs of the dispatch core: {known})") from None
    except ValueError as exc:
        raise InputError(f"policy: {exc}") from None


class Discovery:
    """The address list every client re-reads on its own schedule; a client sees a change at its
    next read after it (as `file:///` and `dns:///` sources are read by the real client)."""

    def __init__(self, world: World, interval: float, jitter: float) -> None:
        self.world = world
        self.interval = interval
        self.jitter = jitter

    def subscribe(self, client: SimClient) -> None:
        rng = random.Random(client.seed + 1)

        def period() -> float:
            return self.interval * (rng.uniform(1 - self.jitter, 1 + self.jitter) if self.jitter else 1)

        def read() -> None:
            if client.end_s is not None:
                return
            client.listed(self.world.listed_urls())
            client._later(period(), read)
        client._later(period(), read)


class World:
    """Everything of one simulated run; clients and servers reach each other through it."""

    def __init__(self, scenario: Scenario, progress: bool = False) -> None:
        self.scenario = scenario
        self.env = simpy.Environment()
        self.rng = random.Random(scenario.seed)
        self.progress = progress
        self.policy = make_policy(scenario.policy)
        self.knobs = driver_knobs(scenario.policy)
        self.sends_bins: dict[int, int] = {}
        self.queue_full_bins: dict[int, int] = {}
        levels = len(PRIORITIES)
        self.busy_bins: dict[int, float] = {}
        self.servers = [SimServer(self.env, spec, levels, self._busy) for spec in scenario.servers]
        self._by_url = {url_of(s.spec.index): s for s in self.servers}
        for s in self.servers:
            s.on_queue_full = lambda: self.count(self.queue_full_bins)
        listed = scenario.initially_listed()
        for s in self.servers:
            s.listed = s.spec.index in listed
        self.discovery = Discovery(self, scenario.discovery_interval_s, self.knobs["discovery_jitter"])
        self.clients: list[SimClient] = []
        for group in scenario.clients:
            for _ in range(group.count):
                n = len(self.clients)
                self.clients.append(SimClient(self, n, group, group.start_s, self.policy,
                                              self.rng.getrandbits(32)))
        self.running = len(self.clients)
        self.all_done = self.env.event()
        for fault in scenario.faults:
            self.env.process(self._fault(fault))

    # -- what clients ask ----------------------------------------------------------------------------
    def listed_urls(self) -> tuple[str, ...]:
        return tuple(url_of(s.spec.index) for s in self.servers if s.listed)

    def server_at(self, url: str) -> SimServer:
        return self._by_url[url]

    def network_s(self, server: SimServer) -> float:
        return server.spec.network_ms / 1000.0

    def max_batch(self) -> int:
        return min(s.spec.max_batch for s in self.servers)

    def settings(self, weights: str) -> dict[str, ModelSettings]:
        """What a server answers when asked for its models (every server has the same settings
        but its weights; its instance count is the scenario's)."""
        spec = self.scenario.servers[0]
        limit, _ = in_flight_limit(None, spec.instances, None)
        return {m: ModelSettings(name=m, version="1", width=8, max_batch_size=spec.max_batch,
                                 instances=spec.instances, max_in_flight=limit,
                                 weights_sha256=f"sim-{m}-{weights}", versions=("1",))
                for m in MODELS}

    def count(self, bins: dict[int, int]) -> None:
        b = int(self.env.now // SERIES_BIN_S)
        bins[b] = bins.get(b, 0) + 1

    def client_done(self, client: SimClient) -> None:
        self.running -= 1
        if self.running == 0 and not self.all_done.triggered:
            self.all_done.succeed()

    def _busy(self, server: int, model: str, start: float, end: float) -> None:
        t = start
        while t < end:
            b = int(t // SERIES_BIN_S)
            edge = min(end, (b + 1) * SERIES_BIN_S)
            self.busy_bins[b] = self.busy_bins.get(b, 0.0) + (edge - t)
            t = edge

    # -- faults ------------------------------------------------------------------------------------------
    def _fault(self, fault: Fault):
        yield self.env.timeout(fault.at_s)
        targets = [self.servers[i] for i in fault.servers]
        for s in targets:
            if fault.kind == "kill":
                s.kill()
            elif fault.kind == "freeze":
                s.freeze()
            elif fault.kind == "stuck":
                s.stick("esm2")
            elif fault.kind == "restart":
                s.restart(weights="v2")
            elif fault.kind == "add":
                s.listed = True
            elif fault.kind == "remove":
                s.listed = False
        if fault.back_after_s is None:
            return
        yield self.env.timeout(fault.back_after_s)
        for s in targets:
            if fault.kind == "kill":
                s.restart(weights=s.weights)
            elif fault.kind == "freeze":
                s.thaw()
            else:
                s.unstick()

    # -- the run -------------------------------------------------------------------------------------------
    def run(self) -> None:
        limit = self.scenario.until_s or DEFAULT_LIMIT_S
        stop = self.env.any_of([self.all_done, self.env.timeout(limit)])
        if not self.progress:
            self.env.run(until=stop)
            return
        t0 = time.perf_counter()
        step = max(1.0, limit / 200) if self.scenario.until_s else 10.0
        while not stop.triggered:
            self.env.run(until=min(self.env.now + step, limit))
            if self.env.now >= limit:
                break
            events = sum(c.events for c in self.clients)
            wall = time.perf_counter() - t0
            print(f"simulation: {self.env.now:,.0f} s simulated, {self.running} clients running, "
                  f"{events:,} core events, {events / max(wall, 1e-9):,.0f} events/s",
                  file=sys.stderr, flush=True)

    def result(self, wall_s: float) -> dict[str, Any]:
        jobs = []
        for c in self.clients:
            jobs.append({"client": c.number, "user": c.group.user, "priority": c.group.priority,
                         "frames": c.group.frames, "start_s": round(c.start_s, 6),
                         "end_s": None if c.end_s is None else round(c.end_s, 6),
                         **({"failed": c.failed} if c.failed else {})})
        ends = [j["end_s"] for j in jobs if j["end_s"] is not None]
        makespan = max(ends, default=self.env.now) if self.running == 0 else self.env.now
        sent = {m: sum(c.rows_sent[m] for c in self.clients) for m in MODELS}
        needed = {m: sum(c.group.frames for c in self.clients if c.core is not None) for m in MODELS}
        capacity = sum(s.spec.instances for s in self.servers) * len(MODELS) * makespan
        busy = sum(sum(s.busy_s.values()) for s in self.servers)
        events = sum(c.events for c in self.clients)
        total_needed = sum(needed.values())
        duplicates = sum(c.rows[r] * (k - 1) for c in self.clients for r, k in c.sends.items())
        return {
            "mode": "simulated",
            "makespan_s": round(makespan, 6),
            "jobs": jobs,
            "rows_sent": sent,
            "rows_needed": needed,
            "rows_executed": {m: sum(s.executed_rows[m] for s in self.servers) for m in MODELS},
            # rows sent more than once (hedged, re-sent after a failure or a queue-full answer)
            "duplicate_row_fraction": round(duplicates / total_needed, 6) if total_needed else 0.0,
            "busy_fraction": round(busy / capacity, 6) if capacity else 0.0,
            "queue_full_answers": sum(s.queue_full for s in self.servers),
            "core_events": events,
            "events_per_s": round(events / wall_s) if wall_s else None,
            "wall_s": round(wall_s, 3),
        }


def simulate(scenario: Scenario, progress: bool = False, series_to: str | None = None
             ) -> dict[str, Any]:
    """Simulate `scenario` to the end of its last job (or its until_s) and return the result."""
    t0 = time.perf_counter()
    world = World(scenario, progress=progress)
    world.run()
    result = world.result(time.perf_counter() - t0)
    if series_to:
        bins = range(int(world.env.now // SERIES_BIN_S) + 1)
        with open(series_to, "w") as fh:
            json.dump({"bin_s": SERIES_BIN_S,
                       "busy_instances": [round(world.busy_bins.get(b, 0.0) / SERIES_BIN_S, 4)
                                          for b in bins],
                       "requests_sent": [world.sends_bins.get(b, 0) for b in bins],
                       "queue_full": [world.queue_full_bins.get(b, 0) for b in bins]}, fh)
    return result

