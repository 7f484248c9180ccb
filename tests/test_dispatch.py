"""Every decision of the dispatch core, by scripted events: no server, no clock, a chosen seed."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import numpy as np
import pytest
from dispatch_script import DNA, PROTEIN, SOURCES, Windows, of, settings, started

from orchestrator.embed.dispatch import (
    BUSY,
    ERROR,
    FAILED,
    MALFORMED,
    OK,
    REJECTED,
    UNAVAILABLE,
    Cancel,
    CheckLive,
    Close,
    Connect,
    Deliver,
    Fail,
    Finished,
    Identity,
    Listed,
    Liveness,
    Log,
    Marked,
    Policy,
    Reply,
    Send,
    Submit,
    Tick,
    Unreachable,
    pin_versions,
)
from orchestrator.embed.dispatch.core import percentile
from orchestrator.embed.dispatch.events import RunSetup, StartEndpoint, from_json, to_json
from orchestrator.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def sent_to(actions: list) -> list[str]:
    return [a.url for a in of(actions, Send)]


# -- choice and capacity -------------------------------------------------------------------------
def test_least_loaded_fills_each_endpoint_to_its_own_capacity():
    core, _ = started({"a": 4, "b": 2})
    actions = Windows().submit(core, 1.0, [DNA] * 8)
    assert sorted(sent_to(actions)) == ["a"] * 4 + ["b"] * 2
    assert core.endpoints["a"].in_flight[DNA] == 4 and core.endpoints["b"].in_flight[DNA] == 2
    assert [r.id for r in core.pending[DNA]] == [6, 7]  # the rest waits, in submission order
    first = of(actions, Send)[0]
    freed = core.handle(2.0, Reply(first.token, OK))
    assert of(freed, Deliver) == [Deliver(first.token, first.request)]
    assert sent_to(freed) == [first.url]  # the freed slot takes the next queued request
    assert of(freed, Send)[0].request == 6


def test_equal_endpoints_share_work_when_capacity_exceeds_it():
    core, _ = started({"a": 10, "b": 10})
    actions = Windows().submit(core, 1.0, [DNA, DNA])
    assert sorted(sent_to(actions)) == ["a", "b"]


def test_every_send_names_the_pinned_version_and_the_priority():
    core, _ = started({"a": 2})
    actions = Windows().submit(core, 1.0, [DNA, PROTEIN])
    assert {(a.model, a.version, a.priority) for a in of(actions, Send)} == {
        (DNA, "1", 2), (PROTEIN, "1", 2)}


def test_windows_are_handed_back_once_when_all_their_requests_answered():
    core, _ = started({"a": 4})
    w = Windows()
    sends = of(w.submit(core, 1.0, [DNA, PROTEIN]), Send)
    assert of(core.handle(1.1, Reply(sends[0].token, OK)), Finished) == []
    done = core.handle(1.2, Reply(sends[1].token, OK))
    assert of(done, Finished) == [Finished(0)]
    assert core.handle(1.3, Reply(sends[1].token, OK)) == []  # a second answer is ignored
    assert of(core.handle(1.4, Submit(7, ())), Finished) == [Finished(7)]  # nothing to send
    assert core.stats[DNA]["requests"] == 1 and core.stats[DNA]["frames"] == 3


# -- load shedding -------------------------------------------------------------------------------
def test_busy_backs_off_that_endpoint_and_model_with_growing_jittered_delays():
    policy = Policy(backoff_min_s=0.1, backoff_max_s=0.35)
    core, _ = started({"a": 1}, policy, seed=3)
    send = of(Windows().submit(core, 0.0, [DNA]), Send)[0]
    delays = []
    now = 0.0
    warnings = 0
    for _ in range(4):
        actions = core.handle(now, Reply(send.token, BUSY, "exceeds maximum queue size"))
        warnings += len(of(actions, Log))
        assert of(actions, Send) == []  # backing off, not sent again at once
        until = core.endpoints["a"].backoff_until[DNA]
        delays.append(until - now)
        assert core.wake_at() == until
        now = until
        send = of(core.handle(now, Tick()), Send)[0]  # sent again when the backoff ends
    bounds = [0.1, 0.2, 0.35, 0.35]  # doubling from backoff_min_s, capped at backoff_max_s
    assert all(b / 2 <= d <= b for d, b in zip(delays, bounds, strict=True)), delays
    assert core.endpoints["a"].rejections == 4 and core.pending[DNA] == []
    assert warnings == 1  # said once per endpoint
    assert core.outstanding[send.token][1].attempts == 0  # never a failed attempt
    core.handle(now + 0.01, Reply(send.token, OK))
    assert core.endpoints["a"].busy_streak[DNA] == 0  # an answer resets the growth


def test_busy_warns_once_per_endpoint_and_other_endpoints_take_the_work():
    core, _ = started({"a": 1, "b": 1})
    sends = of(Windows().submit(core, 0.0, [DNA, DNA, DNA]), Send)
    on_a = next(s for s in sends if s.url == "a")
    actions = core.handle(0.1, Reply(on_a.token, BUSY, "queue full"))
    assert [a.message for a in of(actions, Log)] == [
        "warning: Triton at a sheds load (queue full); backing off and retrying there and "
        "elsewhere (rejections are counted in run.json)"]
    on_b = next(s for s in sends if s.url == "b")
    again = core.handle(0.11, Reply(on_b.token, OK))
    assert sent_to(again) == ["b"]  # a is backing off; b takes the oldest queued request
    assert of(again, Send)[0].request == on_a.request
    second = core.handle(0.12, Reply(of(again, Send)[0].token, BUSY, "queue full"))
    assert [a.message.split(" sheds")[0] for a in of(second, Log)] == ["warning: Triton at b"]


def test_busy_answer_of_an_answered_copy_is_ignored():
    core, _ = started({"a": 1, "b": 1})
    w = Windows()
    send = of(w.submit(core, 0.0, [DNA]), Send)[0]
    copy = of(core.handle(100.0, Tick()), Send)  # overdue: hedged to the other endpoint
    assert copy and copy[0].url != send.url
    core.handle(100.6, Reply(copy[0].token, OK))
    assert core.handle(100.7, Reply(send.token, BUSY, "queue full")) == []
    assert core.endpoints[send.url].rejections == 0


# -- failover ------------------------------------------------------------------------------------
def test_failed_call_marks_down_and_resends_its_requests_first_elsewhere():
    core, _ = started({"a": 2, "b": 2})
    w = Windows()
    sends = of(w.submit(core, 0.0, [DNA] * 6), Send)
    on_a = [s for s in sends if s.url == "a"]
    actions = core.handle(1.0, Reply(on_a[0].token, FAILED, "socket closed"))
    a = core.endpoints["a"]
    assert a.state == "down" and a.failures == 1 and a.down == 1 and a.in_flight[DNA] == 0
    assert of(actions, Marked) == [Marked("a", "down", f"model {DNA}: socket closed")]
    assert of(actions, Connect) == [Connect("a", a.epoch)]
    assert of(actions, Log)[0].message == (
        f"Triton at a failed (model {DNA}: socket closed); 2 outstanding requests re-sent to 1 "
        "other endpoint(s); retrying it for up to 60 s")
    # taken-back requests go before later ones, in submission order, once b has room
    assert [r.id for r in core.pending[DNA]] == sorted([s.request for s in on_a] + [4, 5])
    on_b = [s for s in sends if s.url == "b"]
    resent = core.handle(1.1, Reply(on_b[0].token, OK))
    assert [s.request for s in of(resent, Send)] == [min(s.request for s in on_a)]
    assert core.handle(1.2, Reply(on_a[1].token, FAILED, "cancelled")) == []  # taken back


def test_a_request_failing_too_often_fails_the_run_unavailable():
    core, _ = started({"a": 1, "b": 1}, Policy(max_attempts=1))
    w = Windows()
    send = of(w.submit(core, 0.0, [DNA]), Send)[0]
    actions = core.handle(1.0, Reply(send.token, FAILED, "socket closed"))
    send = of(actions, Send)[0]
    actions = core.handle(2.0, Reply(send.token, FAILED, "socket closed"))
    assert of(actions, Fail) == [Fail(UNAVAILABLE, f"a request to {DNA} failed 2 times (last at "
                                      f"{send.url}: socket closed)")]
    assert core.failure is not None and core.handle(3.0, Tick()) == []


def test_rejected_and_malformed_answers_fail_the_run_with_exit_class_error():
    core, _ = started({"a": 2})
    sends = of(Windows().submit(core, 0.0, [DNA, DNA]), Send)
    actions = core.handle(1.0, Reply(sends[0].token, REJECTED, "bad input"))
    assert actions == [Fail(ERROR, f"model {DNA} at a rejected a request: bad input")]
    core, _ = started({"a": 2})
    sends = of(Windows().submit(core, 0.0, [DNA]), Send)
    assert core.handle(1.0, Reply(sends[0].token, MALFORMED, "shape (1, 2)")) == [
        Fail(ERROR, "shape (1, 2)")]


def test_retry_deadline_ends_the_run_only_with_no_endpoint_up_for_that_long():
    core, _ = started({"a": 1}, Policy(retry_deadline_s=10))
    send = of(Windows().submit(core, 0.0, [DNA]), Send)[0]
    core.handle(1.0, Reply(send.token, FAILED, "connection reset"))
    assert core.outage_since == 1.0 and core.wake_at() == 11.0
    assert core.handle(11.0, Tick()) == []
    actions = core.handle(11.5, Tick())
    assert actions == [Fail(UNAVAILABLE, "no Triton endpoint answered for 10 s (a: model "
                            f"{DNA}: connection reset); finished windows are checkpointed, "
                            "rerun the same command to resume once a server is back")]


def test_an_answer_from_anywhere_stops_the_outage_clock():
    core, _ = started({"a": 1, "b": 1}, Policy(retry_deadline_s=10))
    sends = of(Windows().submit(core, 0.0, [DNA, DNA]), Send)
    core.handle(1.0, Reply(sends[0].token, FAILED, "socket closed"))
    assert core.outage_since == 1.0
    core.handle(2.0, Reply(sends[1].token, OK))
    assert core.outage_since is None


# -- re-admission and refusal --------------------------------------------------------------------
def test_down_endpoint_is_readmitted_after_the_identity_check():
    core, _ = started({"a": 1, "b": 1})
    sends = of(Windows().submit(core, 0.0, [DNA]), Send)
    core.handle(1.0, Reply(sends[0].token, FAILED, "socket closed"))
    ep = core.endpoints[sends[0].url]
    core.handle(1.5, Unreachable(ep.url, ep.epoch, "connection refused"))
    assert ep.last_error == "connection refused"
    assert ep.info(2.5)["unavailable_seconds"] == 1.5  # down now: counted up to now
    assert core.handle(2.0, Identity(ep.url, ep.epoch - 1, settings(1))) == []  # stale probe
    actions = core.handle(3.0, Identity(ep.url, ep.epoch, settings(1)))
    assert ep.state == "up" and ep.unavailable_seconds == 2.0
    assert of(actions, Marked) == [Marked(ep.url, "up", "answers again")]
    assert of(actions, Log) == [Log("info", f"Triton at {ep.url} answers again; re-admitted")]
    assert ep.info(3.0)["unavailable_seconds"] == 2.0
    assert core.handle(3.1, Identity(ep.url, ep.epoch, settings(1))) == []  # already up


@pytest.mark.parametrize(("other", "why"), [
    (settings(1, weights="x" * 64), "weights_sha256 xxxxxxxxxxxxxxxx (expected wwwwwwwwwwwwwwww)"),
    (settings(1, max_batch=4), "max_batch_size 4 is below this run's requests of 8"),
    (settings(1, version="2"), "version 2 (expected 1)"),
])
def test_an_endpoint_serving_other_models_is_refused_for_the_rest_of_the_run(other, why):
    core, _ = started({"a": 1, "b": None})
    b = core.endpoints["b"]
    actions = core.handle(1.0, Identity("b", b.epoch, other))
    assert b.state == "refused" and why in b.refused
    assert of(actions, Close) == [Close("b")]
    assert "refused for the rest of this run" in of(actions, Log)[0].message
    assert "b" not in sent_to(Windows().submit(core, 2.0, [DNA] * 4))
    assert core.handle(3.0, Listed(("a", "b"))) == []  # listed again: still refused
    assert b.info(3.0)["refused"] == b.refused


def test_start_refuses_a_differing_endpoint_and_probes_the_down_ones():
    core, actions = started({"a": 1, "b": None})
    assert core.endpoints["a"].state == "up" and core.endpoints["b"].state == "down"
    assert of(actions, Connect) == [Connect("b", 0)]
    assert of(actions, Log)[0].message == ("warning: Triton at b is unavailable at start (no "
                                           "answer); running on 1 of 2 endpoints, it joins when "
                                           "it answers")
    setup = RunSetup(settings(), {m: "1" for m in settings()}, {m: 8 for m in settings()})
    from orchestrator.embed.dispatch import Dispatcher, Start

    core = Dispatcher(setup)
    actions = core.handle(0.0, Start((StartEndpoint("a", settings(1)),
                                      StartEndpoint("c", settings(1, weights="z" * 64)),
                                      StartEndpoint("d", None, "gone", listed=False))))
    assert core.endpoints["c"].state == "refused" and core.endpoints["d"].state == "gone"
    assert of(actions, Connect) == [] and of(actions, Close) == [Close("c")]


# -- discovery -----------------------------------------------------------------------------------
def test_a_listed_address_joins_after_the_identity_check():
    core, _ = started({"a": 1})
    actions = core.handle(1.0, Listed(("a", "c")))
    assert of(actions, Connect) == [Connect("c", 1)]
    assert of(actions, Log)[0].message == (f"Triton at c listed by {SOURCES}; admitted once it "
                                           "answers and serves this run's models")
    core.handle(2.0, Identity("c", 1, settings(3)))
    assert sorted(sent_to(Windows().submit(core, 3.0, [DNA] * 4))) == ["a", "c", "c", "c"]


def test_an_unlisted_endpoint_gets_no_request_and_its_requests_are_resent():
    core, _ = started({"a": 2, "b": 2})
    sends = of(Windows().submit(core, 0.0, [DNA] * 4), Send)
    actions = core.handle(1.0, Listed(("b",)))
    a = core.endpoints["a"]
    assert a.state == "gone" and a.in_flight[DNA] == 0 and of(actions, Close) == [Close("a")]
    assert of(actions, Log)[0].message == (f"Triton at a is no longer listed by {SOURCES}; 2 "
                                           "outstanding requests re-sent to 1 other endpoint(s)")
    on_b = [s for s in sends if s.url == "b"]
    assert sent_to(core.handle(1.1, Reply(on_b[0].token, OK))) == ["b"]
    back = core.handle(2.0, Listed(("a", "b")))  # listed again: probed, then admitted
    assert of(back, Connect) == [Connect("a", a.epoch)] and a.state == "down"
    core.handle(2.5, Listed(("b",)))  # gone again while down: nothing was outstanding
    assert a.state == "gone" and a.unavailable_seconds == 0.5


def test_membership_changes_are_not_failed_attempts():
    """Defect: requests taken back from an endpoint that left the list counted as failed
    attempts, so after max_attempts membership changes one ordinary failure ended the run."""
    core, _ = started({"a": 1, "b": 1}, Policy(max_attempts=2))
    send = of(Windows().submit(core, 0.0, [DNA]), Send)[0]
    now = 1.0
    for _ in range(3):  # a rolling update: the request's endpoint leaves, comes back
        here, there = send.url, ("b" if send.url == "a" else "a")
        send = of(core.handle(now, Listed((there,))), Send)[0]
        core.handle(now + 0.1, Listed((there, here)))
        core.handle(now + 0.2, Identity(here, core.endpoints[here].epoch, settings(1)))
        now += 1
    assert core.outstanding[send.token][1].attempts == 0
    actions = core.handle(now, Reply(send.token, FAILED, "socket closed"))
    assert of(actions, Fail) == [] and len(of(actions, Send)) == 1


# -- frozen servers ------------------------------------------------------------------------------
def test_an_endpoint_holding_requests_that_misses_liveness_checks_is_frozen():
    core, _ = started({"a": 1, "b": 1})
    sends = of(Windows().submit(core, 0.0, [DNA, DNA]), Send)
    a, b = core.endpoints["a"], core.endpoints["b"]
    assert core.wake_at() == 0.5  # the first hedge check; liveness at 1.0
    core.handle(0.5, Tick())
    assert core.wake_at() == 1.0
    checks = of(core.handle(1.0, Tick()), CheckLive)
    assert checks == [CheckLive("a", 0, 2.0), CheckLive("b", 0, 2.0)]
    assert of(core.handle(1.0, Tick()), CheckLive) == []  # one check out at a time
    assert core.handle(1.2, Liveness("b", 0, True)) == []
    assert b.liveness_due == 2.2
    again = core.handle(3.0, Liveness("a", 0, False))  # missed: asked again at once
    assert CheckLive("a", 0, 2.0) in again
    actions = core.handle(5.0, Liveness("a", 0, False))
    assert a.state == "down" and a.frozen == 1 and a.down_since == 1.0
    assert of(actions, Marked)[0].reason == "frozen: holds 1 requests but answered no liveness " \
                                             "check for 4.0 s"
    assert of(actions, Log)[0].message.endswith("1 outstanding requests re-sent to 1 other "
                                                "endpoint(s); retrying it for up to 60 s")
    assert core.handle(5.1, Liveness("a", 0, False)) == []  # stale
    on_b = next(s for s in sends if s.url == "b")
    assert sent_to(core.handle(5.2, Reply(on_b.token, OK))) == ["b"]


def test_a_liveness_answer_resets_the_misses_and_an_idle_endpoint_is_not_asked():
    core, _ = started({"a": 1})
    send = of(Windows().submit(core, 0.0, [DNA]), Send)[0]
    core.handle(1.0, Tick())
    core.handle(1.1, Liveness("a", 0, False))
    core.handle(1.2, Liveness("a", 0, True))
    assert core.endpoints["a"].liveness_failures == 0
    core.handle(1.3, Reply(send.token, OK))
    assert of(core.handle(5.0, Tick()), CheckLive) == []  # holds nothing: not asked
    assert core.endpoints["a"].liveness_due == 6.0


# -- stuck models --------------------------------------------------------------------------------
def learn(core, w, now: float, latency: float, n: int = 4) -> float:
    """`n` answers of `latency` seconds on every endpoint: the core learns this run's latency."""
    for _ in range(n):
        for s in of(w.submit(core, now, [DNA]), Send):
            core.handle(now + latency, Reply(s.token, OK))
        now += latency + 0.01
    return now


