"""Operating the shared service: locked-down servers, `orchestrator status`, dashboards and alerts.

Real tritonservers with the fast numpy toy models on loopback. Anonymous clients (gRPC and HTTP)
are refused every administrative protocol, the server stays up and keeps serving; the admin key
opens them where the model-control mode allows.
"""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from predict_fixtures import write_toy_repository
from timing import margin

from orchestrator.embed.triton.lockdown import (
    ADMIN_GRPC_HEADER,
    ADMIN_HEADER,
    lockdown_flags,
)
from orchestrator.embed.triton.lockdown import (
    main as lockdown_main,
)
from orchestrator.embed.triton.server import TritonServer, free_port
from orchestrator.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
KEY = "test-admin-key-0123456789"


@pytest.fixture(scope="module")
def explicit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Toy models, admin key set, model control explicit (admins may load and unload)."""
    repo = write_toy_repository(tmp_path_factory.mktemp("explicit") / "repo")
    with TritonServer(repo, admin_key=KEY, model_control="explicit") as server:
        yield server


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Toy models, admin key set, Triton's default model control (no remote load/unload)."""
    repo = write_toy_repository(tmp_path_factory.mktemp("default") / "repo")
    with TritonServer(repo, admin_key=KEY) as server:
        yield server


def _clients(server: TritonServer, protocol: str) -> tuple[Any, dict[str, str]]:
    if protocol == "grpc":
        return grpcclient.InferenceServerClient(server.grpc_url), {ADMIN_GRPC_HEADER: KEY}
    return httpclient.InferenceServerClient(server.http_url), {ADMIN_HEADER: KEY}


def _backend_region(server: TritonServer) -> str:
    """The key of one of the server's own Python-backend /dev/shm regions (world-readable)."""
    regions = glob.glob(f"/dev/shm/{server.shm_prefix}*")
    assert regions, "the Python backend keeps its regions under /dev/shm"
    return "/" + os.path.basename(regions[0])


def _admin_calls(server: TritonServer) -> dict[str, Callable[[Any, dict[str, str] | None], Any]]:
    region = _backend_region(server)
    return {
        "register system shm (backend's own region)":
            lambda c, h: c.register_system_shared_memory("own", region, 64, headers=h),
        "register system shm": lambda c, h: c.register_system_shared_memory(
            "new", "/virnucpro_test_absent", 64, headers=h),
        "register cuda shm": lambda c, h: c.register_cuda_shared_memory("cuda", b"\0" * 64, 0, 64,
                                                                        headers=h),
        "shm status": lambda c, h: c.get_system_shared_memory_status(headers=h),
        "log settings": lambda c, h: c.update_log_settings({"log_verbose_level": 1}, headers=h),
        "read log settings": lambda c, h: c.get_log_settings(headers=h),
        "trace settings": lambda c, h: c.update_trace_settings(settings={"trace_rate": "2"},
                                                               headers=h),
        "repository index": lambda c, h: c.get_model_repository_index(headers=h),
        "unload": lambda c, h: c.unload_model("esm2", headers=h),
        "load": lambda c, h: c.load_model("esm2", headers=h),
    }


def _infer_ok(server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        inp = grpcclient.InferInput("SEQUENCE", [2, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[b"ACGT"], [b"GGGA"]], dtype=object))
        out = client.infer("dnabert_s", [inp]).as_numpy("EMBEDDING")
        assert out.shape == (2, 8)
        assert client.get_inference_statistics("dnabert_s")  # statistics stay open
        assert client.get_model_config("esm2") and client.get_model_metadata("esm2")
    finally:
        client.close()


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_anonymous_clients_are_refused_every_admin_protocol(explicit_server, protocol):
    client, _ = _clients(explicit_server, protocol)
    try:
        for name, call in _admin_calls(explicit_server).items():
            with pytest.raises(Exception, match="restricted") as refused:
                call(client, None)
            assert "restricted" in str(refused.value), name
            with pytest.raises(Exception, match="restricted"):  # a wrong key is no key
                call(client, {ADMIN_GRPC_HEADER if protocol == "grpc" else ADMIN_HEADER: "x" * 20})
    finally:
        client.close()
    assert explicit_server.poll() is None
    assert explicit_server.models_not_ready() == []
    _infer_ok(explicit_server)


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_admin_key_opens_what_the_mode_allows(explicit_server, default_server, protocol):
    for server, explicit in ((explicit_server, True), (default_server, False)):
        client, admin = _clients(server, protocol)
        try:
            index = client.get_model_repository_index(headers=admin)
            assert "esm2" in str(index)
            settings = client.get_log_settings(headers=admin)
            assert "log_verbose_level" in str(settings)
            client.register_system_shared_memory("own", _backend_region(server), 64, headers=admin)
            client.unregister_system_shared_memory("own", headers=admin)
            with pytest.raises(Exception) as cuda:  # reaches the handler: the handle is fake
                client.register_cuda_shared_memory("cuda", b"\0" * 64, 0, 64, headers=admin)
            assert "restricted" not in str(cuda.value)
            if explicit:
                client.unload_model("esm2", headers=admin)
                client.load_model("esm2", headers=admin)
            else:
                with pytest.raises(Exception, match="not allowed"):
                    client.unload_model("esm2", headers=admin)
        finally:
            client.close()
        assert server.poll() is None
        assert server.models_not_ready() == []
        _infer_ok(server)


