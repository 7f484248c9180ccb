"""A shared cluster: priorities, a fair share of the queue, load shedding, frozen and stuck nodes.

Real tritonservers on loopback with toy models that take a fixed time per batch (like a GPU
pass). The toy models' output is a pure function of each row, so every run must write the bytes
of an undisturbed one-server run, whatever else shares the servers or goes wrong on them.
Timed assertions are only the ratios the issue asks for, sized so 2-core noise stays far below.
"""

from __future__ import annotations

import json
import os
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from predict_fixtures import (
    outputs_of,
    predict_args,
    rows_executed,
    run_cli,
    start_predict,
    stderr_of,
    wait_for_window,
    write_coding_fasta,
    write_toy_classifier,
    write_toy_repository,
)
from timing import margin

from orchestrator.embed.triton.server import TritonServer

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("tenancy")
    return {
        "root": root,
        "clf": write_toy_classifier(root / "clf.safetensors"),
        # 96 frames: 12 requests of 8 rows per model
        "main": write_coding_fasta(root / "main.fa", records=24, length=2000, seed=21),
        # 10 sequences, one frame each: one request round (8 + 2 rows) per model
        "small": write_coding_fasta(root / "small.fa", records=10, length=500, seed=5),
        # a bulk job: 600 frames
        "bulk": write_coding_fasta(root / "bulk.fa", records=150, length=2000, seed=8),
        # 240 frames: 30 requests of 8 rows per model, 15 batches per model on one server
        "long": write_coding_fasta(root / "long.fa", records=60, length=2000, seed=34),
    }


def _server(stack: ExitStack, root: Path, **toy) -> TritonServer:
    repo = write_toy_repository(root / f"repo_{time.monotonic_ns()}", **toy)
    return stack.enter_context(TritonServer(repo))


def _run_json(outdir: Path) -> dict:
    return json.loads((outdir / "run.json").read_text())


def _predict(data: dict, name: str, fasta: str, *servers: str, extra: tuple[str, ...] = (),
             env: dict[str, str] | None = None) -> dict:
    """A predict run to completion; its run.json."""
    out = data["root"] / f"{name}_{time.monotonic_ns()}"
    proc = run_cli("predict", *predict_args(data[fasta], data["clf"], *servers), *extra, "-o", str(out),
                   env=env)
    assert proc.returncode == 0, proc.stderr
    record = _run_json(out)
    record["outdir"] = out
    record["stderr"] = proc.stderr
    return record


@pytest.fixture(scope="module")
def reference(data):
    """The long input on one server (1 s per batch), alone: the bytes every other run of it must
    write and the time a disturbed two-server run is compared with."""
    with ExitStack() as stack:
        server = _server(stack, data["root"], delay=1.0)
        record = _predict(data, "ref", "long", server.grpc_url)
    return {"outputs": outputs_of(record["outdir"]), "seconds": record["timings"]["total"]}


def _stop_process_group(server: TritonServer, sig: int) -> None:
    os.killpg(server.process.pid, sig)


def _by_url(record: dict) -> dict[str, dict]:
    return {e["url"]: e for e in record["endpoints"]}


# -- priorities and a fair share ----------------------------------------------------------------------
def test_high_priority_small_job_behind_three_bulk_runs(data):
    """Three bulk runs at normal priority keep the server busy; a small `--priority high` job takes
    at most 2x its time alone (a normal one waits behind their queued requests)."""
    root = data["root"]
    with ExitStack() as stack:
        server = _server(stack, root, delay=0.1)
        alone = _predict(data, "alone", "small", server.grpc_url)
        bulk_dirs = [root / f"bulk{i}_{time.monotonic_ns()}" for i in range(3)]
        bulk = [start_predict([*predict_args(data["bulk"], data["clf"], server.grpc_url), "-o", str(d)])
                for d in bulk_dirs]
        try:
            for proc, out in zip(bulk, bulk_dirs, strict=True):
                wait_for_window(proc, out)
            high = _predict(data, "high", "small", server.grpc_url, extra=("--priority", "high"))
            normal = _predict(data, "normal", "small", server.grpc_url)
            assert all(p.poll() is None for p in bulk)  # the bulk runs were there all along
        finally:
            for proc in bulk:
                proc.send_signal(signal.SIGTERM)
            for proc in bulk:
                stderr_of(proc, timeout=60)
    t_alone, t_high, t_normal = (r["timings"]["total"] for r in (alone, high, normal))
    assert t_high <= 2 * t_alone, (t_alone, t_high, t_normal)
    assert t_normal > t_high, (t_alone, t_high, t_normal)
    assert high["parameters"]["priority"] == "high"
    assert alone["parameters"]["priority"] == normal["parameters"]["priority"] == "normal"
    assert outputs_of(high["outdir"]) == outputs_of(alone["outdir"])


