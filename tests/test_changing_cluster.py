"""A cluster that changes under a run: pinned model identity, versions, servers found mid-run.

Real tritonservers with the toy models (a pure function of each row, version V adding V-1 to
every value), so every run must write the bytes of an undisturbed one-server run of the version
it pinned. A server restarted with other weights, width or precision is refused and executes
nothing (Triton's own statistics); servers added to a file:/// list or a dns:/// name mid-run
take rows; servers removed get no more requests.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from predict_fixtures import (
    ROOT,
    crash,
    orchestrator_cmd,
    outputs_of,
    predict_args,
    rows_executed,
    run_cli,
    wait_for_window,
    write_coding_fasta,
    write_toy_classifier,
    write_toy_repository,
)
from timing import margin

from orchestrator.embed.triton.client import EmbeddingClient
from orchestrator.embed.triton.discovery import Discovery, parse_servers
from orchestrator.embed.triton.server import TritonServer, free_port
from orchestrator.errors import InputError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("changing")
    # 240 frames: 15 windows, 30 requests of 8 rows per model (several seconds at 0.3 s a batch)
    fasta = write_coding_fasta(root / "in.fa", records=60, length=2000, seed=21)
    clf = write_toy_classifier(root / "clf.safetensors")
    return root, fasta, clf


def _repo(root: Path, **toy) -> Path:
    return write_toy_repository(root / f"repo_{time.monotonic_ns()}", **toy)


@pytest.fixture(scope="module")
def reference(data):
    """Version 1 (fp32) on one server, alone: the bytes every run pinned to version 1 writes."""
    root, fasta, clf = data
    with TritonServer(_repo(root, precision="fp32")) as server:
        proc = run_cli("predict", *predict_args(fasta, clf, server.grpc_url), "-o", str(root / "ref"))
    assert proc.returncode == 0, proc.stderr
    return outputs_of(root / "ref")


def _run_json(outdir: Path) -> dict:
    return json.loads((outdir / "run.json").read_text())


def _by_url(outdir: Path) -> dict[str, dict]:
    return {e["url"]: e for e in _run_json(outdir)["endpoints"]}


def _start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A background predict whose stderr goes to `log`, so a test can wait for a line mid-run."""
    import os

    return subprocess.Popen(orchestrator_cmd("predict", *args), cwd=ROOT, text=True,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            env={**os.environ, **(env or {})})


