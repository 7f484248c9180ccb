"""Benchmark of one `predict` run over many Triton servers, and of the window look-ahead.

The servers run toy models that take a fixed time per request whatever its size (like a GPU
pass; no dynamic batching, so one request = one execute), with several instances each, so the
2-core client is not competing with real model arithmetic. Measured side by side in one run:
- throughput (frames/s of the window loop, from run.json) with 1, 2 and 4 such servers, and the
  ratio to N x the one-server figure (goal >= 0.9 for N = 2, >= 0.8 for N = 4), with the client's
  CPU per frame beside it;
- server busy fraction per endpoint: Triton's summed compute time of each model over the loop's
  wall time and its instance count, with the default look-ahead and with `--lookahead 0` (one
  window at a time, the old barrier), one server of 4 instances (goal >= 0.9 with look-ahead).
Two request times are measured: 0.2 s leaves the 2 cores room; at 0.1 s the four servers' request
handling (gRPC, Python backend) and the client together fill both cores at 4 servers, so that
ratio shows the machine's limit rather than the client's scheduling.
Outputs of every run are compared byte for byte with the one-server run.
- the dispatch core's decisions per second (events handled per CPU-second) on a synthetic event
  stream of 100 endpoints: the rate a simulator driving it can reach;
- with `--baseline CHECKOUT` (another checkout of this project, e.g. the one before a change of
  the client): client CPU per 1000 frames of that checkout's `predict` and of this one, runs
  alternating on the same two servers (goal: no worse than 3%).
Run alone: `.venv/bin/python bench/bench_cluster.py [--delay S ...] [--mbp N] [--window F]
[--baseline CHECKOUT]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_predict import make_input  # noqa: E402
from predict_fixtures import outputs_of, write_toy_classifier, write_toy_repository  # noqa: E402

from orchestrator.embed.contract import MODELS  # noqa: E402
from orchestrator.embed.triton.server import TritonServer  # noqa: E402

INSTANCES = 4
BATCH = 64


def compute_seconds(url: str) -> dict[str, float]:
    """Triton's summed compute_infer time per model since the server started."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        out = {}
        for model in MODELS:
            stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]
            out[model] = int(stats["inference_stats"]["compute_infer"].get("ns", 0) or 0) / 1e9
        return out
    finally:
        client.close()


def run(servers: list[TritonServer], fasta: Path, clf: Path, outdir: Path, window: int,
        lookahead: int | None = None, checkout: Path = ROOT) -> dict:
    urls = [s.grpc_url for s in servers]
    before = {u: compute_seconds(u) for u in urls}
    cmd = [sys.executable, "-m", "orchestrator", "predict", str(fasta), "-o", str(outdir),
           "--chunk-size", "500", "--classifier", str(clf), "--server", ",".join(urls),
           "--window", str(window), "--restart", "-q"]
    if lookahead is not None:
        cmd += ["--lookahead", str(lookahead)]
    t0 = time.perf_counter()
    # `python -m` imports the package of the working directory: this checkout's, or a baseline's
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"predict failed ({proc.returncode}): {proc.stderr[-2000:]}")
    rec = json.loads((outdir / "run.json").read_text())
    t = rec["timings"]
    loop_s = t["preprocess"] + t["embed"] + t["classify"] + t["write"]
    frames = rec["counts"]["frames"]
    busy = {}
    for u in urls:
        after = compute_seconds(u)
        busy[u] = {m: round((after[m] - before[u][m]) / (loop_s * INSTANCES), 3) for m in MODELS}
    return {
        "servers": len(urls),
        "lookahead": rec["parameters"]["lookahead"],
        "frames": frames,
        "loop_s": round(loop_s, 2),
        "process_wall_s": round(wall, 2),
        "frames_per_s": round(frames / loop_s, 1),
        "client_cpu_s": rec["throughput"]["client_cpu_seconds"],
        "frames_per_client_cpu_s": rec["throughput"]["frames_per_client_cpu_s"],
        "client_seconds": {k: t[k] for k in ("preprocess", "embed", "classify", "write")},
        "busy_fraction": busy,
        "rows_per_endpoint": [e["rows"] for e in rec["endpoints"]],
    }