def test_max_in_flight_is_clamped_to_the_fair_share_with_one_warning(data):
    with ExitStack() as stack:
        server = _server(stack, data["root"], max_in_flight_per_instance=1, instances=2)
        clamped = _predict(data, "clamp", "small", server.grpc_url, extra=("--max-in-flight", "8"),
                           env={"VIRNUCPRO_PRIORITY": "low"})
        default = _predict(data, "default", "small", server.grpc_url)
        below = _predict(data, "below", "small", server.grpc_url, extra=("--max-in-flight", "1"))
    warnings = [line for line in clamped["stderr"].splitlines() if "fair share" in line]
    assert len(warnings) == 1
    assert "--max-in-flight 8" in warnings[0] and "dnabert_s to 2" in warnings[0]
    assert "esm2 to 2" in warnings[0]
    assert clamped["endpoints"][0]["max_in_flight"] == {"dnabert_s": 2, "esm2": 2}
    assert clamped["parameters"]["priority"] == "low"  # from $VIRNUCPRO_PRIORITY
    assert default["endpoints"][0]["max_in_flight"] == {"dnabert_s": 2, "esm2": 2}
    assert below["endpoints"][0]["max_in_flight"] == {"dnabert_s": 1, "esm2": 1}
    assert "fair share" not in default["stderr"] + below["stderr"]


