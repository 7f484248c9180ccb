"""Benchmark of servers found during a run, and of re-reading the discovery sources.

Three toy servers (a fixed time per request, several instances, like bench_cluster). Measured
side by side in one run:
- a predict over a `file:///` endpoint list that starts with 1 server and grows to 3 as soon as
  the first server has executed a row of the run (mid-run; the growth time is reported as a
  fraction of the growing run, within its first 10%) against the same run started with the 3
  servers; goal <= 1.3x;
- the cost of re-resolution with nothing changing: the 3-server run with plain `--server`
  addresses, with an unchanged `file:///` list (a stat per second) and with three `dns:///` names
  re-resolved every 0.1 s (300x the default rate), wall time and client CPU; and the in-process
  time of one re-read of each kind of source.
Outputs of every run are compared byte for byte with the plain 3-server run.
Run alone: `.venv/bin/python bench/bench_discovery.py [--delay S] [--mbp N]`.
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
from predict_fixtures import (  # noqa: E402
    outputs_of,
    rows_executed,
    write_toy_classifier,
    write_toy_repository,
)

from orchestrator.embed.triton.discovery import Discovery, parse_servers  # noqa: E402
from orchestrator.embed.triton.server import TritonServer  # noqa: E402

INSTANCES = 2
BATCH = 64


def predict(servers: list[str], fasta: Path, clf: Path, outdir: Path, *extra: str,
            grow: tuple[Path, str, str] | None = None) -> dict:
    """One predict run; with `grow` = (list file, new content, server), the list is rewritten
    once that server has executed a row (the run is going)."""
    cmd = [sys.executable, "-m", "orchestrator", "predict", str(fasta), "-o", str(outdir),
           "--chunk-size", "500", "--classifier", str(clf), "--window", "2048", "--restart",
           "-q", *extra]
    for s in servers:
        cmd += ["--server", s]
    before = rows_executed(grow[2])["dnabert_s"] if grow is not None else 0
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    grown_at = None
    if grow is not None:
        path, content, first = grow
        while rows_executed(first)["dnabert_s"] == before and proc.poll() is None:
            time.sleep(0.02)
        path.write_text(content)
        grown_at = time.perf_counter() - t0
    err = proc.communicate()[1]
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"predict failed ({proc.returncode}): {err[-2000:]}")
    rec = json.loads((outdir / "run.json").read_text())
    return {"wall_s": round(wall, 2),
            **({"grown_at_s": round(grown_at, 2)} if grown_at is not None else {}),
            "client_cpu_s": rec["throughput"]["client_cpu_seconds"],
            "frames": rec["counts"]["frames"],
            "rows_per_endpoint": {e["url"]: e["rows"] for e in rec["endpoints"]},
            "outputs": outputs_of(outdir)}


def refresh_cost(urls: list[str], kind: str, rounds: int = 2000) -> float:
    """Microseconds per re-read of `urls` (every source due each round), nothing changing."""
    discovery = Discovery(parse_servers(urls), interval=1e-9)
    discovery.refresh(0.0, force=True)
    t0 = time.perf_counter()
    for i in range(rounds):
        assert discovery.refresh(float(i + 1)) is None, kind
    return round((time.perf_counter() - t0) / rounds * 1e6, 1)


def measure(delay: float, fasta: Path, clf: Path) -> dict:
    with tempfile.TemporaryDirectory(dir=DATA) as tmp, ExitStack() as stack:
        servers = []
        for i in range(3):
            repo = write_toy_repository(Path(tmp) / f"repo{i}", delay=delay, instances=INSTANCES,
                                        max_batch_size=BATCH, dynamic_batching=False)
            servers.append(stack.enter_context(TritonServer(repo)))
        urls = [s.grpc_url for s in servers]
        print(f"bench_discovery: 3 toy servers up ({INSTANCES} instances per model, {delay} s "
              "per request)", flush=True)
        listing = Path(tmp) / "servers.txt"
        runs = {}
        runs["3 servers"] = predict(urls, fasta, clf, Path(tmp) / "three")
        print(f"  3 servers: {runs['3 servers']['wall_s']} s", flush=True)
        listing.write_text(f"{urls[0]}\n")
        runs["file list 1 -> 3"] = predict(
            [f"file://{listing}"], fasta, clf, Path(tmp) / "grow",
            grow=(listing, "".join(f"{u}\n" for u in urls), urls[0]))
        grown = runs["file list 1 -> 3"]
        print(f"  file list 1 -> 3 after {grown['grown_at_s']} s: {grown['wall_s']} s", flush=True)
        runs["file list of 3, unchanged"] = predict([f"file://{listing}"], fasta, clf,
                                                     Path(tmp) / "file")
        names = [f"dns:///localhost:{s.grpc_port}" for s in servers]
        runs["3 dns names, every 0.1 s"] = predict(names, fasta, clf, Path(tmp) / "dns",
                                                   "--discovery-interval", "0.1")
        for label in ("file list of 3, unchanged", "3 dns names, every 0.1 s"):
            print(f"  {label}: {runs[label]['wall_s']} s", flush=True)
        costs = {"file_us": refresh_cost([f"file://{listing}"], "file"),
                 "dns_us": refresh_cost(names[:1], "dns")}
    reference = runs["3 servers"]["outputs"]
    for r in runs.values():
        r["identical"] = r.pop("outputs") == reference
    base = runs["3 servers"]
    return {
        "delay_s_per_request": delay, "instances_per_model": INSTANCES, "request_rows": BATCH,
        "runs": runs,
        "grown_at_fraction": round(runs["file list 1 -> 3"]["grown_at_s"]
                                   / runs["file list 1 -> 3"]["wall_s"], 3),
        "grow_ratio": round(runs["file list 1 -> 3"]["wall_s"] / base["wall_s"], 3),
        "unchanged_ratio": {k: round(runs[k]["wall_s"] / base["wall_s"], 3)
                            for k in ("file list of 3, unchanged", "3 dns names, every 0.1 s")},
        "unchanged_cpu_s": {k: round(runs[k]["client_cpu_s"] - base["client_cpu_s"], 2)
                            for k in ("file list of 3, unchanged", "3 dns names, every 0.1 s")},
        "refresh_cost_us": costs,
    }


def summary_lines(f: dict) -> list[str]:
    base = f["runs"]["3 servers"]
    grow = f["runs"]["file list 1 -> 3"]
    lines = [f"file:/// list 1 -> 3 servers at {grow['grown_at_s']} s "
             f"({100 * f['grown_at_fraction']:.0f}% of the run): {grow['wall_s']} s vs "
             f"{base['wall_s']} s started with 3 = {f['grow_ratio']}x   (goal <= 1.3)"]
    for label, ratio in f["unchanged_ratio"].items():
        lines.append(f"{label}: {f['runs'][label]['wall_s']} s = {ratio}x the plain run, client "
                     f"CPU {f['unchanged_cpu_s'][label]:+.2f} s   (goal: none measurable)")
    c = f["refresh_cost_us"]
    lines.append(f"one re-read with nothing changed: file list {c['file_us']} us (a stat), "
                 f"dns name {c['dns_us']} us (a lookup)")
    same = all(r["identical"] for r in f["runs"].values())
    lines.append(f"outputs identical to the plain 3-server run: {same}")
    return lines


def main(delay: float = 0.2, mbp: float = 16.0) -> dict:
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
    parser.add_argument("--delay", type=float, default=0.2,
                        help="seconds per request (default 0.2)")
    parser.add_argument("--mbp", type=float, default=16.0, help="input size in Mbp (default 16)")
    args = parser.parse_args()
    main(args.delay, args.mbp)