def measure(delay: float, fasta: Path, clf: Path, window: int) -> dict:
    """1, 2 and 4 servers (and one server without look-ahead) at `delay` seconds per request."""
    figures: dict = {"delay_s_per_request": delay, "instances_per_model": INSTANCES,
                     "request_rows": BATCH, "window": window}
    with tempfile.TemporaryDirectory(dir=DATA) as tmp, ExitStack() as stack:
        servers = []
        for i in range(4):
            repo = write_toy_repository(Path(tmp) / f"repo{i}", delay=delay, instances=INSTANCES,
                                        max_batch_size=BATCH, dynamic_batching=False)
            servers.append(stack.enter_context(TritonServer(repo)))
        print(f"bench_cluster: 4 toy servers up ({INSTANCES} instances per model, {delay} s per "
              "request)", flush=True)
        runs = {}
        for label, subset, lookahead in (("1 server, lookahead 0", servers[:1], 0),
                                         ("1 server", servers[:1], None),
                                         ("2 servers", servers[:2], None),
                                         ("4 servers", servers[:4], None)):
            outdir = Path(tmp) / label.replace(" ", "_").replace(",", "")
            runs[label] = run(subset, fasta, clf, outdir, window, lookahead)
            runs[label]["outputs"] = outputs_of(outdir)
            print(f"  {label}: {runs[label]['frames_per_s']} frames/s", flush=True)
    reference = runs["1 server"]["outputs"]
    for r in runs.values():
        r["identical_to_one_server"] = r.pop("outputs") == reference
    one = runs["1 server"]["frames_per_s"]
    figures["runs"] = runs
    figures["scaling"] = {f"{n} servers": round(runs[f"{n} servers"]["frames_per_s"] / (n * one), 3)
                          for n in (2, 4)}
    figures["busy_one_server"] = {
        "lookahead": next(iter(runs["1 server"]["busy_fraction"].values())),
        "lookahead_0": next(iter(runs["1 server, lookahead 0"]["busy_fraction"].values())),
    }
    return figures


def core_decisions_per_s(endpoints: int = 100, events: int = 200_000, seed: int = 1) -> dict:
    """Events per CPU-second the dispatch core handles: windows of 64 requests over `endpoints`
    endpoints of capacity 8, answered oldest first, 5% of answers "queue full", a tick per 100."""
    import random

    from orchestrator.embed.dispatch import (
        BUSY,
        OK,
        Dispatcher,
        ModelSettings,
        Policy,
        Reply,
        Request,
        RunSetup,
        Send,
        Start,
        StartEndpoint,
        Submit,
        Tick,
    )

    def settings() -> dict:
        return {m: ModelSettings(m, "1", 4, 64, 4, 8, "w") for m in MODELS}

    rng = random.Random(seed)
    core = Dispatcher(RunSetup(settings(), {m: "1" for m in MODELS}, {m: 64 for m in MODELS}),
                      Policy(), random.Random(seed))
    now = 0.0
    core.handle(now, Start(tuple(StartEndpoint(f"10.0.{i // 250}.{i % 250}:8001", settings())
                                 for i in range(endpoints))))
    outstanding: list[int] = []
    next_id = window = handled = 0
    t0 = time.process_time()
    while handled < events:
        now += 0.0005
        if len(outstanding) < endpoints * 4:
            event = Submit(window, tuple(Request(next_id + i, MODELS[i % 2], 64) for i in range(64)))
            next_id += 64
            window += 1
        elif handled % 100 == 0:
            event = Tick()
        else:
            event = Reply(outstanding.pop(0), BUSY if rng.random() < 0.05 else OK)
        outstanding.extend(a.token for a in core.handle(now, event) if isinstance(a, Send))
        handled += 1
    cpu = time.process_time() - t0
    return {"endpoints": endpoints, "events": handled, "cpu_s": round(cpu, 3),
            "events_per_cpu_s": round(handled / cpu)}


