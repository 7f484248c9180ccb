"""`--real`: a scenario run on this machine, with real tritonservers and `orchestrator predict`.

The project's one toy-cluster harness: toy servers (`simulation.toy`, a fixed sleep per executed
batch) on free loopback ports, listed in a `file:///` endpoint list the clients re-read; one
`predict` process per client on generated coding records; faults injected for real (SIGKILL or
SIGSTOP of the server's process group, a restart on the same ports, with other weights for
`restart`, the list file edited for `add` and `remove`). The result has the simulator's shape.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from orchestrator.atomic import write_atomic
from orchestrator.embed.contract import MODELS
from orchestrator.embed.triton.server import TritonServer
from orchestrator.errors import InputError
from simulation.scenario import Scenario, Server
from simulation.toy import write_coding_fasta, write_toy_classifier, write_toy_repository

MAX_SERVERS = 6
MAX_CLIENTS = 8
# Generated records: 500 bp of stop-free codons: one chunk each at --chunk-size 500, one kept frame.
RECORD_BP = 500
FRAMES_PER_RECORD = 1
# A run that takes longer than this is stopped (and the harness fails).
RUN_LIMIT_S = 1800.0


def check_real(scenario: Scenario) -> None:
    """What this machine can run for real; anything else is one InputError line."""
    if len(scenario.servers) > MAX_SERVERS or scenario.client_count() > MAX_CLIENTS:
        raise InputError(f"--real runs at most {MAX_SERVERS} servers and {MAX_CLIENTS} clients on "
                         f"this machine; the scenario has {len(scenario.servers)} and "
                         f"{scenario.client_count()} (simulate it instead)")
    for s in scenario.servers:
        if s.request_ms is None:
            raise InputError(f"--real: server {s.index} has a gpu service curve; real runs use toy "
                             "servers with request_ms")
    for f in scenario.faults:
        if f.kind == "stuck":
            raise InputError("--real: a stuck model cannot be injected at a time on the toy servers "
                             "(simulate it instead)")


def compute_stats(url: str) -> dict[str, dict[str, float]]:
    """Per model: rows executed and summed compute seconds since the server started."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        out = {}
        for m in MODELS:
            stats = client.get_inference_statistics(m, as_json=True)["model_stats"][0]
            ns = stats["inference_stats"]["compute_infer"].get("ns", 0) or 0
            out[m] = {"rows": int(stats.get("inference_count", 0) or 0), "seconds": int(ns) / 1e9}
        return out
    finally:
        client.close()


class _Cluster:
    """The toy servers of the scenario: start, kill, freeze, restart on the same ports."""

    def __init__(self, stack: ExitStack, tmp: Path, specs: tuple[Server, ...]) -> None:
        self.tmp = tmp
        self.specs = specs
        self.servers: list[TritonServer] = []
        self.lost = {m: {"rows": 0, "seconds": 0.0} for m in MODELS}  # stats of killed lives
        # stats read just before a freeze: a server that comes back may not answer the final
        # read (its models' backend processes missed their health checks), and what it executed
        # before the freeze must still count
        self.before_freeze: dict[int, dict[str, dict[str, float]]] = {}
        stack.callback(self.stop_all)
        for spec in specs:
            self.servers.append(self._start(spec, None))
        for s in self.servers:
            s.wait_ready()

    def _repository(self, spec: Server, weights_tag: str) -> Path:
        root = self.tmp / f"models-{spec.index}{weights_tag}"
        if not root.exists():
            write_toy_repository(root, delay=spec.request_ms / 1000.0, max_batch_size=spec.max_batch,
                                 instances=spec.instances, dynamic_batching=spec.batching,
                                 max_queue_size=spec.max_queue or None,
                                 queue_delay_us=int(spec.queue_delay_ms * 1000),
                                 weights_tag=weights_tag)
        return root

    def _start(self, spec: Server, like: TritonServer | None, weights_tag: str = "") -> TritonServer:
        ports = {} if like is None else {"grpc_port": like.grpc_port, "http_port": like.http_port,
                                         "metrics_port": like.metrics_port}
        server = TritonServer(self._repository(spec, weights_tag), **ports)
        server.start()
        return server

    def url(self, i: int) -> str:
        return self.servers[i].grpc_url

    def signal(self, i: int, sig: int) -> None:
        proc = self.servers[i].process
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, sig)

    def stats(self, i: int) -> dict[str, dict[str, float]]:
        """Its statistics, or zeros when it cannot answer (frozen, dead, starting); never less
        than what it had executed before it was frozen."""
        figures = {m: {"rows": 0, "seconds": 0.0} for m in MODELS}
        if self.servers[i].poll() is None:
            try:
                figures = compute_stats(self.url(i))
            except Exception:  # noqa: BLE001 - any failure to answer means no figures
                pass
        floor = self.before_freeze.get(i, {})
        return {m: max(figures[m], floor.get(m, figures[m]), key=lambda v: v["rows"])
                for m in MODELS}

    def freeze(self, i: int) -> None:
        self.before_freeze[i] = self.stats(i)
        self.signal(i, signal.SIGSTOP)

    def kill(self, i: int) -> None:
        for m, v in self.stats(i).items():
            self.lost[m]["rows"] += v["rows"]
            self.lost[m]["seconds"] += v["seconds"]
        self.before_freeze.pop(i, None)  # counted in lost; a restarted server starts from zero
        self.signal(i, signal.SIGCONT)
        self.signal(i, signal.SIGKILL)
        self.servers[i].process.wait()
        self.servers[i].cleanup()

    def restart(self, i: int, weights_tag: str = "") -> None:
        old = self.servers[i]
        self.servers[i] = self._start(self.specs[i], old, weights_tag)
        self.servers[i].wait_ready()

    def stop_all(self) -> None:
        for i, s in enumerate(self.servers):
            self.signal(i, signal.SIGCONT)
            s.stop()


