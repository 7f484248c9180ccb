"""The shared-cluster study: many H200-like servers, many users' runs, faults, one policy per run.

`study_scenario` builds the scenario (as the YAML would hold it): 90% bulk samples (normal or low
priority), 10% small high-priority jobs, arriving at random so the offered work is `load` of the
cluster's capacity over `duration_s`; 10% of the servers killed at once and back later, 5% frozen,
10% added mid-run. `python -m simulation study` runs it once per policy and prints one table.
"""

from __future__ import annotations

import random
from typing import Any

from simulation.servers import H200_BATCH_OVERHEAD_S, H200_TOKENS_PER_S

GPU_BATCH = 256  # configs/gpu.pbtxt max_batch_size of ESM-2
TOKENS_PER_FRAME = 52  # 150 bp reads: ~50 amino acids and the two special tokens


def frames_per_server_s() -> float:
    """One H200 server's frames/s through ESM-2 (the slower model) in full batches."""
    batch_s = H200_BATCH_OVERHEAD_S + GPU_BATCH * TOKENS_PER_FRAME / H200_TOKENS_PER_S["esm2"]
    return GPU_BATCH / batch_s


def study_scenario(servers: int = 100, clients: int = 1000, duration_s: float = 3600.0,
                   load: float = 0.9, seed: int = 1, scale: float = 1.0,
                   policy: dict[str, Any] | None = None) -> dict[str, Any]:
    """The study's scenario; `scale` shrinks every job's frames (and so the work) for quick runs."""
    rng = random.Random(seed)
    added = max(1, servers // 10)
    base = servers - added
    jobs = []
    for n in range(clients):
        small = n % 10 == 0
        frames = rng.uniform(1e3, 1e4) if small else rng.uniform(1e5, 1e6)
        jobs.append({"frames": max(1, int(frames * scale)),
                     "priority": "high" if small else rng.choice(["normal", "low"]),
                     "user": f"{'small' if small else 'bulk'}-{n % 50}",
                     "window": 4096, "batch": GPU_BATCH, "tokens_per_frame": TOKENS_PER_FRAME})
    # arrivals: uniform over the part of the run that keeps the offered load at `load`
    work_s = sum(j["frames"] for j in jobs) / (frames_per_server_s() * servers)
    spread = min(duration_s, work_s / load)
    for j in jobs:
        j["start_s"] = round(rng.uniform(0, spread * 0.9), 3)
    killed = list(range(max(1, servers // 10)))
    frozen = list(range(len(killed), len(killed) + max(1, servers // 20)))
    return {
        "seed": seed,
        "servers": [{"count": servers, "instances": 1, "max_batch": GPU_BATCH,
                     "queue_delay_ms": 2, "max_queue": 64, "gpu": "h200", "network_ms": 0.5}],
        "clients": [{"count": 1, **j} for j in jobs],
        "faults": [{"at_s": round(spread * 0.3, 1), "kind": "kill", "server": killed,
                    "back_after_s": round(spread * 0.2, 1)},
                   {"at_s": round(spread * 0.5, 1), "kind": "freeze", "server": frozen},
                   {"at_s": round(spread * 0.4, 1), "kind": "add",
                    "server": list(range(base, servers))}],
        "discovery_interval_s": 30.0,
        "until_s": duration_s,
        "policy": policy or {},
    }


# The policies compared: today's (the core's defaults), the core's other knobs (orchestrator.
# embed.dispatch.policy) and the driver's (simulation.world.DRIVER_KNOBS).
POLICIES: dict[str, dict[str, Any]] = {
    "today": {},
    "jittered discovery": {"discovery_jitter": 0.5},
    "aperture 8": {"aperture": 8},
    "aperture 8 + jitter": {"aperture": 8, "discovery_jitter": 0.5},
    "two choices": {"choice": "two_choices"},
    "slow start 10 s": {"slow_start_s": 10.0},
    "retry budget 10%": {"retry_budget_ratio": 0.1, "retry_budget_min": 10.0},
    "aperture 8 + two choices": {"aperture": 8, "choice": "two_choices"},
}
# Seconds before and after the mass kill over which the steady and the peak request rate are read.
RATE_WINDOW_S = 30


def jain(values: list[float]) -> float:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    if not values:
        return 1.0
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def figures(data: dict[str, Any], result: dict[str, Any], series: dict[str, Any],
            idle_small_s: float) -> dict[str, Any]:
    """The study's goals read from one run."""
    jobs = [j for j in result["jobs"] if j["end_s"] is not None]
    small = [j["end_s"] - j["start_s"] for j in jobs if j["priority"] == "high"]
    fairness = {}
    for prio in ("normal", "low"):
        rates = [j["frames"] / (j["end_s"] - j["start_s"]) for j in jobs
                 if j["priority"] == prio and j["end_s"] > j["start_s"]]
        fairness[prio] = round(jain(rates), 3)
    kill = next(f for f in data["faults"] if f["kind"] == "kill")["at_s"]
    sent = series["requests_sent"]
    k = int(kill)
    steady = sorted(sent[max(0, k - RATE_WINDOW_S):k]) or [0]
    steady_rate = steady[len(steady) // 2]
    peak = max(sent[k:k + RATE_WINDOW_S] or [0])
    return {
        "makespan_s": result["makespan_s"],
        "jobs_done": f"{len(jobs)}/{len(result['jobs'])}",
        "busy_fraction": result["busy_fraction"],
        "small_p50_s": round(percentile(small, 50), 2),
        "small_p99_s": round(percentile(small, 99), 2),
        "small_p99_vs_idle": round(percentile(small, 99) / idle_small_s, 2),
        "duplicate_row_fraction": result["duplicate_row_fraction"],
        "queue_full_answers": result["queue_full_answers"],
        "peak_vs_steady_rate_after_kill": round(peak / steady_rate, 2) if steady_rate else None,
        "jain_bulk": fairness,
        "wall_s": result["wall_s"],
        "core_events": result["core_events"],
        "events_per_s": result["events_per_s"],
    }


def idle_small_seconds(data: dict[str, Any]) -> float:
    """A small job alone on the idle cluster (the largest of the study's small jobs)."""
    from simulation.scenario import parse
    from simulation.world import simulate

    small = max((c for c in data["clients"] if c["priority"] == "high"), key=lambda c: c["frames"])
    alone = {**data, "clients": [{**small, "start_s": 0}], "faults": [], "until_s": None}
    job = simulate(parse(alone))["jobs"][0]
    return job["end_s"] - job["start_s"]


def run_study(args: Any) -> dict[str, Any]:
    """`python -m simulation study`: every policy on the same scenario, figures side by side."""
    import json
    import sys
    import tempfile
    from pathlib import Path

    from orchestrator.errors import InputError
    from simulation.scenario import parse
    from simulation.world import simulate

    names = args.policies or list(POLICIES)
    for name in names:
        if name not in POLICIES:
            raise InputError(f"--policies: {name!r} is not one of {', '.join(POLICIES)}")
    base = study_scenario(args.servers, args.clients, args.duration, scale=args.scale)
    idle = idle_small_seconds(base)
    out: dict[str, Any] = {"servers": args.servers, "clients": args.clients,
                           "duration_s": args.duration, "scale": args.scale,
                           "idle_small_job_s": round(idle, 3), "policies": {}, "series": {}}
    for name in names:
        data = {**base, "policy": POLICIES[name]}
        with tempfile.TemporaryDirectory() as tmp:
            series_path = Path(tmp) / "series.json"
            result = simulate(parse(data), series_to=str(series_path))
            series = json.loads(series_path.read_text())
        fig = out["policies"][name] = figures(data, result, series, idle)
        out["series"][name] = {"busy_instances": series["busy_instances"],
                               "small_s": [j["end_s"] - j["start_s"] for j in result["jobs"]
                                           if j["end_s"] is not None and j["priority"] == "high"],
                               "bulk_s": [j["end_s"] - j["start_s"] for j in result["jobs"]
                                          if j["end_s"] is not None and j["priority"] != "high"]}
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in fig.items()), file=sys.stderr,
              flush=True)
    print(json.dumps(out["policies"], indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out))
    return out


def plot_study(out: dict[str, Any], folder: str) -> list[str]:
    """PNG figures of a study: busy servers over time, completion-time distributions per kind."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = Path(folder)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for name, s in out["series"].items():
        busy = s["busy_instances"]
        ax.plot(range(len(busy)), [b / (2 * out["servers"]) for b in busy], label=name, lw=0.8)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("busy fraction of all servers")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(target / "scale-utilization.png", dpi=110)
    written.append(str(target / "scale-utilization.png"))
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, title in ((axes[0], "small_s", "small jobs (high priority)"),
                           (axes[1], "bulk_s", "bulk jobs (normal and low)")):
        for name, s in out["series"].items():
            values = sorted(s[key])
            if values:
                ax.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=name,
                        lw=0.9)
        ax.set_xscale("log")
        ax.set_xlabel("completion time (s)")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("fraction of jobs")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(target / "scale-completion.png", dpi=110)
    written.append(str(target / "scale-completion.png"))
    plt.close(fig)
    return written