def test_hedge_deadline_comes_from_this_runs_latencies():
    core, _ = started({"a": 1, "b": 1})
    assert core.deadline(DNA) == 60.0  # before hedge_min_samples answers
    learn(core, Windows(), 0.0, 3.0)
    assert core.deadline(DNA) == 15.0  # hedge_factor x p99
    assert core.deadline(PROTEIN) == 60.0
    core, _ = started({"a": 1, "b": 1})
    learn(core, Windows(), 0.0, 0.1)
    assert core.deadline(DNA) == 10.0  # the floor


def test_an_overdue_request_on_a_silent_server_is_hedged_and_the_first_answer_wins():
    core, _ = started({"a": 1, "b": 1})
    w = Windows()
    now = learn(core, w, 0.0, 1.0)  # deadline 10 s (the floor)
    sends = of(w.submit(core, now, [DNA]), Send)
    stuck = sends[0]
    assert of(core.handle(now + 9.9, Tick()), Send) == []
    actions = core.handle(now + 12.0, Tick())
    copy = of(actions, Send)[0]
    assert copy.request == stuck.request and copy.url != stuck.url
    assert "re-sent to another endpoint (hedged)" in of(actions, Log)[0].message
    assert core.endpoints[stuck.url].hedged == 1 and core.stats[DNA]["hedged"] == 1
    assert of(core.handle(now + 12.5, Tick()), Send) == []  # hedged once
    won = core.handle(now + 13.0, Reply(copy.token, OK))
    assert of(won, Deliver) == [Deliver(copy.token, copy.request)] and of(won, Cancel) == []
    assert core.handle(now + 14.0, Reply(stuck.token, OK)) == []  # the loser is ignored
    assert core.endpoints[stuck.url].last_answer[DNA] == now + 14.0


