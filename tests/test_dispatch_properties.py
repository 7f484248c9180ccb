"""Invariants of the dispatch core over random event sequences (hypothesis): a small random world
answers the core's actions in any order, with failures, load shedding, frozen servers, refusals
and membership changes; after every event the invariants below must hold."""

from __future__ import annotations

from collections import Counter

import pytest
from dispatch_script import DNA, PROTEIN, settings, started
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from orchestrator.embed.dispatch import (
    BUSY,
    FAILED,
    OK,
    CheckLive,
    Close,
    Connect,
    Deliver,
    Fail,
    Finished,
    Identity,
    Listed,
    Liveness,
    Policy,
    Reply,
    Request,
    Send,
    Submit,
    Tick,
)

URLS = ("a", "b", "c")


class World:
    """Answers the core's actions and checks the invariants after every event."""

    def __init__(self, core) -> None:
        self.core = core
        self.now = 0.0
        self.calls: dict[int, Send] = {}  # tokens sent and not yet answered
        self.connects: dict[str, int] = {}  # url -> epoch being probed
        self.checks: dict[str, CheckLive] = {}
        self.delivered: Counter[int] = Counter()
        self.finished: Counter[int] = Counter()
        self.window_of: dict[int, int] = {}
        self.requests_of: dict[int, set[int]] = {}
        self.closed: set[str] = set()
        self.next_id = 0
        self.failed = False

    def feed(self, event) -> None:
        refused_or_gone = {u for u, e in self.core.endpoints.items()
                           if e.state in ("refused", "gone")}
        actions = self.core.handle(self.now, event)
        if self.failed:
            assert actions == [], "actions after the run failed"
        for a in actions:
            if isinstance(a, Send):
                assert a.url not in refused_or_gone, "a request went to a refused or gone endpoint"
                assert self.core.endpoints[a.url].state == "up", "a request went to a down endpoint"
                assert a.token not in self.calls
                self.calls[a.token] = a
            elif isinstance(a, Deliver):
                self.delivered[a.request] += 1
                assert self.delivered[a.request] == 1, "a request answered twice"
            elif isinstance(a, Finished):
                self.finished[a.window] += 1
                assert self.finished[a.window] == 1, "a window handed back twice"
                assert all(self.delivered[r] == 1 for r in self.requests_of[a.window])
            elif isinstance(a, Connect):
                self.connects[a.url] = a.epoch
            elif isinstance(a, CheckLive):
                self.checks[a.url] = a
            elif isinstance(a, Close):
                self.closed.add(a.url)
            elif isinstance(a, Fail):
                self.failed = True
        self.check()

    def check(self) -> None:
        core = self.core
        if self.failed:
            return
        held = Counter((ep.url, job.model) for ep, job, _ in core.outstanding.values())
        for url, ep in core.endpoints.items():
            for model in (DNA, PROTEIN):
                assert ep.in_flight[model] == held[url, model], "in-flight count drifted"
                if ep.settings:
                    assert ep.in_flight[model] <= ep.settings[model].max_in_flight, \
                        "more in flight than the endpoint's capacity"
            if ep.state != "up":
                assert held[url, DNA] + held[url, PROTEIN] == 0, "requests held by a down endpoint"
        queue = [job for heap in core.pending.values() for job in heap]
        assert len({id(j) for j in queue}) == len(queue), "a request queued twice"
        assert all(j.queued for j in queue)
        waiting = {job.id for job in queue}
        out = {job.id for _, job, _ in core.outstanding.values()}
        for window, ids in self.requests_of.items():
            if self.finished[window]:
                continue
            for rid in ids:
                assert self.delivered[rid] or rid in waiting or rid in out, "a request was lost"


def good(capacity: int) -> dict:
    return settings(capacity)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_invariants_hold_over_random_event_sequences(data):
    random_world(data, {})


# each knob of the policy that changes a decision, on (its tests: tests/test_dispatch_knobs.py)
KNOBS = {"two choices": {"choice": "two_choices"}, "slow start": {"slow_start_s": 5.0},
         "retry budget": {"retry_budget_ratio": 0.2, "retry_budget_min": 2.0}}


@pytest.mark.parametrize("knob", KNOBS)
@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_invariants_hold_with_each_policy_knob_on(knob, data):
    random_world(data, KNOBS[knob])


def random_world(data, knobs: dict) -> None:
    """A random sequence of events answered by a `World`, then everything drained."""
    caps = {u: data.draw(st.sampled_from([None, 1, 2, 3]), label=f"cap {u}") for u in URLS}
    if all(c is None for c in caps.values()):
        caps["a"] = 1
    seed = data.draw(st.integers(0, 2**32), label="seed")
    policy = Policy(max_attempts=data.draw(st.integers(1, 30)), **knobs)
    core, actions = started(caps, policy, seed=seed)
    world = World(core)
    for a in actions:
        if isinstance(a, Connect):
            world.connects[a.url] = a.epoch
    steps = data.draw(st.integers(1, 60), label="steps")
    for _ in range(steps):
        op = data.draw(st.sampled_from(["submit", "reply", "reply", "reply", "tick", "live",
                                        "identity", "listed"]))
        if op == "submit":
            models = data.draw(st.lists(st.sampled_from([DNA, PROTEIN]), max_size=4))
            window = len(world.requests_of)
            ids = list(range(world.next_id, world.next_id + len(models)))
            world.next_id += len(models)
            world.requests_of[window] = set(ids)
            world.feed(Submit(window, tuple(Request(i, m, 2) for i, m in zip(ids, models, strict=True))))
        elif op == "reply" and world.calls:
            token = data.draw(st.sampled_from(sorted(world.calls)))
            del world.calls[token]
            outcome = data.draw(st.sampled_from([OK, OK, OK, BUSY, FAILED]))
            world.feed(Reply(token, outcome, "x"))
        elif op == "tick":
            world.now += data.draw(st.floats(0, 30, allow_nan=False))
            world.feed(Tick())
        elif op == "live" and world.checks:
            url = data.draw(st.sampled_from(sorted(world.checks)))
            check = world.checks.pop(url)
            world.feed(Liveness(url, check.epoch, data.draw(st.booleans())))
        elif op == "identity" and world.connects:
            url = data.draw(st.sampled_from(sorted(world.connects)))
            epoch = world.connects.pop(url)
            answer = data.draw(st.sampled_from([good(1), good(2), good(3),
                                                settings(1, weights="x" * 64)]))
            world.feed(Identity(url, epoch, answer))
        elif op == "listed":
            listed = data.draw(st.lists(st.sampled_from(URLS), min_size=1, unique=True))
            world.feed(Listed(tuple(u for u in URLS if u in listed)))
        if world.failed:
            return
    drain(world)


def drain(world: World) -> None:
    """Every server comes back and answers everything: every window is handed back exactly once
    (unless the run failed, or every endpoint was refused)."""
    world.feed(Listed(URLS))
    for _ in range(200):
        if world.failed or not world.core.windows:
            break
        for url, epoch in sorted(world.connects.items()):
            del world.connects[url]
            world.feed(Identity(url, epoch, good(2)))
        for url, check in sorted(world.checks.items()):
            del world.checks[url]
            world.feed(Liveness(url, check.epoch, True))
        for token in sorted(world.calls):
            del world.calls[token]
            world.feed(Reply(token, OK))
        world.now += 1.0
        world.feed(Tick())
    usable = any(e.state != "refused" for e in world.core.endpoints.values())
    if not world.failed and usable:
        assert set(world.finished) == set(world.requests_of), "a window was never handed back"
