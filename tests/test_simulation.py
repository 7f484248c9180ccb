"""The cluster simulator's laws on random small scenarios, under every kind of fault.

Each scenario runs the real dispatch core per simulated client; whatever the faults, every frame is
answered exactly once, rows sent are rows needed plus duplicates, no job is lost, and the same seed
gives the same result. No server or subprocess starts here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("simpy")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from orchestrator.embed.contract import MODELS  # noqa: E402
from simulation.scenario import parse  # noqa: E402
from simulation.world import World, simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@st.composite
def scenarios(draw) -> dict:
    """2-4 servers, 1-3 client groups, up to 3 faults; server 0 is never faulted, so a run can
    always finish (a run with no server at all fails by design, exit 3)."""
    n = draw(st.integers(2, 4))
    servers = [{"count": 1, "instances": draw(st.integers(1, 2)),
                "max_batch": draw(st.sampled_from([8, 16, 32])),
                "queue_delay_ms": draw(st.sampled_from([0, 1, 5])),
                "max_queue": draw(st.sampled_from([0, 0, 1, 2])),
                "request_ms": draw(st.sampled_from([5, 20, 50])),
                "batching": draw(st.booleans())} for _ in range(n)]
    clients = [{"count": draw(st.integers(1, 3)), "frames": draw(st.integers(1, 300)),
                "priority": draw(st.sampled_from(["high", "normal", "low"])),
                "start_s": draw(st.sampled_from([0, 0.5, 2])),
                "window": draw(st.sampled_from([16, 64, 128])),
                "batch": draw(st.sampled_from([4, 8, 16])),
                "lookahead": draw(st.integers(0, 2)),
                "frames_per_cpu_s": draw(st.sampled_from([0, 5000]))}
               for _ in range(draw(st.integers(1, 3)))]
    faults = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["kill", "freeze", "stuck", "restart", "add", "remove"]))
        fault = {"at_s": draw(st.sampled_from([0.05, 0.3, 1.0])), "kind": kind,
                 "server": draw(st.integers(1, n - 1))}
        if kind in ("kill", "freeze", "stuck") and draw(st.booleans()):
            fault["back_after_s"] = draw(st.sampled_from([0.5, 3.0]))
        faults.append(fault)
    return {"seed": draw(st.integers(0, 10**6)), "servers": servers, "clients": clients,
            "faults": faults, "discovery_interval_s": draw(st.sampled_from([0.5, 2.0])),
            "until_s": 3600,
            "policy": {"aperture": draw(st.sampled_from([0, 0, 1, 2])),
                       "discovery_jitter": draw(st.sampled_from([0, 0.5]))}}


def run_world(data: dict) -> World:
    world = World(parse(data))
    world.run()
    return world


@settings(max_examples=40, deadline=None, derandomize=True, phases=[Phase.generate],
          suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_frame_is_answered_once_and_no_job_is_lost(data):
    world = run_world(data)
    assert world.running == 0
    result = world.result(wall_s=1.0)
    for client in world.clients:
        assert client.failed is None
        assert client.end_s is not None and client.end_s >= client.start_s
        # every request of every window delivered exactly once
        assert client.delivered == dict.fromkeys(client.rows, 1)
        # each model's rows of the requests are exactly the frames of the job
        for m in MODELS:
            assert sum(r for rid, r in client.rows.items() if client.model_of[rid] == m) == \
                client.group.frames
    for m in MODELS:
        needed = result["rows_needed"][m]
        duplicates = sum(c.rows[rid] * (k - 1) for c in world.clients
                         for rid, k in c.sends.items() if c.model_of[rid] == m)
        assert result["rows_sent"][m] == needed + duplicates
        assert needed == sum(c.group.frames for c in world.clients)
        # servers computed every row at least once (more: hedges, answers lost to a fault)
        assert result["rows_executed"][m] >= needed


def test_a_model_stuck_for_good_behind_a_busy_hedge_still_finishes():
    """Found by the law above: a hedged copy answered "queue full" while the original stays stuck
    must be sent again (the core once left it waiting for ever)."""
    data = {"seed": 83372,
            "servers": [{"count": 1, "instances": 2, "max_batch": 8, "max_queue": 1, "request_ms": 5,
                         "batching": False},
                        {"count": 1, "instances": 2, "max_batch": 8, "request_ms": 50, "batching": False},
                        {"count": 1, "instances": 1, "max_batch": 8, "queue_delay_ms": 5, "max_queue": 2,
                         "request_ms": 5, "batching": False}],
            "clients": [{"count": 2, "frames": 176, "start_s": 0.5, "window": 16, "batch": 8,
                         "lookahead": 1}],
            "faults": [{"at_s": 0.3, "kind": "restart", "server": 1},
                       {"at_s": 0.3, "kind": "stuck", "server": 2}],
            "discovery_interval_s": 2.0, "until_s": 3600}
    world = run_world(data)
    assert world.running == 0


def test_the_same_seed_gives_the_same_result_and_another_seed_may_not():
    data = {"seed": 3,
            "servers": [{"count": 3, "max_batch": 16, "max_queue": 1, "request_ms": [10, 20, 40]}],
            "clients": [{"count": 4, "frames": 400, "window": 64, "batch": 8},
                        {"count": 1, "frames": 50, "priority": "high", "start_s": 0.5}],
            "faults": [{"at_s": 0.2, "kind": "kill", "server": 1, "back_after_s": 0.5},
                       {"at_s": 0.4, "kind": "freeze", "server": 2, "back_after_s": 3}]}

    def stable(result: dict) -> dict:
        return {k: v for k, v in result.items() if k not in ("wall_s", "events_per_s")}

    first = stable(simulate(parse(data)))
    assert first == stable(simulate(parse(data)))
    assert first["queue_full_answers"] > 0  # the backoff jitter (seeded) decided something
    runs = {json.dumps(stable(simulate(parse({**data, "seed": s}))), sort_keys=True)
            for s in range(4)}
    assert len(runs) > 1


def test_a_server_restarted_with_other_weights_is_refused_and_gets_no_more_requests():
    data = {"seed": 1, "servers": [{"count": 2, "max_batch": 16, "request_ms": 20}],
            "clients": [{"count": 2, "frames": 2000, "window": 256, "batch": 16}],
            "faults": [{"at_s": 0.3, "kind": "restart", "server": 1}]}
    world = run_world(data)
    assert all(c.failed is None for c in world.clients)
    for c in world.clients:
        assert c.core.endpoints["sim-1:8001"].state == "refused"
    calls = world.servers[1].calls_by_weights
    assert calls["v1"] > 0 and "v2" not in calls  # its new life with other weights: nothing


def test_a_server_added_through_discovery_takes_work():
    data = {"seed": 1, "servers": [{"count": 2, "max_batch": 16, "request_ms": 20}],
            "clients": [{"count": 2, "frames": 3000, "window": 256, "batch": 16}],
            "faults": [{"at_s": 1.0, "kind": "add", "server": 1}], "discovery_interval_s": 0.5}
    world = run_world(data)
    assert all(c.failed is None for c in world.clients)
    assert all(world.servers[1].executed_rows[m] > 0 for m in MODELS)


def test_a_run_with_every_server_killed_for_good_fails_as_unavailable():
    data = {"seed": 1, "servers": [{"count": 1, "request_ms": 20}],
            "clients": [{"count": 1, "frames": 5000}],
            "faults": [{"at_s": 0.5, "kind": "kill", "server": 0}]}
    world = run_world(data)
    (client,) = world.clients
    assert client.failed is not None and "no Triton endpoint answered" in client.failed
    assert world.result(1.0)["jobs"][0]["failed"] == client.failed


def test_an_aperture_hands_each_client_a_few_servers_and_spreads_the_clients():
    data = {"seed": 2, "servers": [{"count": 8, "max_batch": 16, "request_ms": 20}],
            "clients": [{"count": 12, "frames": 500, "window": 64, "batch": 16}],
            "policy": {"aperture": 2}}
    world = run_world(data)
    assert all(c.failed is None and c.end_s is not None for c in world.clients)
    for c in world.clients:
        assert len(c.core.endpoints) == 2
    # the clients' subsets differ: more than 2 servers did work
    assert sum(1 for s in world.servers if s.executed_rows["esm2"]) > 2


def test_an_unknown_policy_knob_is_named_with_exit_2(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("servers: [{request_ms: 10}]\nclients: [{frames: 10}]\npolicy: {choise: x}\n")
    proc = subprocess.run([sys.executable, "-m", "simulation", "run", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "policy" in proc.stderr and "choise" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# the CLI test above starts a subprocess of ours
test_an_unknown_policy_knob_is_named_with_exit_2 = pytest.mark.server(
    test_an_unknown_policy_knob_is_named_with_exit_2)


@pytest.mark.server
@pytest.mark.slow
def test_a_small_scenario_run_for_real_and_simulated_agrees_on_what_happened():
    """The same scenario (a server killed mid-run and restarted) both ways: every job finishes and
    every row is computed at least once in both. Times are compared loosely, only against what no
    run can beat: every request of a model needs request_ms on one of its instances, so neither
    makespan is below rows / (rows per request) x request_ms / instances (the tight comparison
    of times is bench/bench_simulation.py)."""
    from simulation.real import run_real

    data = {"seed": 1, "discovery_interval_s": 1.0,
            "servers": [{"count": 2, "instances": 2, "max_batch": 16, "request_ms": 50,
                         "batching": False}],
            "clients": [{"count": 2, "frames": 400, "window": 64, "batch": 16}],
            # a kill and a restart: a frozen tritonserver resumed after seconds can restart its
            # models' backend processes (missed health checks), lose their statistics and, under
            # load, answer a request in flight with another's rows, which stops the run (a
            # malformed answer is fatal); frozen servers are tested for real in test_tenancy.py
            "faults": [{"at_s": 0.5, "kind": "kill", "server": 1, "back_after_s": 2}]}
    real = run_real(parse(data))
    sim = simulate(parse(data))
    assert [j.get("failed") for j in real["jobs"]] == [None, None]
    assert [j.get("failed") for j in sim["jobs"]] == [None, None]
    frames = sum(j["frames"] for j in real["jobs"])
    requests = sum(-(-j["frames"] // 16) for j in real["jobs"])
    bound = requests * 0.050 / (2 * 2)
    for result in (real, sim):
        assert result["rows_executed"]["esm2"] >= result["rows_needed"]["esm2"]
        assert result["makespan_s"] >= bound
    assert real["rows_needed"]["esm2"] == frames


def test_jains_index_is_one_for_equal_shares_and_one_over_n_for_one_taker():
    from simulation.study import jain

    assert jain([3.0, 3.0, 3.0]) == pytest.approx(1.0)
    assert jain([5.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)


def test_the_study_scenario_has_its_mix_faults_and_policies_at_a_small_scale():
    from simulation.study import POLICIES, figures, idle_small_seconds, study_scenario

    data = study_scenario(servers=10, clients=40, duration_s=200, scale=0.01)
    s = parse(data)
    assert len(s.servers) == 10 and s.client_count() == 40
    assert sum(g.priority == "high" for g in s.clients) == 4
    assert {f.kind for f in s.faults} == {"kill", "freeze", "add"}
    for name, knobs in POLICIES.items():
        world = World(parse({**data, "policy": knobs}))
        world.run()
        result = world.result(1.0)
        series = {"requests_sent": [world.sends_bins.get(b, 0) for b in range(int(world.env.now) + 1)]}
        fig = figures(data, result, series, idle_small_seconds(data))
        assert fig["jobs_done"] == "40/40", name
        assert fig["small_p99_vs_idle"] >= 1.0 - 1e-9
