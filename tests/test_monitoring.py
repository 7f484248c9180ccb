"""deploy/monitoring run for real: promtool checks and unit-tests the alert rules, and a real
Prometheus scrapes a real tritonserver while a predict runs and evaluates every dashboard panel
and every alert through its HTTP API.

Needs Debian's `prometheus` package (it brings `promtool`); `make setup` installs it where apt is
available, and these tests skip naming why where it is not.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from predict_fixtures import orchestrator_cmd, write_coding_fasta, write_toy_classifier
from timing import margin

from orchestrator.embed.triton.server import free_port

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus; `make setup` installs it "
    "with apt where apt is available)")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian package prometheus; `make setup` installs "
    "it with apt where apt is available)")

# Panels and alerts about GPUs: Triton publishes nv_gpu_* only on a server with GPUs, so on the
# CPU server of the tests their queries are accepted and return nothing.
GPU_ONLY_PANELS = ("GPU utilisation", "GPU memory used", "GPU memory used (bytes)")
GPU_ONLY_ALERTS = ("VirNucProTritonGpuMemoryNearFull",)
SCRAPE_INTERVAL = "1s"  # short, so a run of a few seconds is scraped many times
# Grafana's $__rate_interval is at least four scrape intervals
RATE_INTERVAL = "4s"


def _dashboard() -> dict[str, Any]:
    return json.loads((MONITORING / "grafana-dashboard.json").read_text())


def _rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"] for r in g["rules"]]


def _scrape_job() -> dict[str, Any]:
    (job,) = yaml.safe_load((MONITORING / "prometheus.yml").read_text())["scrape_configs"]
    return job


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in _dashboard()["templating"]["list"]}


def _grafana(expr: str) -> str:
    """A panel's query as Grafana sends it: the variables replaced by the scrape job's values."""
    for name, value in (("$__rate_interval", RATE_INTERVAL), ("$job", _scrape_job()["job_name"]),
                        ("$instance", ".*")):
        expr = expr.replace(name, value)
    return expr


def test_the_dashboard_variables_and_data_source_refer_to_the_scrape_config():
    variables = _variables()
    job = _scrape_job()["job_name"]
    assert variables["job"]["query"] == job and variables["job"]["current"]["value"] == job
    assert re.search(r'\{job="\$job"\}', variables["instance"]["definition"])
    (source,) = yaml.safe_load((MONITORING / "grafana" / "datasource.yml").read_text())["datasources"]
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == source["type"]
    for panel in _dashboard()["panels"]:
        assert panel["datasource"] == {"type": source["type"], "uid": "${datasource}"}, panel["title"]
    for rule in _rules():
        assert f'job="{job}"' in rule["expr"], rule["alert"]
    # the GPU-only list is exactly the panels that read nv_gpu_* metrics
    assert {p["title"] for p in _dashboard()["panels"]
            if any("nv_gpu_" in t["expr"] for t in p["targets"])} == set(GPU_ONLY_PANELS)
    assert {r["alert"] for r in _rules() if "nv_gpu_" in r["expr"]} == set(GPU_ONLY_ALERTS)
    for panel in _dashboard()["panels"]:  # and the dashboard tells its readers which they are
        assert ("GPU servers only" in panel["description"]) == (panel["title"] in GPU_ONLY_PANELS), panel["title"]


@pytest.mark.workflow
@needs_promtool
def test_promtool_accepts_the_alert_rules():
    proc = subprocess.run([PROMTOOL, "check", "rules", str(MONITORING / "alerts.yml")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in proc.stdout


@pytest.mark.workflow
@needs_promtool
def test_every_alert_fires_on_a_sick_server_and_stays_silent_on_a_healthy_one():
    cases = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    checks = [c for case in cases for c in case["alert_rule_test"]]
    for alert in (r["alert"] for r in _rules()):
        assert any(c["alertname"] == alert and c["exp_alerts"] for c in checks), f"{alert} never fires"
        assert any(c["alertname"] == alert and not c["exp_alerts"] for c in checks), f"{alert} never silent"
    proc = subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=MONITORING,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- a real Prometheus against a real tritonserver ---------------------------------------------------
class Prometheus:
    """A prometheus process on a free loopback port with its storage in a temporary folder."""

    def __init__(self, config: Path, storage: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = storage.parent / "prometheus.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={storage}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + margin(60)
        while not self._ready():
            assert self.process.poll() is None, f"prometheus exited: {self.log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"prometheus not ready: {self.log.read_text()[-2000:]}"
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def wait_for_scrapes(self, count: int) -> None:
        """Block until every target has been scraped `count` times."""
        deadline = time.monotonic() + margin(60)
        query = f"min(count_over_time(up[1h])) >= {count}"
        while not self.api("query", query=query)["data"]["result"]:
            assert time.monotonic() < deadline, f"no scrapes: {self.api('targets')}"
            time.sleep(0.2)

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """GET /api/v1/PATH; a rejected query comes back as {"status": "error", "error": ...}."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as exc:  # 400/422: Prometheus' answer to bad PromQL
            return json.load(exc)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture()