def test_a_bad_priority_is_one_line_exit_2(data, tmp_path):
    proc = run_cli("predict", *predict_args(data["small"], data["clf"], "127.0.0.1:1"), "-o",
                   str(tmp_path / "o"), env={"VIRNUCPRO_PRIORITY": "urgent"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "orchestrator: error: VIRNUCPRO_PRIORITY 'urgent' is not one of high, normal, low"]
    proc = run_cli("embed", str(data["small"]), "--chunk-size", "500", "-o",
                   str(tmp_path / "e.h5"), "--priority", "urgent")
    assert proc.returncode == 2 and "invalid choice: 'urgent'" in proc.stderr


# -- frozen servers and stuck models -----------------------------------------------------------------
def test_frozen_server_is_noticed_within_seconds(data, reference, server_source):
    """SIGSTOP on one of two servers mid-run: the run notices (liveness checks), re-sends its
    requests to the other and completes byte-identical in less than 2x the one-server time."""
    root = data["root"]
    out = root / f"frozen_{time.monotonic_ns()}"
    with ExitStack() as stack:
        good = _server(stack, root, delay=1.0)
        frozen = _server(stack, root, delay=1.0)
        proc = start_predict([*predict_args(data["long"], data["clf"], good.grpc_url, frozen.grpc_url),
                       "-o", str(out)])
        try:
            wait_for_window(proc, out)
            _stop_process_group(frozen, signal.SIGSTOP)
            err = stderr_of(proc)
        finally:
            _stop_process_group(frozen, signal.SIGKILL)
            frozen.process.wait()
    assert proc.returncode == 0, err
    assert outputs_of(out) == reference["outputs"]
    record = _run_json(out)
    assert record["timings"]["total"] < 2 * reference["seconds"], (record["timings"], reference)
    stopped, other = _by_url(record)[frozen.grpc_url], _by_url(record)[good.grpc_url]
    assert stopped["frozen"] == 1 and stopped["state"] == "down" and stopped["down"] == 1
    assert stopped["unavailable_seconds"] > 0
    assert other["frozen"] == other["down"] == other["failures"] == 0
    lines = [line for line in err.splitlines() if "frozen:" in line]
    assert len(lines) == 1 and frozen.grpc_url in lines[0]


def test_stuck_model_requests_are_hedged_to_the_other_server(data, reference, server_source):
    """A live server whose models hang from their third batch on: its requests are re-sent to
    the other server once overdue; the run completes there, byte-identical, within a minute."""
    root = data["root"]
    out = root / f"stuck_{time.monotonic_ns()}"
    with ExitStack() as stack:
        good = _server(stack, root, delay=1.0)
        stuck = _server(stack, root, delay=1.0, hang_after=2)
        t0 = time.monotonic()
        proc = start_predict([*predict_args(data["long"], data["clf"], good.grpc_url, stuck.grpc_url),
                       "-o", str(out)])
        try:
            err = stderr_of(proc, timeout=120)
            seconds = time.monotonic() - t0
        finally:
            _stop_process_group(stuck, signal.SIGKILL)
            stuck.process.wait()
    assert proc.returncode == 0, err
    assert seconds < margin(60)
    assert outputs_of(out) == reference["outputs"]
    record = _run_json(out)
    hung, other = _by_url(record)[stuck.grpc_url], _by_url(record)[good.grpc_url]
    assert hung["hedged"] >= 2 and other["hedged"] == 0  # at least one request of each model
    assert sum(m["hedged"] for m in record["models"]) == hung["hedged"]
    assert other["failures"] == 0 and other["rows"] > 0
    hedges = [line for line in err.splitlines() if "(hedged)" in line]
    assert len(hedges) == hung["hedged"] and all(stuck.grpc_url in line for line in hedges)


def test_slow_healthy_cluster_resends_nothing(data):
    """1 s per batch, three runs at once on two servers, queues several requests deep: no
    request is hedged or re-sent; the servers executed exactly the rows the runs needed."""
    root = data["root"]
    outs = [root / f"slow{i}_{time.monotonic_ns()}" for i in range(3)]
    with ExitStack() as stack:
        servers = [_server(stack, root, delay=1.0) for _ in range(2)]
        urls = [s.grpc_url for s in servers]
        procs = [start_predict([*predict_args(data["main"], data["clf"], *urls), "-o", str(o)]) for o in outs]
        errors = [stderr_of(p) for p in procs]
        executed = [rows_executed(s.grpc_url) for s in servers]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    records = [_run_json(o) for o in outs]
    assert all(outputs_of(o) == outputs_of(outs[0]) for o in outs)
    needed = sum(r["counts"]["frames"] for r in records)
    probes = len(records) * len(servers)  # each run asks each server's esm2 its width (1 row)
    assert sum(e["dnabert_s"] for e in executed) == needed
    assert sum(e["esm2"] for e in executed) == needed + probes
    for r in records:
        assert all(m["retries"] == m["hedged"] == m["rejections"] == 0 for m in r["models"])
        assert all(e["frozen"] == e["down"] == e["hedged"] == 0 for e in r["endpoints"])
    assert not any("hedged" in e or "frozen" in e for e in errors)


# -- load shedding and fairness ----------------------------------------------------------------------
def test_queue_full_is_busy_not_down(data, reference, server_source):
    """A server whose queue holds one request, four runs at once: every run completes with the
    bytes of a run alone; the rejections are counted, the endpoint never marked down."""
    root = data["root"]
    outs = [root / f"shed{i}_{time.monotonic_ns()}" for i in range(4)]
    with ExitStack() as stack:
        server = _server(stack, root, delay=0.05, max_queue_size=1)
        procs = [start_predict([*predict_args(data["long"], data["clf"], server.grpc_url), "-o", str(o)])
                 for o in outs]
        errors = [stderr_of(p) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    records = [_run_json(o) for o in outs]
    for out, record in zip(outs, records, strict=True):
        assert outputs_of(out) == reference["outputs"]
        (endpoint,) = record["endpoints"]
        assert endpoint["state"] == "up" and endpoint["down"] == endpoint["failures"] == 0
        assert endpoint["rejections"] == sum(m["rejections"] for m in record["models"])
        assert all(m["retries"] == 0 for m in record["models"])
    assert sum(r["endpoints"][0]["rejections"] for r in records) > 0
    shedding = [e for e in errors if "sheds load" in e]
    assert shedding and all(e.count("sheds load") == 1 for e in shedding)


def test_two_equal_runs_finish_within_1_5x_of_each_other(data):
    root = data["root"]
    outs = [root / f"fair{i}_{time.monotonic_ns()}" for i in range(2)]
    with ExitStack() as stack:
        server = _server(stack, root, delay=0.2)
        procs = [start_predict([*predict_args(data["long"], data["clf"], server.grpc_url), "-o", str(o)])
                 for o in outs]
        errors = [stderr_of(p) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    first, second = sorted(_run_json(o)["timings"]["total"] for o in outs)
    assert second <= 1.5 * first, (first, second)