@pytest.mark.server
def test_serve_without_a_key_refuses_everyone(tmp_path):
    """`orchestrator serve` with neither --admin-key nor $VIRNUCPRO_ADMIN_KEY: no header opens."""
    repo = write_toy_repository(tmp_path / "repo")
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k != "VIRNUCPRO_ADMIN_KEY"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "serve", "--model-repository", str(repo),
         "--grpc-port", str(grpc_port), "--http-port", str(http_port),
         "--metrics-port", str(metrics_port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
        deadline = time.monotonic() + margin(60)
        while True:
            try:
                if client.is_model_ready("esm2") and client.is_model_ready("dnabert_s"):
                    break
            except Exception:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.1)
        for header in (None, {ADMIN_HEADER: ""}, {ADMIN_HEADER: "None"}):
            with pytest.raises(Exception, match="restricted"):
                client.get_model_repository_index(headers=header)
        client.close()
    finally:
        proc.terminate()
        proc.communicate(timeout=90)
    assert proc.returncode == 0


def test_lockdown_flags_and_keys():
    flags = lockdown_flags(KEY)
    rule = f"model-repository,shared-memory,logging,trace:{ADMIN_HEADER}={KEY}"
    assert flags == [f"--grpc-restricted-protocol={rule}", f"--http-restricted-api={rule}",
                     "--model-control-mode=none"]
    assert lockdown_flags(KEY, "explicit")[-2:] == ["--model-control-mode=explicit", "--load-model=*"]
    unknown = lockdown_flags(None)[0].rsplit("=", 1)[1]
    assert len(unknown) >= 32 and unknown != lockdown_flags(None)[0].rsplit("=", 1)[1]
    for bad in ("short", "a:b=c" * 5, "spaces are bad here"):
        with pytest.raises(InputError):
            lockdown_flags(bad)
    with pytest.raises(InputError):
        lockdown_flags(KEY, "poll")


def test_container_entry_point_execs_tritonserver_locked_down(tmp_path, monkeypatch):
    """The images' entry point: the lock-down flags, then the image's or the operator's own."""
    calls: list[tuple[str, list[str]]] = []
    fake = tmp_path / "tritonserver"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("VIRNUCPRO_ADMIN_KEY", KEY)
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, argv)))
    lockdown_main(["--model-repository=/models", "--model-config-name=gpu"])
    path, argv = calls[0]
    assert path == str(fake) and argv[0] == str(fake)
    assert argv[1:] == [*lockdown_flags(KEY), "--model-repository=/models", "--model-config-name=gpu"]
    lockdown_main(["--model-control-mode=explicit", "--load-model=*"])
    assert calls[1][1].count("--model-control-mode=explicit") == 1
    assert not any(a == "--model-control-mode=none" for a in calls[1][1])
    monkeypatch.setenv("VIRNUCPRO_ADMIN_KEY", "")
    lockdown_main([])
    assert f"{ADMIN_HEADER}=" in calls[2][1][1] and KEY not in calls[2][1][1]
    monkeypatch.setenv("VIRNUCPRO_ADMIN_KEY", "short")
    with pytest.raises(SystemExit):
        lockdown_main([])


# -- orchestrator status -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def other_weights_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Toy models with other weights checksums and two priority levels."""
    repo = write_toy_repository(tmp_path_factory.mktemp("other") / "repo", weights_tag="-other",
                                priority_levels=False)
    for config in repo.glob("*/config.pbtxt"):
        config.write_text(config.read_text().replace(
            "dynamic_batching {", "dynamic_batching { priority_levels: 2 default_priority_level: 2"))
    with TritonServer(repo) as server:
        yield server


