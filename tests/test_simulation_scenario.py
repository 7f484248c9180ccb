"""Scenario files of the cluster simulator: what they mean, and one line naming the key when wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("simpy")
yaml = pytest.importorskip("yaml")

from simulation.scenario import ScenarioError, load, parse  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

ISSUE_EXAMPLE = """\
seed: 1
servers:
  - {count: 3, instances: 1, max_batch: 64, queue_delay_ms: 2, max_queue: 0, request_ms: 100}
clients:
  - {count: 2, frames: 20000, priority: normal, start_s: 0}
  - {count: 1, frames: 500, priority: high, start_s: 5}
faults:
  - {at_s: 10, kind: kill, server: 0, back_after_s: 5}
policy: {}
"""


def base() -> dict:
    return yaml.safe_load(ISSUE_EXAMPLE)


def test_the_documented_example_parses_into_servers_clients_and_faults():
    s = parse(base())
    assert s.seed == 1
    assert [x.index for x in s.servers] == [0, 1, 2]
    assert {x.request_ms for x in s.servers} == {100}
    assert s.client_count() == 3
    assert [(g.count, g.frames, g.priority, g.start_s) for g in s.clients] == [
        (2, 20000, "normal", 0.0), (1, 500, "high", 5.0)]
    (fault,) = s.faults
    assert (fault.kind, fault.servers, fault.back_after_s) == ("kill", (0,), 5.0)


def test_request_ms_per_server_gives_each_server_its_speed():
    data = base()
    data["servers"] = [{"count": 3, "request_ms": [50, 100, 200]}, {"count": 1, "gpu": "h200"}]
    s = parse(data)
    assert [x.request_ms for x in s.servers] == [50, 100, 200, None]
    assert s.servers[3].gpu == "h200"


def test_servers_an_add_fault_brings_are_not_listed_at_the_start():
    data = base()
    data["faults"] = [{"at_s": 3, "kind": "add", "server": [1, 2]}]
    assert parse(data).initially_listed() == {0}


@pytest.mark.parametrize(("edit", "names"), [
    (lambda d: d.update(sever=[]), "sever: unknown key"),
    (lambda d: d["servers"][0].update(request_s=1), "servers[0].request_s: unknown key"),
    (lambda d: d["servers"][0].update(count=0), "servers[0].count"),
    (lambda d: d["servers"][0].update(instances=1.5), "servers[0].instances"),
    (lambda d: d["servers"][0].update(request_ms=[1, 2]), "servers[0].request_ms"),
    (lambda d: d["servers"][0].update(request_ms=-1), "servers[0].request_ms"),
    (lambda d: d["servers"][0].update(gpu="h200"), "servers[0].request_ms"),
    (lambda d: d["servers"][0].update(gpu="a100", request_ms=None), "servers[0].gpu"),
    (lambda d: d["servers"][0].update(batching="yes"), "servers[0].batching"),
    (lambda d: d["clients"][1].update(priority="urgent"), "clients[1].priority"),
    (lambda d: d["clients"][0].pop("frames"), "clients[0].frames"),
    (lambda d: d["clients"][0].update(start_s=True), "clients[0].start_s"),
    (lambda d: d["faults"][0].update(kind="melt"), "faults[0].kind"),
    (lambda d: d["faults"][0].update(server=3), "faults[0].server"),
    (lambda d: d["faults"][0].update(server=[0, 7]), "faults[0].server[1]"),
    (lambda d: d["faults"][0].update(kind="remove"), "faults[0].back_after_s"),
    (lambda d: d.update(policy=[1]), "policy"),
    (lambda d: d.update(servers=[]), "servers"),
    (lambda d: d.update(clients="many"), "clients"),
])
def test_a_bad_key_or_value_is_named(edit, names):
    data = base()
    edit(data)
    with pytest.raises(ScenarioError) as err:
        parse(data)
    assert str(err.value).startswith(names)
    assert "\n" not in str(err.value)


def test_a_file_that_is_not_yaml_is_one_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("servers: [\n")
    with pytest.raises(ScenarioError, match=r"not YAML \(line"):
        load(path)
    with pytest.raises(ScenarioError, match="no-such"):
        load(tmp_path / "no-such.yaml")


@pytest.mark.server
def test_the_command_line_exits_2_with_one_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(ISSUE_EXAMPLE.replace("max_queue: 0", "max_queue: -1"))
    proc = subprocess.run([sys.executable, "-m", "simulation", "run", str(path), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "servers[0].max_queue" in proc.stderr