def test_the_stuck_original_answering_first_cancels_the_copy():
    core, _ = started({"a": 1, "b": 1})
    w = Windows()
    now = learn(core, w, 0.0, 1.0)
    stuck = of(w.submit(core, now, [DNA]), Send)[0]
    copy = of(core.handle(now + 12.0, Tick()), Send)[0]
    actions = core.handle(now + 13.0, Reply(stuck.token, OK))
    assert of(actions, Cancel) == [Cancel(copy.token)]
    assert core.handle(now + 13.1, Reply(copy.token, FAILED, "cancelled")) == []


def test_a_server_answering_other_requests_is_not_hedged_until_the_alone_factor():
    core, _ = started({"a": 1, "b": 1})
    w = Windows()
    now = learn(core, w, 0.0, 1.0)  # deadline 10 s
    stuck = of(w.submit(core, now, [DNA]), Send)[0]
    ep = core.endpoints[stuck.url]
    t = now
    while t < now + 29.0:
        t += 0.5
        ep.last_answer[DNA] = t  # its server keeps answering other requests of the model
        assert of(core.handle(t, Tick()), Send) == []
    hedged = of(core.handle(now + 30.5, Tick()), Send)  # hedge_alone_factor x the deadline
    assert [s.request for s in hedged] == [stuck.request] and hedged[0].url != stuck.url