def _metrics(server: TritonServer) -> str:
    return f"http://127.0.0.1:{server.metrics_port}/metrics"


def _status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from orchestrator.commands.cli import main

    code = main(["status", "--interval", "0.3", "--timeout", "3", *args])
    return code, capsys.readouterr().out


@pytest.mark.server
def test_status_lists_up_and_down_endpoints(explicit_server, capsys):
    down = f"127.0.0.1:{free_port()}"
    servers = f"{explicit_server.grpc_url},{down}"
    metrics = ["--metrics-url", _metrics(explicit_server), "--metrics-url", f"127.0.0.1:{free_port()}"]
    code, out = _status(capsys, "--server", servers, *metrics)
    assert code == 0, out
    up_line, down_line, summary = out.strip().splitlines()
    assert up_line.startswith("ready") and explicit_server.grpc_url in up_line and "plaintext" in up_line
    assert "dnabert_s v1 width 8 sha toy-dnabert_ cpu x1 batch 16 priorities 3 (default 2)" in up_line
    assert "esm2 v1 width 8 sha toy-esm2 cpu x1 batch 16" in up_line
    assert "pending 0" in up_line and "inf/s" in up_line
    assert down_line.startswith("unreachable") and down in down_line and "metrics" in down_line
    assert summary == "predict would use 1 of 2 endpoint(s); they agree on the weights"

    code, out = _status(capsys, "--server", servers, *metrics, "--json")
    assert code == 0
    report = json.loads(out)
    assert report["exit_code"] == 0 and report["usable"] == 1 and report["agree"] is True
    up, gone = report["endpoints"]
    assert (up["url"], up["state"], up["transport"], up["agrees"]) == \
        (explicit_server.grpc_url, "ready", "plaintext", True)
    assert up["models"]["dnabert_s"] == {
        "name": "dnabert_s", "ready": True, "version": "1", "versions": ["1"], "width": 8,
        "weights_sha256": "toy-dnabert_s", "precision": "unknown", "kind": "cpu", "instances": 1,
        "max_batch_size": 16, "priority_levels": 3, "default_priority_level": 2}
    assert report["pinned"] == {"dnabert_s": "1", "esm2": "1"}
    assert up["load"]["esm2"]["pending"] == 0 and up["metrics_problem"] == "" and up["gpus"] == []
    assert (gone["url"], gone["state"], gone["models"], gone["agrees"]) == (down, "unreachable", {}, None)
    assert gone["problem"] and gone["metrics_problem"]


@pytest.mark.server
def test_status_exit_2_when_weights_differ(explicit_server, other_weights_server, capsys):
    servers = f"{explicit_server.grpc_url},{other_weights_server.grpc_url}"
    metrics = ["--metrics-url", _metrics(explicit_server), "--metrics-url", _metrics(other_weights_server)]
    code, out = _status(capsys, "--server", servers, *metrics)
    assert code == 2, out
    lines = out.strip().splitlines()
    assert "DIFFERS: dnabert_s weights_sha256 toy-dnabert_s-ot" in lines[1]
    assert "priorities 2 (default 2)" in lines[1]
    assert "predict would refuse to run (exit 2)" in lines[2]
    code, out = _status(capsys, "--server", servers, *metrics, "--json")
    report = json.loads(out)
    assert code == report["exit_code"] == 2 and report["agree"] is False
    assert report["endpoints"][1]["models"]["esm2"]["priority_levels"] == 2
    assert report["endpoints"][1]["differences"]


def test_status_exit_3_when_none_is_usable(capsys, monkeypatch):
    monkeypatch.setenv("VIRNUCPRO_TRITON_URL", f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}")
    code, out = _status(capsys)
    assert code == 3
    assert out.count("unreachable") == 2 and "no usable endpoint of 2" in out
    code, out = _status(capsys, "--json")
    assert code == 3 and json.loads(out)["usable"] == 0
    code, _ = _status(capsys, "--metrics-url", "http://127.0.0.1:1/metrics")  # one URL, two servers
    assert code == 2


@pytest.mark.server
def test_status_watch_repeats_until_interrupted(explicit_server, capsys, monkeypatch):
    from orchestrator.commands import status

    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) >= 4:  # two checks (each sleeps for its interval once), then Ctrl-C
            raise KeyboardInterrupt

    monkeypatch.setattr(status.time, "sleep", sleep)
    code, out = _status(capsys, "--server", explicit_server.grpc_url, "--metrics-url",
                        _metrics(explicit_server), "--watch", "5", "--json")
    assert code == 0
    assert [json.loads(line)["exit_code"] for line in out.splitlines()] == [0, 0]