def _wait_for_line(proc: subprocess.Popen, log: Path, text: str) -> None:
    deadline = time.monotonic() + margin(120)
    while text not in log.read_text():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def _finish(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return log.read_text()


def _ports() -> dict[str, int]:
    return {"grpc_port": free_port(), "http_port": free_port(), "metrics_port": free_port()}


# -- a server restarted with another model ----------------------------------------------------------
@pytest.mark.server
@pytest.mark.parametrize("change, word", [
    ({"weights_tag": "-retrained"}, "weights_sha256"),
    ({"width": 16}, "width"),
    ({"precision": "fp16"}, "precision"),
], ids=["checksum", "width", "precision"])
def test_server_restarted_with_another_model_is_refused(data, reference, tmp_path, change, word):
    """One of two servers killed mid-run and started again on the same ports serving other
    weights (or width, or precision): refused for the rest of the run with one warning line,
    it executes no row (Triton's statistics stay 0), the run completes with the bytes of a run
    alone, and run.json names the refusal with what the server serves."""
    root, fasta, clf = data
    out, log = tmp_path / "o", tmp_path / "err.log"
    ports = _ports()
    with ExitStack() as stack:
        good = stack.enter_context(TritonServer(_repo(root, delay=0.3, precision="fp32")))
        with TritonServer(_repo(root, delay=0.3, precision="fp32"), **ports) as first:
            url = first.grpc_url
            proc = _start([*predict_args(fasta, clf, good.grpc_url, url), "-o", str(out)], log)
            wait_for_window(proc, out)
            crash(first)
        other = {"precision": "fp32", **change}
        restarted = stack.enter_context(TritonServer(_repo(root, **other), **ports))
        _wait_for_line(proc, log, f"Triton at {url} refused")
        err = _finish(proc, log)
        executed = rows_executed(restarted.grpc_url)
    assert proc.returncode == 0, err
    assert executed == {"dnabert_s": 0, "esm2": 0}
    assert outputs_of(out) == reference
    warnings = [line for line in err.splitlines() if "refused" in line]
    assert len(warnings) == 1 and url in warnings[0] and word in warnings[0]
    refused = _by_url(out)[url]
    assert refused["state"] == "refused" and word in refused["refused"]
    assert refused["models"]["dnabert_s"]["version"] == "1"
    if word == "weights_sha256":
        assert refused["models"]["dnabert_s"]["weights_sha256"] == "toy-dnabert_s-retrained"
    assert _by_url(out)[good.grpc_url]["rows"] > 0


@pytest.mark.server
def test_only_refused_servers_left_is_an_outage(data, tmp_path):
    """The one server comes back serving other weights: no endpoint with the run's identity is
    left, so after the retry deadline the run ends with exit 3 and its checkpoint intact."""
    root, fasta, clf = data
    out, log = tmp_path / "o", tmp_path / "err.log"
    ports = _ports()
    with ExitStack() as stack:
        with TritonServer(_repo(root, delay=0.3), **ports) as first:
            proc = _start([*predict_args(fasta, clf, first.grpc_url), "-o", str(out)], log,
                          {"VIRNUCPRO_RETRY_DEADLINE": "5"})
            wait_for_window(proc, out)
            crash(first)
        restarted = stack.enter_context(TritonServer(_repo(root, weights_tag="-other"), **ports))
        err = _finish(proc, log)
        executed = rows_executed(restarted.grpc_url)
    assert proc.returncode == 3, err
    assert "refused" in err and "no Triton endpoint answered" in err
    assert executed == {"dnabert_s": 0, "esm2": 0}
    assert (out / ".virnucpro_state" / "manifest.json").exists()
    assert not (out / "prediction_results.txt").exists()


# -- file:/// endpoint lists ------------------------------------------------------------------------
@pytest.mark.server
def test_file_list_grows_and_shrinks_mid_run(data, reference, tmp_path):
    """A run on a list of one server: a second server added to the list takes rows of the run;
    the first, removed from the list, gets no request after that; identical outputs."""
    root, fasta, clf = data
    out, log = tmp_path / "o", tmp_path / "err.log"
    listing = tmp_path / "servers.txt"
    with ExitStack() as stack:
        a = stack.enter_context(TritonServer(_repo(root, delay=0.3)))
        b = stack.enter_context(TritonServer(_repo(root, delay=0.3)))
        listing.write_text(f"# the run's servers\n{a.grpc_url}\n")
        proc = _start([*predict_args(fasta, clf, f"file://{listing}"), "-o", str(out)], log)
        wait_for_window(proc, out)
        listing.write_text(f"{a.grpc_url}\n{b.grpc_url}  # added\n")
        _wait_for_line(proc, log, f"Triton at {b.grpc_url} answers again")
        listing.write_text(f"{b.grpc_url}\n")
        _wait_for_line(proc, log, f"Triton at {a.grpc_url} is no longer listed")
        # a request sent to it from now on would fail and be counted: there is none
        crash(a)
        err = _finish(proc, log)
        b_rows = rows_executed(b.grpc_url)
    assert proc.returncode == 0, err
    assert outputs_of(out) == reference
    endpoints = _by_url(out)
    assert endpoints[b.grpc_url]["rows"] > 0 and b_rows["dnabert_s"] > 0
    removed = endpoints[a.grpc_url]
    assert removed["state"] == "gone" and removed["rows"] > 0
    assert removed["failures"] == removed["down"] == 0
    assert f"Triton at {a.grpc_url} failed" not in err


@pytest.mark.server
def test_discovery_bad_input_is_one_line_exit_2(data, tmp_path):
    _, fasta, clf = data
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("node1:8001\nnode2\n")
    cases = {
        "lists no endpoint": ["--server", f"file://{empty}"],
        "cannot read it": ["--server", f"file://{tmp_path}/missing.txt"],
        "line 2: 'node2' is not HOST:PORT": ["--server", f"file://{bad}"],
        "discovery interval 'soon'": ["--server", "dns:///x.test:8001", "--discovery-interval", "soon"],
        "--model-version 'v2'": ["--server", "127.0.0.1:1", "--model-version", "v2"],
    }
    for message, extra in cases.items():
        out = tmp_path / f"o{len(message)}"
        proc = run_cli("predict", *predict_args(fasta, clf), *extra, "-o", str(out))
        assert proc.returncode == 2, (message, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (message, proc.stderr)
        assert not out.exists()
    env = run_cli("predict", *predict_args(fasta, clf, "dns:///x.test:8001"), "-o",
                  str(tmp_path / "env"), env={"VIRNUCPRO_DISCOVERY_INTERVAL": "0"})
    assert env.returncode == 2 and "VIRNUCPRO_DISCOVERY_INTERVAL" in env.stderr


def test_file_list_that_breaks_mid_run_keeps_its_endpoints(tmp_path):
    """A list being rewritten (empty or half-written for a moment) keeps its previous endpoints."""
    listing = tmp_path / "servers.txt"
    listing.write_text("127.0.0.1:9001\n")
    discovery = Discovery(parse_servers([f"file://{listing}", "127.0.0.1:9003"]), 30.0)
    assert discovery.refresh(0.0, force=True) == ["127.0.0.1:9001", "127.0.0.1:9003"]
    listing.write_text("")
    assert discovery.refresh(10.0) is None
    listing.write_text("127.0.0.1:9002 # new\n")
    assert discovery.refresh(20.0) == ["127.0.0.1:9002", "127.0.0.1:9003"]


# -- dns:/// names resolved again ---------------------------------------------------------------------
def _toy_rows(strings: list[str], shift: float = 0.0) -> np.ndarray:
    """The toy model's rows, computed here (same formula as its model.py)."""
    rows = []
    for s in strings:
        b = np.frombuffer(s.encode(), dtype=np.uint8).astype(np.int64)
        rows.append(np.bincount(b % 8, minlength=8).astype(np.float32) / max(1, len(b)) + shift)
    return np.stack(rows).astype(np.float32)


@pytest.mark.server
def test_dns_name_resolved_again_during_the_run(data):
    """An in-process resolver standing in for DNS (a headless Service): no address at start (the
    client waits), then one, then two (the new one takes rows), then only the second (the first
    gets no request after that). Every answer equals the toy formula."""
    root, _, _ = data
    rng = np.random.default_rng(4)
    seqs = ["".join(rng.choice(list("ACGT"), size=60)) for _ in range(64)]
    prots = [s[:20].replace("T", "M") for s in seqs]
    answers: list[str] = []
    lock = threading.Lock()

    def resolver(host: str, port: int) -> list[str]:
        assert (host, port) == ("virnucpro-triton.test", 8001)
        with lock:
            return list(answers)

    def until(condition) -> None:
        deadline = time.monotonic() + margin(60)
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def states(client: EmbeddingClient) -> dict[str, str]:
        return {e["url"]: e["state"] for e in client.endpoints_info()}

    with ExitStack() as stack:
        a = stack.enter_context(TritonServer(_repo(root, delay=0.05)))
        b = stack.enter_context(TritonServer(_repo(root, delay=0.05)))

        def first_pod() -> None:
            time.sleep(1.0)  # the Service has no ready pod when the run starts
            with lock:
                answers.append(a.grpc_url)

        threading.Thread(target=first_pod, daemon=True).start()
        client = stack.enter_context(EmbeddingClient(
            "dns:///virnucpro-triton.test:8001", batch_size=8, resolver=resolver,
            discovery_interval_s=0.2, retry_deadline=60))
        assert client.submit(seqs, prots).result()[0].shape == (64, 8)
        with lock:
            answers.append(b.grpc_url)
        until(lambda: states(client).get(b.grpc_url) == "up")
        for _ in range(4):
            dna, prot = client.submit(seqs, prots).result()
        assert rows_executed(b.grpc_url)["dnabert_s"] > 0
        with lock:
            answers.remove(a.grpc_url)
        until(lambda: states(client)[a.grpc_url] == "gone")
        crash(a)  # a request sent to it from now on would fail and be counted: there is none
        for _ in range(4):
            dna, prot = client.submit(seqs, prots).result()
        removed = {e["url"]: e for e in client.endpoints_info()}[a.grpc_url]
    assert removed["failures"] == removed["down"] == 0 and removed["rows"] > 0
    assert np.array_equal(dna, _toy_rows(seqs)) and np.array_equal(prot, _toy_rows(prots))


# -- model versions -----------------------------------------------------------------------------------
def _version_rows(url: str, version: str) -> int:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics("dnabert_s", model_version=version, as_json=True)
        return sum(int(s.get("inference_count", 0) or 0) for s in stats["model_stats"])
    finally:
        client.close()


@pytest.mark.server
def test_versions_1_and_2_served_side_by_side(data, reference, tmp_path):
    """One repository serving versions 1 and 2 with different outputs: --model-version 1 gets
    only version-1 answers (the bytes of a version-1 server), --model-version 2 and the default
    (the newest every endpoint serves) only version 2; a version nobody serves is exit 2."""
    root, fasta, clf = data
    with TritonServer(_repo(root, precision="fp32", versions=(1, 2))) as server:
        url = server.grpc_url
        runs = {}
        for name, extra in (("v1", ["--model-version", "1"]), ("v2", ["--model-version", "2"]),
                            ("default", [])):
            before = {v: _version_rows(url, v) for v in ("1", "2")}
            proc = run_cli("predict", *predict_args(fasta, clf, url), *extra,
                           "-o", str(tmp_path / name))
            assert proc.returncode == 0, proc.stderr
            runs[name] = {v: _version_rows(url, v) - before[v] for v in ("1", "2")}
        missing = run_cli("predict", *predict_args(fasta, clf, url), "--model-version", "3",
                          "-o", str(tmp_path / "v3"))
        status = run_cli("status", "--server", url, "--interval", "0.1")
    assert runs["v1"]["1"] > 0 and runs["v1"]["2"] == 0
    assert runs["v2"]["2"] > 0 and runs["v2"]["1"] == 0
    assert runs["default"]["2"] > 0 and runs["default"]["1"] == 0
    assert outputs_of(tmp_path / "v1") == reference
    assert outputs_of(tmp_path / "v2") == outputs_of(tmp_path / "default") != reference
    models = {m["name"]: m for m in _run_json(tmp_path / "v2")["models"]}
    assert models["esm2"]["version"] == "2" and models["esm2"]["weights_sha256"] == "toy-esm2-v2"
    assert missing.returncode == 2
    assert "no endpoint serves dnabert_s version 3" in missing.stderr.strip().splitlines()[-1]
    assert "serves v1,2" in status.stdout and "a new run would pin dnabert_s v2, esm2 v2" in status.stdout


@pytest.mark.server
def test_rollout_from_version_1_to_2(data, reference, tmp_path):
    """The rollout recipe on a file:/// list: a run pinned to 1 on an old server (version 1
    only); a new server serving 1 and 2 joins and the old one leaves: the run finishes on the
    new server's version 1 (its version 2 executes nothing), identical to a run alone. A server
    serving only version 2 that joins is refused (version 1 not served). A run started after the
    rollout pins version 2."""
    root, fasta, clf = data
    out, log = tmp_path / "o", tmp_path / "err.log"
    listing = tmp_path / "servers.txt"
    with ExitStack() as stack:
        old = stack.enter_context(TritonServer(_repo(root, delay=0.3, precision="fp32")))
        new = stack.enter_context(TritonServer(_repo(root, delay=0.3, precision="fp32",
                                                     versions=(1, 2))))
        only2 = stack.enter_context(TritonServer(_repo(root, precision="fp32", versions=(2,))))
        listing.write_text(f"{old.grpc_url}\n")
        proc = _start([*predict_args(fasta, clf, f"file://{listing}"), "-o", str(out)], log)
        wait_for_window(proc, out)
        listing.write_text(f"{old.grpc_url}\n{new.grpc_url}\n")  # surge: the new pod is ready
        _wait_for_line(proc, log, f"Triton at {new.grpc_url} answers again")
        listing.write_text(f"{new.grpc_url}\n{only2.grpc_url}\n")  # the old pod is removed
        _wait_for_line(proc, log, f"Triton at {only2.grpc_url} refused")
        err = _finish(proc, log)
        new_rows = {v: _version_rows(new.grpc_url, v) for v in ("1", "2")}
        after = run_cli("predict", *predict_args(fasta, clf, f"file://{listing}"),
                        "-o", str(tmp_path / "after"))
    assert proc.returncode == 0, err
    assert outputs_of(out) == reference
    assert new_rows["1"] > 0 and new_rows["2"] == 0  # the run pinned to 1 sent version 2 nothing
    endpoints = _by_url(out)
    assert endpoints[new.grpc_url]["rows"] > 0 and endpoints[old.grpc_url]["state"] == "gone"
    assert endpoints[only2.grpc_url]["state"] == "refused"
    assert "dnabert_s version 1 not served (serves 2)" in endpoints[only2.grpc_url]["refused"]
    assert after.returncode == 0, after.stderr
    assert [m["version"] for m in _run_json(tmp_path / "after")["models"]] == ["2", "2"]


def test_model_version_values():
    from orchestrator.embed.triton.endpoints import parse_model_versions

    assert parse_model_versions(["2"]) == {"dnabert_s": "2", "esm2": "2"}
    assert parse_model_versions(["1", "esm2=3"]) == {"dnabert_s": "1", "esm2": "3"}
    for bad in ("0", "latest", "bert=2", "esm2="):
        with pytest.raises(InputError):
            parse_model_versions([bad])


# -- export --version ---------------------------------------------------------------------------------
@pytest.mark.server
def test_export_adds_a_version_next_to_the_old_one(demo_artifacts, tmp_path):
    """`export demo --version 2` into a copy of the demo artifacts: version 2's weights next to
    version 1's, each version's checksum in the configs; a real tritonserver serves both (the
    shipped version_policy), a new run would pin 2 and a run pinned to 1 sees version 1's
    checksum. The same version again, or version 0, is one line and exit 2."""
    import shutil
    import sys

    from encoders import weights_sha256

    out = tmp_path / "artifacts"
    shutil.copytree(demo_artifacts, out)
    cmd = [sys.executable, "-m", "export", "demo", "--out", str(out), "--seed", "1", "--version"]
    proc = subprocess.run([*cmd, "2"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    repo = out / "model_repository"
    sha = {}
    for model in ("dnabert_s", "esm2"):
        sha[model] = {v: weights_sha256(model, repo / model / v / "weights") for v in ("1", "2")}
        assert sha[model]["1"] != sha[model]["2"]
        for config in (repo / model / "config.pbtxt", repo / model / "configs" / "gpu.pbtxt"):
            text = config.read_text()
            for v in ("1", "2"):
                assert f'key: "weights_sha256_{v}"\n    value: {{ string_value: "{sha[model][v]}" }}' in text
    for again in ("2", "0"):
        refused = subprocess.run([*cmd, again], cwd=ROOT, capture_output=True, text=True,
                                 timeout=600)
        assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    with TritonServer(repo, ready_timeout=180) as server:
        status = run_cli("status", "--server", server.grpc_url, "--interval", "0.1")
        with EmbeddingClient(server.grpc_url, model_versions={"dnabert_s": "1", "esm2": "1"}) as c:
            pinned_1 = {m["name"]: m for m in c.models_info()}
    assert "serves v1,2" in status.stdout
    assert "a new run would pin dnabert_s v2, esm2 v2" in status.stdout
    assert f"sha {sha['esm2']['2'][:12]}" in status.stdout
    assert pinned_1["esm2"]["weights_sha256"] == sha["esm2"]["1"]
    assert pinned_1["dnabert_s"]["version"] == "1"