def test_a_hedged_copy_shed_by_its_server_is_sent_again():
    """Defect: a hedged copy answered "queue full" while the original was stuck was dropped
    (the stuck original counted as a copy on its way), so the request waited for the stuck
    server until the request timeout."""
    core, _ = started({"a": 1, "b": 1, "c": 1})
    stuck = of(Windows().submit(core, 0.0, [DNA]), Send)[0]
    copy = of(core.handle(61.0, Tick()), Send)[0]
    again = of(core.handle(61.1, Reply(copy.token, BUSY, "queue full")), Send)
    assert [s.request for s in again] == [stuck.request]
    assert again[0].url not in (stuck.url, copy.url)  # the one in backoff waits
    assert core.outstanding[again[0].token][1].attempts == 0


def test_the_stuck_original_failing_while_its_copy_is_on_its_way_is_not_resent():
    core, _ = started({"a": 1, "b": 1})
    stuck = of(Windows().submit(core, 0.0, [DNA]), Send)[0]
    copy = of(core.handle(61.0, Tick()), Send)[0]
    actions = core.handle(62.0, Reply(stuck.token, FAILED, "deadline exceeded"))
    assert of(actions, Send) == [] and core.pending[DNA] == []
    assert core.endpoints[stuck.url].state == "down"
    assert of(core.handle(63.0, Reply(copy.token, OK)), Finished) == [Finished(0)]