def scraped_run(slow_server, tmp_path) -> Iterator[tuple[Prometheus, float, float, str]]:
    """Prometheus scraping `slow_server` (toy models, 0.15 s per request) with the shipped
    scrape job and rules, while a predict runs to the end: (prometheus, start, end, instance)."""
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL}
    config["rule_files"] = [str(MONITORING / "alerts.yml")]
    instance = f"127.0.0.1:{slow_server.metrics_port}"
    (job,) = config["scrape_configs"]
    job["scrape_interval"] = SCRAPE_INTERVAL
    job["static_configs"] = [{"targets": [instance]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prometheus = Prometheus(tmp_path / "prometheus.yml", tmp_path / "tsdb")
    try:
        prometheus.wait_for_scrapes(2)  # Prometheus applies new targets a few seconds after start
        start = time.time()
        fasta = write_coding_fasta(tmp_path / "in.fa", records=60, length=900)
        clf = write_toy_classifier(tmp_path / "clf.safetensors")
        proc = subprocess.run(
            orchestrator_cmd("predict", str(fasta), "-o", str(tmp_path / "out"), "--chunk-size", "300",
                             "--classifier", str(clf), "--server", slow_server.grpc_url, "--window", "32",
                             "--batch-size", "8", "--no-report"),
            cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        time.sleep(3)  # the last scrapes and rule evaluations after the run
        yield prometheus, start, time.time(), instance
    finally:
        prometheus.stop()


def _series(prometheus: Prometheus, what: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    answer = prometheus.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}", step="1")
    assert answer["status"] == "success", f"{what}: Prometheus rejected {expr!r}: {answer.get('error')}"
    return answer["data"]["result"]


def _values(series: list[dict[str, Any]]) -> list[float]:
    return [float(v) for s in series for _, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]


@pytest.mark.server
@needs_prometheus
def test_prometheus_evaluates_every_panel_and_alert_against_a_live_server(scraped_run):
    prometheus, start, end, instance = scraped_run
    # the dashboard's server variable: label_values(nv_inference_count{job="$job"}, instance)
    metric = re.search(r"label_values\((.*), instance\)", _variables()["instance"]["definition"])[1]
    found = prometheus.api("series", **{"match[]": _grafana(metric), "start": f"{start:.3f}"})
    assert {s["instance"] for s in found["data"]} == {instance}

    panels = {}
    for panel in _dashboard()["panels"]:
        series = [s for t in panel["targets"]
                  for s in _series(prometheus, f"panel {panel['title']!r}", _grafana(t["expr"]), start, end)]
        panels[panel["title"]] = series
        if panel["title"] in GPU_ONLY_PANELS:
            assert series == [], f"panel {panel['title']!r} is listed GPU-only but has series on a CPU server"
        else:
            assert series, f"panel {panel['title']!r} returned no series for a loaded CPU server"
    assert max(_values(panels["Servers up"])) == 1
    assert max(_values(panels["Inferences/s"])) > 0 and max(_values(panels["Inferences/s (all servers)"])) > 0
    assert {s["metric"]["model"] for s in panels["Queue time per request"]} == {"dnabert_s", "esm2"}
    compute = _values(panels["Compute time per request"])
    assert compute and min(compute) >= 100, compute  # ms: every toy request sleeps 150 ms

    for rule in _rules():
        # the whole rule is accepted; its left side (the rule without its threshold) describes
        # this server, and its value is one that keeps the alert silent
        assert _series(prometheus, f"alert {rule['alert']}", rule["expr"], start, end) == [], rule["alert"]
        left = re.fullmatch(r"(.*?)\s*(?:==|<|>)\s*[\d.]+", rule["expr"], re.S)[1]
        series = _series(prometheus, f"alert {rule['alert']} without its threshold", left, start, end)
        assert bool(series) == (rule["alert"] not in GPU_ONLY_ALERTS), rule["alert"]
    assert min(_values(_series(prometheus, "up", f'up{{job="{_scrape_job()["job_name"]}"}}', start, end))) == 1

    rules = [r for g in prometheus.api("rules")["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == {r["alert"] for r in _rules()}
    for rule in rules:
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
        assert rule["state"] == "inactive", rule  # a healthy server: nothing pending or firing
    assert prometheus.api("alerts")["data"]["alerts"] == []
