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
Run alone: `.venv/bin/python bench/bench_cluster.py [--delay S ...] [--mbp N] [--window F]`.
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
        lookahead: int | None = None) -> dict:
    urls = [s.grpc_url for s in servers]
    before = {u: compute_seconds(u) for u in urls}
    cmd = [sys.executable, "-m", "orchestrator", "predict", str(fasta), "-o", str(outdir),
           "--chunk-size", "500", "--classifier", str(clf), "--server", ",".join(urls),
           "--window", str(window), "--restart", "-q"]
    if lookahead is not None:
        cmd += ["--lookahead", str(lookahead)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
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


def main(delays: tuple[float, ...] = (0.2, 0.1), mbp: float = 8.0, window: int = 2048) -> dict:
    """Each delay measured in turn; 0.1 s loads the 2 cores more (more requests per second)."""
    DATA.mkdir(parents=True, exist_ok=True)
    fasta = make_input(DATA / f"coding_{mbp:g}mbp.fa", mbp, 1.0, seed=3)
    clf = write_toy_classifier(DATA / "toy_classifier.safetensors")
    figures = {f"delay_{d:g}s": measure(d, fasta, clf, window) for d in delays}
    print(json.dumps(figures, indent=2))
    print("\nsummary:")
    for f in figures.values():
        print("\n".join(summary_lines(f)))
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, nargs="+", default=[0.2, 0.1],
                        help="seconds per request, one measurement each (default 0.2 0.1)")
    parser.add_argument("--mbp", type=float, default=8.0, help="input size in Mbp (default 8)")
    parser.add_argument("--window", type=int, default=2048,
                        help="frames per window (default 2048: a short bench crosses many windows)")
    args = parser.parse_args()
    main(tuple(args.delay), args.mbp, args.window)
