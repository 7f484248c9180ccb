"""Benchmark of `predict` on a shared cluster: priorities, a frozen node, fairness, load shedding.

Toy servers whose models take a fixed time per batch (like a GPU pass, dynamic batching on, one
instance, the shipped configs' 3 priority levels), so the 2-core client does not compete with
model arithmetic. Measured side by side in one run:
- a small job (10 sequences) alone, behind three bulk runs at normal priority, and the same with
  `--priority high` and `--priority low`: `timings.total` and the ratio to alone (goal <= 2x for
  high);
- one run on one server, on two, and on two of which one is frozen (SIGSTOP on its process
  group after the first window): ratio to the one-server time (goal < 2x);
- two equal runs started together on one server: ratio of their times (goal <= 1.5);
- four runs against a server whose queue holds one request: all complete, rejections counted.
Outputs of every run of one input are compared byte for byte.
Run alone: `.venv/bin/python bench/bench_tenancy.py [--delay S]`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "bench" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from predict_fixtures import (  # noqa: E402
    outputs_of,
    wait_for_window,
    write_coding_fasta,
    write_toy_classifier,
    write_toy_repository,
)

from orchestrator.embed.triton.server import TritonServer  # noqa: E402


def _cmd(fasta: Path, clf: Path, out: Path, urls: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "orchestrator", "predict", str(fasta), "-o", str(out),
            "--chunk-size", "500", "--classifier", str(clf), "--server", ",".join(urls),
            "--window", "16", "--batch-size", "8", "-q", *extra]


def _start(cmd: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, cwd=ROOT, text=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def _wait(proc: subprocess.Popen[str], out: Path) -> dict:
    err = proc.communicate()[1]
    if proc.returncode != 0:
        raise RuntimeError(f"predict failed ({proc.returncode}): {err[-2000:]}")
    return json.loads((out / "run.json").read_text())


def _run(cmd: list[str], out: Path) -> dict:
    return _wait(_start(cmd), out)


def _server(stack: ExitStack, tmp: Path, name: str, **toy) -> TritonServer:
    return stack.enter_context(TritonServer(write_toy_repository(tmp / name, **toy)))


def priorities(tmp: Path, small: Path, bulk: Path, clf: Path, delay: float) -> dict:
    with ExitStack() as stack:
        url = _server(stack, tmp, "prio", delay=delay).grpc_url
        times = {"alone": _run(_cmd(small, clf, tmp / "alone", [url]), tmp / "alone")}
        bulk_out = [tmp / f"bulk{i}" for i in range(3)]
        procs = [_start(_cmd(bulk, clf, o, [url])) for o in bulk_out]
        try:
            for p, o in zip(procs, bulk_out, strict=True):
                wait_for_window(p, o)
            for label, extra in (("behind 3 bulk, normal", ()),
                                 ("behind 3 bulk, --priority high", ("--priority", "high"))):
                out = tmp / label.replace(" ", "_").replace(",", "")
                times[label] = _run(_cmd(small, clf, out, [url], *extra), out)
            still_running = all(p.poll() is None for p in procs)
            # last: a low-priority job waits until the normal work in the queue drains
            label = "behind 3 bulk, --priority low"
            times[label] = _run(_cmd(small, clf, tmp / "low", [url], "--priority", "low"),
                                tmp / "low")
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.communicate()
    alone = times["alone"]["timings"]["total"]
    return {"delay_s_per_batch": delay, "bulk_running_during_normal_and_high": still_running,
            "seconds": {k: r["timings"]["total"] for k, r in times.items()},
            "ratio_to_alone": {k: round(r["timings"]["total"] / alone, 2)
                               for k, r in times.items() if k != "alone"}}


def frozen(tmp: Path, fasta: Path, clf: Path, delay: float) -> dict:
    runs = {}
    with ExitStack() as stack:
        a = _server(stack, tmp, "a", delay=delay)
        b = _server(stack, tmp, "b", delay=delay)
        runs["1 server"] = _run(_cmd(fasta, clf, tmp / "one", [a.grpc_url]), tmp / "one")
        runs["2 servers"] = _run(_cmd(fasta, clf, tmp / "two", [a.grpc_url, b.grpc_url]),
                                 tmp / "two")
        out = tmp / "frozen"
        proc = _start(_cmd(fasta, clf, out, [a.grpc_url, b.grpc_url]))
        try:
            wait_for_window(proc, out)
            os.killpg(b.process.pid, signal.SIGSTOP)
            runs["2 servers, one frozen"] = _wait(proc, out)
        finally:
            os.killpg(b.process.pid, signal.SIGKILL)
            b.process.wait()
    same = all(outputs_of(tmp / d) == outputs_of(tmp / "one") for d in ("two", "frozen"))
    one = runs["1 server"]["timings"]["total"]
    stopped = runs["2 servers, one frozen"]["endpoints"][1]
    return {"delay_s_per_batch": delay, "seconds": {k: r["timings"]["total"] for k, r in runs.items()},
            "ratio_to_one_server": {k: round(r["timings"]["total"] / one, 2)
                                    for k, r in runs.items()},
            "frozen_endpoint": {k: stopped[k] for k in ("frozen", "state", "unavailable_seconds")},
            "identical_outputs": same}


def fairness(tmp: Path, fasta: Path, clf: Path, delay: float) -> dict:
    with ExitStack() as stack:
        url = _server(stack, tmp, "fair", delay=delay).grpc_url
        outs = [tmp / f"fair{i}" for i in range(2)]
        procs = [_start(_cmd(fasta, clf, o, [url])) for o in outs]
        records = [_wait(p, o) for p, o in zip(procs, outs, strict=True)]
    times = sorted(r["timings"]["total"] for r in records)
    return {"delay_s_per_batch": delay, "seconds": times, "ratio": round(times[1] / times[0], 3)}


def shedding(tmp: Path, fasta: Path, clf: Path, delay: float) -> dict:
    with ExitStack() as stack:
        url = _server(stack, tmp, "shed", delay=delay, max_queue_size=1).grpc_url
        outs = [tmp / f"shed{i}" for i in range(4)]
        procs = [_start(_cmd(fasta, clf, o, [url])) for o in outs]
        records = [_wait(p, o) for p, o in zip(procs, outs, strict=True)]
    return {"delay_s_per_batch": delay, "max_queue_size": 1, "runs_completed": len(records),
            "seconds": [r["timings"]["total"] for r in records],
            "rejections": [r["endpoints"][0]["rejections"] for r in records],
            "identical_outputs": all(outputs_of(o) == outputs_of(outs[0]) for o in outs)}


def main(delay: float = 0.1) -> dict:
    DATA.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DATA) as name:
        tmp = Path(name)
        clf = write_toy_classifier(tmp / "clf.safetensors")
        small = write_coding_fasta(tmp / "small.fa", records=10, length=500, seed=5)
        bulk = write_coding_fasta(tmp / "bulk.fa", records=150, length=2000, seed=8)
        long = write_coding_fasta(tmp / "long.fa", records=60, length=2000, seed=34)
        figures = {}
        for label, measure in (("priorities", lambda d: priorities(d, small, bulk, clf, delay)),
                               ("frozen", lambda d: frozen(d, long, clf, 0.5)),
                               ("fairness", lambda d: fairness(d, long, clf, 0.2)),
                               ("shedding", lambda d: shedding(d, long, clf, 0.05))):
            folder = tmp / label
            folder.mkdir()
            figures[label] = measure(folder)
            print(f"  {label}: {json.dumps(figures[label])}", flush=True)
    print("\nsummary:")
    print("\n".join(summary_lines(figures)))
    return figures


def summary_lines(f: dict) -> list[str]:
    p, z, fair, shed = f["priorities"], f["frozen"], f["fairness"], f["shedding"]
    lines = [f"small job (10 sequences, {p['delay_s_per_batch']} s/batch): alone "
             f"{p['seconds']['alone']} s"]
    for label, ratio in p["ratio_to_alone"].items():
        goal = "   (goal <= 2x)" if "high" in label else ""
        lines.append(f"  {label}: {p['seconds'][label]} s = {ratio}x alone{goal}")
    lines.append(f"one of two servers frozen ({z['delay_s_per_batch']} s/batch): "
                 + ", ".join(f"{k} {z['seconds'][k]} s ({v}x)"
                             for k, v in z["ratio_to_one_server"].items())
                 + f"   (goal < 2x one server); identical outputs: {z['identical_outputs']}")
    lines.append(f"two equal runs together ({fair['delay_s_per_batch']} s/batch): "
                 f"{fair['seconds'][0]} s and {fair['seconds'][1]} s, ratio {fair['ratio']}"
                 "   (goal <= 1.5)")
    lines.append(f"queue of one request, four runs ({shed['delay_s_per_batch']} s/batch): "
                 f"{shed['runs_completed']} completed, rejections {shed['rejections']}, "
                 f"identical outputs: {shed['identical_outputs']}")
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.1,
                        help="seconds per batch of the priority measurement (default 0.1)")
    args = parser.parse_args()
    main(args.delay)
