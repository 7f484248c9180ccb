"""Validation of the cluster simulator: the benches' toy-cluster scenarios simulated and run for real.

Each scenario runs twice in one invocation: `python -m simulation`'s simulator and its `--real`
harness (real tritonservers with the toy models, real `predict` processes, faults injected for
real). Printed side by side: makespan and each job's end time, simulated vs real, and their ratio;
goal within +-15% each. The client's costs are measured first, for real (`client_costs`), and given
to the simulated clients as `startup_s` and `frames_per_cpu_s`, then the servers' cost per
execution beyond their sleep (`server_overhead_ms`), given to the simulated servers as
`overhead_ms`: they are properties of this machine, not of the scheduling.
Run alone: `.venv/bin/python bench/bench_simulation.py [--only NAME ...] [--json FILE]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulation.real import run_real  # noqa: E402
from simulation.scenario import parse  # noqa: E402
from simulation.world import simulate  # noqa: E402

GOAL = 0.15
BULK = {"window": 512, "batch": 64}


def toy(count: int, request_ms: float, instances: int = 4, batching: bool = False, **extra) -> dict:
    return {"count": count, "instances": instances, "max_batch": 64, "request_ms": request_ms,
            "batching": batching, **extra}


SCENARIOS = {
    # bench_cluster: 1/2/4 servers of 4 instances, no dynamic batching, requests of 64 frames
    **{f"{n} server{'s' * (n > 1)}, {ms / 1000:g} s": {
        "servers": [toy(n, ms)], "clients": [{"frames": 8192 * n, **BULK}]}
       for ms in (100, 200) for n in (1, 2, 4)},
    # bench_tenancy: a small high-priority job behind two bulk runs, one server, dynamic batching
    "high priority behind bulk": {
        "servers": [toy(1, 100, instances=1, batching=True, queue_delay_ms=1)],
        "clients": [{"count": 2, "frames": 3072, **BULK},
                    {"frames": 128, "priority": "high", "start_s": 3, **BULK}]},
    # bench_tenancy: one of two servers frozen (SIGSTOP) mid-run
    "frozen server": {
        "servers": [toy(2, 100)],
        "clients": [{"frames": 12288, **BULK}],
        "faults": [{"at_s": 4, "kind": "freeze", "server": 1}]},
    # bench_discovery: a server added to the endpoint list mid-run
    "server added": {
        "servers": [toy(2, 100)],
        "clients": [{"frames": 12288, **BULK}],
        "faults": [{"at_s": 4, "kind": "add", "server": 1}]},
    # the fault matrix: a server killed mid-run, back later
    "server killed": {
        "servers": [toy(2, 100)],
        "clients": [{"frames": 12288, **BULK}],
        "faults": [{"at_s": 4, "kind": "kill", "server": 1, "back_after_s": 4}]},
}


def scenario(data: dict, client: dict) -> dict:
    clients = [{**c, **client} for c in data["clients"]]
    return {"seed": 1, "discovery_interval_s": 1.0, **data, "clients": clients}


def job_seconds(data: dict) -> tuple[float, int]:
    job = run_real(parse(scenario(data, {})))["jobs"][0]
    return job["end_s"] - job["start_s"], job["frames"]


def client_costs() -> dict:
    """This machine's client costs, measured for real: a one-frame job on an idle toy server
    (process start, imports, classifier, server checks, outputs), and a job on a server with
    capacity to spare (1 ms per request, 4 instances), whose rest is the client's own work."""
    startup, _ = job_seconds({"servers": [toy(1, 1)], "clients": [{"frames": 1}]})
    seconds, frames = job_seconds({"servers": [toy(1, 1)],
                                   "clients": [{"frames": 8192, **BULK}]})
    return {"startup_s": round(startup, 3),
            "frames_per_cpu_s": round(frames / max(seconds - startup, 1e-3), 1)}


def simulated_like(data: dict, real: dict, costs: dict, overhead_ms: float) -> dict:
    """`data` simulated with this machine's costs and the real run's frame counts (generated
    records round to whole frames)."""
    sim_data = scenario(data, costs)
    frames = iter(j["frames"] for j in real["jobs"])
    sim_data["clients"] = [{**c, "count": 1, "frames": next(frames)}
                           for c in sim_data["clients"] for _ in range(c.get("count", 1))]
    sim_data["servers"] = [{**s, "overhead_ms": overhead_ms} for s in sim_data["servers"]]
    return simulate(parse(sim_data))


def server_overhead_ms(costs: dict) -> float:
    """A toy server's cost per execution beyond its sleep on this machine (gRPC, the Python
    backend's hand-over, CPU shared with the client), measured: a job on one server of one
    instance per model with 20 ms requests, real against simulated without overhead, the
    difference spread over each model's executions (the models run side by side)."""
    data = {"servers": [toy(1, 20, instances=1)], "clients": [{"frames": 4096, **BULK}]}
    real = run_real(parse(scenario(data, {})))
    sim = simulated_like(data, real, costs, 0.0)
    executions = -(-real["jobs"][0]["frames"] // BULK["batch"])
    return round(max(0.0, real["makespan_s"] - sim["makespan_s"]) * 1000 / executions, 2)


def compare(data: dict, costs: dict, overhead_ms: float) -> dict:
    real = run_real(parse(scenario(data, {})))
    sim = simulated_like(data, real, costs, overhead_ms)
    rows = [("makespan", sim["makespan_s"], real["makespan_s"])]
    rows += [(f"job {j['client']} ({j['priority']}, {j['frames']} frames) end", s["end_s"], j["end_s"])
             for s, j in zip(sim["jobs"], real["jobs"], strict=True)]
    out = {"rows": [{"what": w, "simulated_s": round(s, 2), "real_s": round(r, 2),
                     "ratio": round(s / r, 3)} for w, s, r in rows],
           "busy_fraction": {"simulated": sim["busy_fraction"], "real": real["busy_fraction"]}}
    out["within_goal"] = all(abs(r["ratio"] - 1) <= GOAL for r in out["rows"])
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="scenario names to run (default: all)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv if argv is not None else [])
    costs = client_costs()
    overhead_ms = server_overhead_ms(costs)
    print(f"client costs measured for real: {costs['startup_s']:.2f} s fixed (one-frame job), "
          f"{costs['frames_per_cpu_s']:,.0f} frames/s of its own work; servers "
          f"{overhead_ms:.1f} ms per execution beyond the sleep; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)
    figures: dict = {"client_costs": costs, "server_overhead_ms": overhead_ms, "goal": f"+-{GOAL:.0%}", "scenarios": {},
                     "load_average": os.getloadavg()[0]}
    for name, data in SCENARIOS.items():
        if args.only and name not in args.only:
            continue
        fig = figures["scenarios"][name] = compare(data, costs, overhead_ms)
        print(f"\n{name}  (busy fraction simulated {fig['busy_fraction']['simulated']:.2f}, "
              f"real {fig['busy_fraction']['real']:.2f})", flush=True)
        for r in fig["rows"]:
            flag = "" if abs(r["ratio"] - 1) <= GOAL else "  MISS"
            print(f"  {r['what']:<44} simulated {r['simulated_s']:7.2f} s   real {r['real_s']:7.2f} s"
                  f"   ratio {r['ratio']:.2f}{flag}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