def _predict(fasta: Path, clf: Path, out: Path, listing: Path, group: Any) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "orchestrator", "predict", str(fasta), "-o", str(out),
           "--chunk-size", str(RECORD_BP), "--classifier", str(clf), "--server", f"file://{listing}",
           "--window", str(group.window), "--batch-size", str(group.batch),
           "--lookahead", str(group.lookahead), "--priority", group.priority, "-q"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def run_real(scenario: Scenario) -> dict[str, Any]:
    """Run `scenario` on real toy servers and predict processes; the simulator's result shape."""
    check_real(scenario)
    t_wall = time.perf_counter()
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="simulation-real-")))
        cluster = _Cluster(stack, tmp, scenario.servers)
        listed = set(scenario.initially_listed())
        listing = tmp / "servers.txt"

        def write_listing() -> None:
            write_atomic(listing, "".join(f"{cluster.url(i)}\n" for i in sorted(listed)))
        write_listing()
        clf = write_toy_classifier(tmp / "classifier.safetensors")
        jobs: list[dict[str, Any]] = []
        timeline: list[tuple[float, int, Any]] = []
        for group in scenario.clients:
            records = -(-group.frames // FRAMES_PER_RECORD)
            fasta = write_coding_fasta(tmp / f"in-{group.frames}.fa", records, RECORD_BP)
            for _ in range(group.count):
                n = len(jobs)
                jobs.append({"client": n, "user": group.user, "priority": group.priority,
                             "frames": group.frames, "start_s": group.start_s, "end_s": None})
                timeline.append((group.start_s, 0, ("client", n, group, fasta)))
        for f in scenario.faults:
            timeline.append((f.at_s, 1, ("fault", f)))
            if f.back_after_s is not None:
                timeline.append((f.at_s + f.back_after_s, 1, ("back", f)))
        timeline.sort(key=lambda e: (e[0], e[1]))
        procs: dict[int, subprocess.Popen] = {}
        threads: list[threading.Thread] = []
        t0 = time.monotonic()

        def later(fn, *args) -> None:  # restarts take seconds: off the schedule's thread
            t = threading.Thread(target=fn, args=args, daemon=True)
            t.start()
            threads.append(t)

        while timeline or any(j["end_s"] is None for j in jobs):
            now = time.monotonic() - t0
            if now > RUN_LIMIT_S:
                raise RuntimeError(f"--real: the run passed {RUN_LIMIT_S:.0f} s")
            while timeline and timeline[0][0] <= now:
                _, _, item = timeline.pop(0)
                if item[0] == "client":
                    _, n, group, fasta = item
                    procs[n] = _predict(fasta, clf, tmp / f"out-{n}", listing, group)
                    jobs[n]["start_s"] = round(time.monotonic() - t0, 3)
                    continue
                fault = item[1]
                for i in fault.servers:
                    if item[0] == "fault":
                        if fault.kind == "kill":
                            cluster.kill(i)
                        elif fault.kind == "freeze":
                            cluster.freeze(i)
                        elif fault.kind == "restart":
                            cluster.kill(i)
                            later(cluster.restart, i, "-other")
                        elif fault.kind == "add":
                            listed.add(i)
                        elif fault.kind == "remove":
                            listed.discard(i)
                    elif fault.kind == "kill":
                        later(cluster.restart, i)
                    else:
                        cluster.signal(i, signal.SIGCONT)
                if fault.kind in ("add", "remove"):
                    write_listing()
            for n, p in procs.items():
                if p.poll() is not None and jobs[n]["end_s"] is None:
                    jobs[n]["end_s"] = round(time.monotonic() - t0, 3)
                    if p.returncode != 0:
                        jobs[n]["failed"] = (p.stderr.read() or "").strip().splitlines()[-1:] or [
                            f"exit {p.returncode}"]
            time.sleep(0.02)
        for t in threads:
            t.join()
        makespan = max((j["end_s"] for j in jobs), default=0.0)
        runs = [json.loads((tmp / f"out-{n}" / "run.json").read_text())
                for n in range(len(jobs)) if (tmp / f"out-{n}" / "run.json").exists()]
        for n, rec in enumerate(runs):
            jobs[n]["frames"] = rec["counts"]["frames"]
        stats = [cluster.stats(i) for i in range(len(cluster.servers))]
        executed = {m: sum(s[m]["rows"] for s in stats) + cluster.lost[m]["rows"] for m in MODELS}
        busy = sum(s[m]["seconds"] for s in stats for m in MODELS) + sum(
            v["seconds"] for v in cluster.lost.values())
        needed = {m: sum(j["frames"] for j in jobs) for m in MODELS}
        capacity = sum(s.instances for s in scenario.servers) * len(MODELS) * makespan
        total = sum(needed.values())
        return {
            "mode": "real",
            "makespan_s": makespan,
            "jobs": jobs,
            # the servers' executed rows: rows a killed server lost with its process are not seen
            "rows_sent": executed,
            "rows_needed": needed,
            "rows_executed": executed,
            "duplicate_row_fraction": round((sum(executed.values()) - total) / total, 6)
            if total else 0.0,
            "busy_fraction": round(busy / capacity, 6) if capacity else 0.0,
            "queue_full_answers": sum(e.get("rejections", 0) for rec in runs
                                      for e in rec.get("endpoints", [])),
            "wall_s": round(time.perf_counter() - t_wall, 3),
        }