def test_the_stuck_original_shed_while_its_copy_is_on_its_way_is_not_resent():
    core, _ = started({"a": 1, "b": 1})
    stuck = of(Windows().submit(core, 0.0, [DNA]), Send)[0]
    of(core.handle(61.0, Tick()), Send)
    assert of(core.handle(62.0, Reply(stuck.token, BUSY, "queue full")), Send) == []
    assert core.pending[DNA] == [] and core.endpoints[stuck.url].rejections == 1


def test_a_copy_overdue_where_the_request_has_nowhere_else_to_go_is_not_hedged_again():
    core, _ = started({"a": 1, "b": 1})
    stuck = of(Windows().submit(core, 0.0, [DNA]), Send)[0]
    copy = of(core.handle(61.0, Tick()), Send)[0]
    assert of(core.handle(200.0, Tick()), Send) == [] and copy.token not in core.overdue
    assert core.outstanding[stuck.token][1].avoid == {stuck.url}


def test_no_hedge_with_a_single_endpoint_up():
    core, _ = started({"a": 1})
    send = of(Windows().submit(core, 0.0, [DNA]), Send)[0]
    assert core.handle(500.0, Tick()) == [CheckLive("a", 0, 2.0)]
    assert send.token not in core.overdue


def test_a_hedged_request_with_nowhere_else_to_go_may_return_to_where_it_was_overdue():
    core, _ = started({"a": 1, "b": 1})
    w = Windows()
    sends = of(w.submit(core, 0.0, [DNA, DNA]), Send)
    core.handle(61.0, Tick())  # both overdue at the default deadline, each hedged to the other
    assert {r.id for r in core.pending[DNA]} == {s.request for s in sends}
    a_send = next(s for s in sends if s.url == "a")
    core.handle(61.1, Listed(("a",)))  # b leaves: only a is up, where one of them was overdue
    actions = core.handle(61.2, Reply(a_send.token, OK))
    assert sent_to(actions) == ["a"]  # the other one goes to a after all


