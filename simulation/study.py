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
    killed = list(range(0, base // 10))
    frozen = list(range(base // 10, base // 10 + max(1, servers // 20)))
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
