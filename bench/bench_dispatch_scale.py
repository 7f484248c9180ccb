"""The dispatch core's cost per event as the cluster grows, inside the simulator.

The study scenario (`simulation.study`, jobs at 1% of their size, 300 client runs) with 100 and
400 servers: CPU seconds spent in `Dispatcher.handle` and `wake_at`, and in the whole simulation,
printed as events per CPU-second side by side. A core whose per-event work scanned every endpoint
would slow down in proportion to the servers' count.
Run alone: `.venv/bin/python bench/bench_dispatch_scale.py`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from orchestrator.embed.dispatch import Dispatcher  # noqa: E402
from simulation.scenario import parse  # noqa: E402
from simulation.study import study_scenario  # noqa: E402
from simulation.world import simulate  # noqa: E402

CLIENTS = 300
SCALE = 0.01


def measure(servers: int) -> dict:
    """Events and CPU seconds of one simulated study, the core's share timed around each call."""
    spent = {"core_s": 0.0, "events": 0}
    handle, wake_at = Dispatcher.handle, Dispatcher.wake_at

    def timed_handle(self, now, event):
        start = time.process_time()
        try:
            return handle(self, now, event)
        finally:
            spent["core_s"] += time.process_time() - start
            spent["events"] += 1

    def timed_wake_at(self):
        start = time.process_time()
        try:
            return wake_at(self)
        finally:
            spent["core_s"] += time.process_time() - start

    data = {**study_scenario(servers, CLIENTS, 600.0, scale=SCALE), "policy": {}}
    Dispatcher.handle, Dispatcher.wake_at = timed_handle, timed_wake_at
    try:
        start = time.process_time()
        simulate(parse(data))
        total = time.process_time() - start
    finally:
        Dispatcher.handle, Dispatcher.wake_at = handle, wake_at
    events = spent["events"]
    return {"servers": servers, "events": events,
            "core_events_per_cpu_s": round(events / spent["core_s"]),
            "run_events_per_cpu_s": round(events / total)}


def main() -> dict:
    rows = [measure(n) for n in (100, 400)]
    for r in rows:
        print(f"{r['servers']:>4} servers, {CLIENTS} runs: {r['events']:,} core events; "
              f"{r['core_events_per_cpu_s']:,} per CPU-second of the core, "
              f"{r['run_events_per_cpu_s']:,} per CPU-second of the whole simulation", flush=True)
    return {"rows": rows}


if __name__ == "__main__":
    main()