# -- wake-ups, identity helpers, the log format, the import rule ---------------------------------
def test_wake_at_is_none_when_only_events_can_change_anything():
    core, _ = started({"a": 1})
    assert core.wake_at() is None
    assert core.handle(1.0, Unreachable("zz", 0, "not ours")) == []


def test_pin_versions_takes_the_asked_version_else_the_newest_common_one():
    a = settings(version="2")
    for m in a.values():
        m.versions = ("1", "2", "10")
    b = settings(version="2")
    for m in b.values():
        m.versions = ("1", "2")
    assert set(pin_versions({}, {"a": a, "b": b}).values()) == {"2"}
    assert set(pin_versions({DNA: "10"}, {"a": a, "b": b}).values()) == {"10", "2"}
    with pytest.raises(InputError, match="no endpoint serves dnabert_s version 7"):
        pin_versions({DNA: "7"}, {"a": a})
    c = settings(version="3")
    with pytest.raises(InputError, match="no version of dnabert_s is served by every endpoint"):
        pin_versions({}, {"a": a, "c": c})


def test_missing_pinned_version_and_other_width_and_precision_are_differences():
    from orchestrator.embed.dispatch import model_differences

    ref, other = settings(), settings()
    other[DNA].missing = "3"
    other[PROTEIN].width = 8
    other[PROTEIN].precision = "fp16"
    assert model_differences(ref, other) == [
        f"{DNA} version 3 not served (serves 1)",
        f"{PROTEIN} width 8 (expected 4)", f"{PROTEIN} precision fp16 (expected unknown)"]