@pytest.mark.server
def test_status_sees_pending_requests_while_predict_runs(slow_server, tmp_path, capsys):
    from predict_fixtures import orchestrator_cmd, write_coding_fasta, write_toy_classifier

    fasta = write_coding_fasta(tmp_path / "in.fa", records=60, length=900)
    clf = write_toy_classifier(tmp_path / "clf.safetensors")
    proc = subprocess.Popen(
        orchestrator_cmd("predict", str(fasta), "-o", str(tmp_path / "out"), "--chunk-size", "300",
                         "--classifier", str(clf), "--server", slow_server.grpc_url, "--window", "32"),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + margin(60)
        seen: dict[str, float] = {}
        while not (seen.get("pending", 0) > 0 and seen.get("rate", 0) > 0):
            assert proc.poll() is None, f"predict ended before status saw its load: {proc.stderr.read()}"
            assert time.monotonic() < deadline, seen
            code, out = _status(capsys, "--server", slow_server.grpc_url, "--metrics-url",
                                _metrics(slow_server), "--json")
            assert code == 0
            load = json.loads(out)["endpoints"][0]["load"]
            seen["pending"] = max(seen.get("pending", 0), *(m["pending"] for m in load.values()))
            seen["rate"] = max(seen.get("rate", 0), *(m["inferences_per_s"] for m in load.values()))
            queue = [m["queue_ms"] for m in load.values() if m["queue_ms"] is not None]
            compute = [m["compute_ms"] for m in load.values() if m["compute_ms"] is not None]
            assert all(q >= 0 for q in queue) and all(c >= 100 for c in compute)  # 0.15 s per execute
    finally:
        proc.kill()
        proc.wait()


def test_metrics_page_parsing_and_load():
    from orchestrator.embed.triton.metrics import Scrape, gpu_load, metrics_url_for, model_load, parse

    page = (
        '# HELP nv_inference_count Number of inferences\n# TYPE nv_inference_count counter\n'
        'nv_inference_count{model="esm2",version="1"} 100\n'
        'nv_inference_count{model="esm2",version="2"} 20\n'
        'nv_inference_request_success{model="esm2",version="1"} 10\n'
        'nv_inference_queue_duration_us{model="esm2",version="1"} 50000\n'
        'nv_inference_compute_infer_duration_us{model="esm2",version="1"} 2e5\n'
        'nv_inference_pending_request_count{model="esm2",version="1"} 3\n'
        'nv_gpu_utilization{gpu_uuid="GPU-a\\"b"} 0.5 1700000000\n'
        'nv_gpu_memory_used_bytes{gpu_uuid="GPU-a\\"b"} 4e9\n'
        'nv_gpu_memory_total_bytes{gpu_uuid="GPU-a\\"b"} 8e9\n'
        'garbage line\n')
    later = page.replace("} 100", "} 300").replace("} 10\n", "} 20\n").replace("} 50000", "} 150000") \
        .replace("} 2e5", "} 4e5")
    a, b = Scrape(10.0, parse(page)), Scrape(12.0, parse(later))
    assert a.total("nv_inference_count", model="esm2") == 120
    load = model_load(a, b, ["esm2", "dnabert_s"])
    assert load["esm2"].inferences_per_s == 100 and load["esm2"].pending == 3
    assert load["esm2"].queue_ms == 10 and load["esm2"].compute_ms == 20
    assert load["dnabert_s"].pending is None and load["dnabert_s"].queue_ms is None
    (gpu,) = gpu_load(b)
    assert (gpu.gpu, gpu.utilization, gpu.memory_used_bytes, gpu.memory_total_bytes) == \
        ('GPU-a"b', 0.5, 4e9, 8e9)
    assert metrics_url_for("node1:8001") == "http://node1:8002/metrics"
    assert metrics_url_for("[::1]:9001", 9002) == "http://[::1]:9002/metrics"


# -- dashboards and alerts ---------------------------------------------------------------------------
MONITORING = ROOT / "deploy" / "monitoring"
# Grafana's variables, replaced by what Grafana would put there before PromQL sees the query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": "virnucpro-triton", "$instance": ".*"}


def _dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def _rules() -> list[dict[str, Any]]:
    import yaml

    return [r for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"]
            for r in g["rules"]]


def _expressions() -> list[str]:
    """Every PromQL expression of the dashboard (variables filled in) and of the alert rules."""
    exprs = [t["expr"] for p in _dashboard()["panels"] for t in p["targets"]]
    exprs.append(_dashboard()["templating"]["list"][2]["definition"].removeprefix("label_values(")
                 .rpartition(",")[0])
    for name, value in GRAFANA_VARIABLES.items():
        exprs = [e.replace(name, value) for e in exprs]
    return exprs + [r["expr"] for r in _rules()]


def _metric_names(expr: str) -> set[str]:
    """Metric names an expression selects, from its parsed form (syntax errors raise)."""
    promql = pytest.importorskip("promql_parser")
    parsed = promql.parse(expr)
    return set(re.findall(r"\b(nv_[a-z_]+|up)\b(?=\{|\s|\)|$)", str(parsed)))


@pytest.mark.server
def test_every_metric_the_dashboard_and_rules_use_is_on_a_live_page(explicit_server):
    """The names come from a live server (after one inference); the GPU-only ones, which a
    server without GPUs does not publish, from Triton's documented list."""
    from orchestrator.embed.triton.metrics import GPU_METRICS, MODEL_METRICS, scrape

    _infer_ok(explicit_server)
    live = scrape(_metrics(explicit_server), timeout=5).names()
    assert set(MODEL_METRICS) <= live
    used = set().union(*(_metric_names(e) for e in _expressions())) - {"up"}
    assert used, "no metric names found"
    assert used - live <= set(GPU_METRICS), used - live - set(GPU_METRICS)
    assert set(GPU_METRICS) <= used and {"nv_inference_pending_request_count",
                                         "nv_inference_queue_duration_us"} <= used


def test_dashboard_loads_and_draws_what_operators_need():
    dash = _dashboard()
    panels = dash["panels"]
    assert len({p["id"] for p in panels}) == len(panels) and dash["uid"] == "virnucpro-triton"
    for p in panels:
        assert p["type"] in ("timeseries", "stat") and p["targets"] and p["datasource"]["type"] == "prometheus"
        assert set(p["gridPos"]) == {"x", "y", "w", "h"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])
    text = " ".join(t["expr"] for p in panels for t in p["targets"])
    for needed in ("nv_inference_pending_request_count", "rate(nv_inference_count",
                   "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us",
                   "nv_gpu_utilization", "nv_gpu_memory_used_bytes"):
        assert needed in text, needed
    assert all("by (instance, model)" in t["expr"] for p in panels if p["type"] == "timeseries"
               for t in p["targets"] if "nv_inference" in t["expr"])  # per server
    for expr in _expressions():
        _metric_names(expr)  # PromQL that parses


