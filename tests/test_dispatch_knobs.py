"""The dispatch core's policy knobs that change decisions (two random choices, slow start, the
retry budget), by scripted events: no server, no clock, chosen seeds. Their defaults keep
today's decisions (tests/test_dispatch.py); the invariants with each knob on are in
tests/test_dispatch_properties.py."""

from __future__ import annotations

import pytest
from dispatch_script import DNA, Windows, of, settings, started

from orchestrator.embed.dispatch import BUSY, OK, Connect, Identity, Policy, Reply, Send, Tick


def sent_to(actions: list) -> list[str]:
    return [a.url for a in of(actions, Send)]


# -- two random choices ----------------------------------------------------------------------------
def test_two_choices_sends_to_the_freer_of_two_random_endpoints():
    """Of three endpoints with 3, 2 and 1 free slots, every pair holds a freer one than c: the
    first request goes to a or b, never to c, and to b only when the draw missed a."""
    firsts = set()
    for seed in range(30):
        core, _ = started({"a": 3, "b": 2, "c": 1}, Policy(choice="two_choices"), seed=seed)
        firsts.add(sent_to(Windows().submit(core, 0.0, [DNA]))[0])
    assert firsts == {"a", "b"}


def test_least_loaded_sends_the_first_request_to_the_freest_endpoint_whatever_the_seed():
    firsts = set()
    for seed in range(30):
        core, _ = started({"a": 3, "b": 2, "c": 1}, seed=seed)
        firsts.add(sent_to(Windows().submit(core, 0.0, [DNA]))[0])
    assert firsts == {"a"}


def test_two_choices_fills_every_slot_and_skips_a_backing_off_endpoint():
    core, _ = started({"a": 2, "b": 2, "c": 2}, Policy(choice="two_choices"), seed=5)
    w = Windows()
    sends = of(w.submit(core, 0.0, [DNA] * 8), Send)
    assert sorted(s.url for s in sends) == ["a", "a", "b", "b", "c", "c"]
    on_a = next(s for s in sends if s.url == "a")
    core.handle(0.01, Reply(on_a.token, BUSY, "queue full"))  # a backs off
    for s in sends:
        if s.url != "a":
            assert set(sent_to(core.handle(0.02, Reply(s.token, OK)))) <= {"b", "c"}


def test_an_unknown_choice_is_refused():
    with pytest.raises(ValueError, match="two_choices"):
        Policy(choice="round_robin")


# -- slow start ------------------------------------------------------------------------------------
def rejoined(policy: Policy) -> tuple:
    """a (2 slots) from the start with work queued; b (4 slots) admitted at t=1."""
    core, actions = started({"a": 2, "b": None}, policy)
    connect = of(actions, Connect)[0]
    at_start = Windows().submit(core, 0.0, [DNA] * 12)
    return core, at_start, core.handle(1.0, Identity("b", connect.epoch, settings(4)))


def test_slow_start_ramps_a_rejoining_endpoint_from_one_slot_to_its_capacity():
    core, at_start, joined = rejoined(Policy(slow_start_s=9.0))
    assert sent_to(at_start) == ["a", "a"]  # endpoints there at the start: full capacity at once
    assert sent_to(joined) == ["b"]  # 1 slot at admission
    assert sent_to(core.handle(3.9, Tick())) == []  # 1 + 3 x 2.9 / 9 = 1.97 slots
    assert sent_to(core.handle(4.1, Tick())) == ["b"]  # 2 slots after 3 s
    assert core.wake_at() <= 7.0 + 1e-6  # the next step (3 slots) is a wake-up time
    assert sent_to(core.handle(10.0, Tick())) == ["b", "b"]  # full after slow_start_s
    assert core.endpoints["b"].in_flight[DNA] == 4


def test_without_slow_start_a_rejoining_endpoint_takes_its_capacity_at_once():
    _, _, joined = rejoined(Policy())
    assert sent_to(joined) == ["b"] * 4


# -- retry budget ----------------------------------------------------------------------------------
def test_a_shed_request_with_the_budget_spent_waits_for_that_endpoints_backoff():
    """One token (retry_budget_min 1): the first re-send after "queue full" spends it, the
    second waits for the backoff of the endpoint that shed it, while newer requests go on."""
    policy = Policy(retry_budget_ratio=0.5, retry_budget_min=1.0, backoff_min_s=1.0,
                    backoff_max_s=1.0)
    core, _ = started({"a": 1, "b": 1, "c": 1}, policy, seed=2)
    sends = {s.url: s for s in of(Windows().submit(core, 0.0, [DNA] * 4), Send)}
    shed = sends["a"].request
    core.handle(0.1, Reply(sends["a"].token, BUSY, "queue full"))  # a token: re-queued at once
    assert core.retry_tokens == 0
    again = of(core.handle(0.2, Reply(sends["b"].token, OK)), Send)
    assert [(s.url, s.request) for s in again] == [("b", shed)]
    core.handle(0.3, Reply(again[0].token, BUSY, "queue full"))  # no token: waits
    until = core.endpoints["b"].backoff_until[DNA]
    newer = of(core.handle(0.4, Reply(sends["c"].token, OK)), Send)
    assert [s.request for s in newer] == [3]  # the newer request is not held up
    assert of(core.handle(until - 0.01, Tick()), Send) == []  # a is free again: still waits
    assert [s.request for s in of(core.handle(until, Tick()), Send)] == [shed]


def test_no_hedge_once_the_budget_is_spent():
    """Two overdue requests and one token: one copy is sent, the other request waits."""
    def hedged(policy: Policy) -> int:
        core, _ = started({"a": 1, "b": 1, "c": 1}, policy)
        Windows().submit(core, 0.0, [DNA, DNA])
        core.handle(12.0, Tick())
        return core.stats[DNA]["hedged"]

    assert hedged(Policy(hedge_default_s=10.0)) == 2
    assert hedged(Policy(hedge_default_s=10.0, retry_budget_ratio=0.1,
                         retry_budget_min=1.0)) == 1