def test_percentile_is_numpys_linear_percentile():
    rng = random.Random(5)
    for n in (1, 2, 7, 100):
        samples = [rng.expovariate(1.0) for _ in range(n)]
        assert percentile(samples, 99) == pytest.approx(float(np.percentile(samples, 99)),
                                                        rel=1e-12)


def test_every_event_and_action_survives_its_json_form():
    items = [
        StartEndpoint("a", settings(1)), Submit(1, ()), Reply(3, BUSY, "x"), Liveness("a", 1, True),
        Identity("a", 2, settings(2)), Unreachable("a", 1, "e"), Listed(("a", "b")), Tick(),
        Send(1, 2, "a", DNA, "1", 2), Cancel(1), Connect("a", 1), Close("a"),
        CheckLive("a", 1, 2.0), Marked("a", "up"), Deliver(1, 2), Finished(3), Fail(ERROR, "m"),
        Log("info", "m"),
    ]
    from orchestrator.embed.dispatch import Request, Start

    items[0] = Start((StartEndpoint("a", settings(1)), StartEndpoint("b", None, "e", False)))
    items[1] = Submit(1, (Request(0, DNA, 3),))
    for item in items:
        assert from_json(json.loads(json.dumps(to_json(item)))) == item
    with pytest.raises(ValueError):
        from_json({"type": "Nope"})
    setup = RunSetup(settings(), {DNA: "1"}, {DNA: 8}, 1, "x")
    assert RunSetup.from_json(json.loads(json.dumps(setup.to_json()))) == setup


BANNED = {"tritonclient", "grpc", "threading", "queue", "socket", "asyncio", "concurrent",
          "time", "os", "subprocess", "select", "selectors"}


def test_the_core_imports_no_io():
    """The core takes time and randomness from its caller (h11's "bring your own I/O")."""
    for path in (ROOT / "orchestrator" / "embed" / "dispatch").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert name.split(".")[0] not in BANNED, f"{path.name} imports {name}"


# -- defects of the old client -------------------------------------------------------------------
def test_a_resolver_that_cannot_answer_keeps_the_names_last_addresses():
    """Defect: a temporary resolver failure (EAI_AGAIN, a timeout) emptied a dns:/// name until
    the next lookup an interval later, retiring every endpoint of it; only "no such name" and
    "no data" may empty it."""
    import socket

    from orchestrator.embed.triton.discovery import Discovery

    answers: list = [["10.0.0.1:8001", "10.0.0.2:8001"]]

    def resolver(host: str, port: int) -> list[str]:
        answer = answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    discovery = Discovery(["dns:///svc:8001"], interval=1.0, resolver=resolver)
    first = discovery.refresh(0.0, force=True)
    answers[0] = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert discovery.refresh(1.0) is None  # unchanged: no Listed event, nothing retired
    assert discovery.addresses() == first and "svc" in discovery.problems["dns:///svc:8001"]
    answers[0] = TimeoutError("resolver timed out")
    assert discovery.refresh(2.0) is None
    answers[0] = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert discovery.refresh(3.0) == []  # the name is gone: so are its endpoints
