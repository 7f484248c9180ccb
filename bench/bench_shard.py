"""Benchmark of one sample split over 1, 2 and 4 client processes (`predict --shard K/N`), merged.

Two toy Triton servers take a fixed time per request whatever its size (like a GPU pass; no
dynamic batching, several instances each), enough capacity that the client is the limit. The
sample is ~20,000 kept frames. For N = 1 (a plain predict), 2 and 4 shards run at the same time,
the figures are the wall time from the first start to the last exit and the client CPU of all
of them together (the children's rusage); then `orchestrator merge` joins the shards (timed in
process, without the report, which does not depend on sharding) and its files are compared with
the unsharded run's byte for byte. Goal: >= 1.7x at 2 shards on the 2-core machine.
Run alone: `.venv/bin/python bench/bench_shard.py [--delay S] [--mbp N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_predict import make_input  # noqa: E402
from predict_fixtures import outputs_of, write_toy_classifier, write_toy_repository  # noqa: E402

from orchestrator.embed.triton.server import TritonServer  # noqa: E402
from orchestrator.write.merge import run_merge  # noqa: E402

INSTANCES = 4
BATCH = 512


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _servers_cpu(pids: list[int]) -> float:
    """CPU seconds of the toy servers' process groups (tritonserver and its Python-backend stubs):
    they run on the same 2 cores as the clients here, unlike GPU servers on other nodes."""
    total = 0.0
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) in pids:
                t = proc.cpu_times()
                total += t.user + t.system
        except (psutil.Error, ProcessLookupError):
            continue
    return total


def run_shards(n: int, base: list[str], root: Path,
               server_pids: list[int]) -> tuple[dict, list[Path]]:
    """N predict processes at once (N = 1: unsharded); wall, summed client CPU, servers' CPU."""
    dirs = [root / f"n{n}" / f"shard{k}" for k in range(1, n + 1)]
    cpu0 = _children_cpu()
    server0 = _servers_cpu(server_pids)
    t0 = time.perf_counter()
    procs = [subprocess.Popen([*base, "-o", str(d), *(["--shard", f"{k}/{n}"] if n > 1 else [])],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for k, d in enumerate(dirs, 1)]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"predict failed ({p.returncode}): {err[-2000:]}")
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0
    server_cpu = _servers_cpu(server_pids) - server0
    frames = sum(json.loads((d / "run.json").read_text())["counts"]["frames"] for d in dirs)
    return {"processes": n, "frames": frames, "wall_s": round(wall, 2),
            "client_cpu_s": round(cpu, 2), "server_cpu_s": round(server_cpu, 2),
            "frames_per_s": round(frames / wall, 1)}, dirs


def measure(delay: float, fasta: Path, clf: Path) -> dict:
    with tempfile.TemporaryDirectory(dir=DATA) as tmp, ExitStack() as stack:
        urls, pids = [], []
        for i in range(2):
            repo = write_toy_repository(Path(tmp) / f"repo{i}", delay=delay, instances=INSTANCES,
                                        max_batch_size=BATCH, dynamic_batching=False)
            server = stack.enter_context(TritonServer(repo))
            urls.append(server.grpc_url)
            pids.append(server.process.pid)  # the group leader: serve starts it in its own session
        print(f"bench_shard: 2 toy servers up ({INSTANCES} instances per model, {delay} s per "
              "request)", flush=True)
        base = [sys.executable, "-m", "orchestrator", "predict", str(fasta), "--chunk-size", "500",
                "--classifier", str(clf), "--server", ",".join(urls), "--no-report", "-q"]
        runs = {}
        reference = None
        for n in (1, 2, 4):
            figures, dirs = run_shards(n, base, Path(tmp), pids)
            if n == 1:
                reference = outputs_of(dirs[0])
            else:
                merged = Path(tmp) / f"n{n}" / "merged"
                t0 = time.perf_counter()
                run_merge([str(d) for d in dirs], str(merged), report=False)
                merge_s = time.perf_counter() - t0
                figures["merge_s"] = round(merge_s, 3)
                figures["merge_s_per_million_frames"] = round(merge_s / figures["frames"] * 1e6, 2)
                figures["identical_to_unsharded"] = outputs_of(merged) == reference
            runs[f"{n} processes"] = figures
            print(f"  {n} processes: {figures}", flush=True)
    one = runs["1 processes"]["wall_s"]
    return {"delay_s_per_request": delay, "servers": 2, "instances_per_model": INSTANCES,
            "request_rows": BATCH, "runs": runs,
            "speedup": {f"{n} processes": round(one / runs[f"{n} processes"]["wall_s"], 2)
                        for n in (2, 4)}}


def summary_lines(f: dict) -> list[str]:
    lines = []
    for n in (1, 2, 4):
        r = f["runs"][f"{n} processes"]
        extra = ""
        if n > 1:
            extra = (f", {f['speedup'][f'{n} processes']}x{'   (goal >= 1.7x)' if n == 2 else ''}; "
                     f"merge {r['merge_s_per_million_frames']} s per million frames, identical: "
                     f"{r['identical_to_unsharded']}")
        lines.append(f"{n} client process{'es' if n > 1 else ''}: {r['frames']} frames in "
                     f"{r['wall_s']} s wall, {r['client_cpu_s']} client CPU-s, "
                     f"{r['server_cpu_s']} server CPU-s on the same cores{extra}")
    return lines


def main(delay: float = 0.01, mbp: float = 10.0) -> dict:
    DATA.mkdir(parents=True, exist_ok=True)
    fasta = make_input(DATA / f"coding_{mbp:g}mbp.fa", mbp, 1.0, seed=3)
    clf = write_toy_classifier(DATA / "toy_classifier.safetensors")
    figures = measure(delay, fasta, clf)
    print(json.dumps(figures, indent=2))
    print("\nsummary:")
    print("\n".join(summary_lines(figures)))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.01,
                        help="seconds per request (default 0.01)")
    parser.add_argument("--mbp", type=float, default=10.0,
                        help="input size in Mbp (default 10: ~20,000 kept frames)")
    args = parser.parse_args()
    main(args.delay, args.mbp)