def test_alert_rules_load_and_match_the_kubernetes_copy():
    import yaml

    rules = {r["alert"]: r for r in _rules()}
    assert set(rules) == {"VirNucProTritonDown", "VirNucProTritonModelNotReady",
                          "VirNucProTritonQueueTimeHigh", "VirNucProTritonGpuMemoryNearFull"}
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert re.fullmatch(r"\d+[smh]", rule["for"])
        _metric_names(rule["expr"])
    assert rules["VirNucProTritonQueueTimeHigh"]["expr"].endswith("> 1000")
    assert rules["VirNucProTritonGpuMemoryNearFull"]["expr"].endswith("> 0.95")
    operator = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"] == yaml.safe_load((MONITORING / "alerts.yml").read_text())
    scrape = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "virnucpro-triton" and job["static_configs"][0]["targets"] == ["triton:8002"]


@pytest.mark.workflow
def test_kubernetes_monitoring_renders_and_selects_the_triton_service():
    import shutil

    import yaml

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    rendered = {}
    for folder in (MONITORING, ROOT / "deploy" / "kubernetes" / "base"):
        proc = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        rendered.update({d["kind"]: d for d in yaml.safe_load_all(proc.stdout) if d})
    monitor, service = rendered["ServiceMonitor"], rendered["Service"]
    for key, value in monitor["spec"]["selector"]["matchLabels"].items():
        assert service["metadata"]["labels"][key] == value
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["metadata"]["name"] == service["metadata"]["name"]  # the job label rules select
    dashboard = rendered["ConfigMap"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["grafana-dashboard.json"]) == _dashboard()
    assert rendered["PrometheusRule"]["spec"]["groups"][0]["rules"] == _rules()


def test_compose_monitoring_mounts_the_files():
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            assert (ROOT / volume.split(":")[0]).is_file(), volume