def client_cpu(baseline: Path, delay: float, fasta: Path, clf: Path, window: int,
               rounds: int = 2) -> dict:
    """Client CPU per 1000 frames of `baseline`'s predict and of this checkout's, alternating on
    the same two servers."""
    cpu: dict[str, list[float]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory(dir=DATA) as tmp, ExitStack() as stack:
        servers = [stack.enter_context(TritonServer(write_toy_repository(
            Path(tmp) / f"repo{i}", delay=delay, instances=INSTANCES, max_batch_size=BATCH,
            dynamic_batching=False))) for i in range(2)]
        for r in range(rounds):
            for label, checkout in (("baseline", baseline), ("this", ROOT)):
                fig = run(servers, fasta, clf, Path(tmp) / f"{label}{r}", window, checkout=checkout)
                cpu[label].append(fig["client_cpu_s"] / fig["frames"] * 1000)
                print(f"  {label}: {cpu[label][-1]:.3f} client CPU-s per 1000 frames", flush=True)
    best = {k: round(min(v), 4) for k, v in cpu.items()}
    return {"baseline": str(baseline), "cpu_s_per_1000_frames": best,
            "all_rounds": {k: [round(x, 4) for x in v] for k, v in cpu.items()},
            "ratio": round(best["this"] / best["baseline"], 3)}


def summary_lines(f: dict) -> list[str]:
    one = f["runs"]["1 server"]["frames_per_s"]
    lines = []
    for n, goal in ((2, 0.9), (4, 0.8)):
        r = f["runs"][f"{n} servers"]
        lines.append(f"{f['delay_s_per_request']} s/request, {n} servers: {r['frames_per_s']} "
                     f"frames/s = {f['scaling'][f'{n} servers']} x ({n} x 1 server = {n * one:.0f})"
                     f"   (goal >= {goal}); client {r['frames_per_client_cpu_s']} frames per CPU-s")
    b = f["busy_one_server"]
    lines.append(f"{f['delay_s_per_request']} s/request, busy fraction, 1 server x {INSTANCES} "
                 f"instances: look-ahead {b['lookahead']}, one window at a time "
                 f"{b['lookahead_0']}   (goal >= 0.9 with look-ahead)")
    same = all(r["identical_to_one_server"] for r in f["runs"].values())
    lines.append(f"{f['delay_s_per_request']} s/request, outputs identical to the one-server "
                 f"run: {same}")
    return lines


def main(delays: tuple[float, ...] = (0.2, 0.1), mbp: float = 8.0, window: int = 2048,
         baseline: Path | None = None) -> dict:
    """Each delay measured in turn; 0.1 s loads the 2 cores more (more requests per second)."""
    DATA.mkdir(parents=True, exist_ok=True)
    fasta = make_input(DATA / f"coding_{mbp:g}mbp.fa", mbp, 1.0, seed=3)
    clf = write_toy_classifier(DATA / "toy_classifier.safetensors")
    figures: dict = {f"delay_{d:g}s": measure(d, fasta, clf, window) for d in delays}
    core = core_decisions_per_s()
    if baseline is not None:
        figures["client_cpu"] = client_cpu(baseline, delays[0], fasta, clf, window)
    print(json.dumps({**figures, "dispatch_core": core}, indent=2))
    print("\nsummary:")
    for f in figures.values():
        if "runs" in f:
            print("\n".join(summary_lines(f)))
    print(f"dispatch core: {core['events_per_cpu_s']} events per CPU-second ({core['endpoints']} "
          "endpoints, synthetic stream)")
    if baseline is not None:
        c = figures["client_cpu"]
        print(f"client CPU per 1000 frames: this checkout {c['cpu_s_per_1000_frames']['this']} s, "
              f"{baseline} {c['cpu_s_per_1000_frames']['baseline']} s = {c['ratio']} x "
              "(goal <= 1.03)")
    figures["dispatch_core"] = core
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, nargs="+", default=[0.2, 0.1],
                        help="seconds per request, one measurement each (default 0.2 0.1)")
    parser.add_argument("--mbp", type=float, default=8.0, help="input size in Mbp (default 8)")
    parser.add_argument("--window", type=int, default=2048,
                        help="frames per window (default 2048: a short bench crosses many windows)")
    parser.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                        help="another checkout of this project: compare its client CPU per frame")
    parser.add_argument("--core-only", action="store_true",
                        help="only the dispatch core's decisions per second (no server)")
    args = parser.parse_args()
    if args.core_only:
        print(json.dumps(core_decisions_per_s(), indent=2))
    else:
        main(tuple(args.delay), args.mbp, args.window, args.baseline)
