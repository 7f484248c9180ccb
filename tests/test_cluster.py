"""One run over many real tritonservers: same bytes as one server, failover, refusal, TLS, lock.

The toy models' output is a pure function of each row, so every run here must produce the bytes
of a one-server, one-window-at-a-time run (`reference`), whatever the number of servers, the
look-ahead or the failures along the way.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
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
    run_cli,
    start_predict,
    stderr_of,
    wait_for_window,
    windows_done,
    write_coding_fasta,
    write_toy_classifier,
    write_toy_repository,
)
from timing import margin

from orchestrator.embed.triton.client import EmbeddingClient
from orchestrator.embed.triton.discovery import parse_servers, resolve_servers
from orchestrator.embed.triton.endpoints import parse_headers
from orchestrator.embed.triton.server import TritonServer, free_port
from orchestrator.errors import InputError

HEADER_FORWARDING = "--grpc-header-forward-pattern=authorization|x-.*"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    fasta = write_coding_fasta(root / "in.fa", records=24, length=2000, seed=21)
    clf = write_toy_classifier(root / "clf.safetensors")
    return root, fasta, clf


def _servers(stack: ExitStack, root: Path, n: int, *, delay: float, instances=(1,),
             tag: str = "", record: bool = False) -> list[TritonServer]:
    servers = []
    for i in range(n):
        folder = root / f"repo{tag}{i}_{time.monotonic_ns()}"
        repo = write_toy_repository(
            folder, delay=delay, instances=instances[i % len(instances)],
            record_parameters_to=folder / "parameters.jsonl" if record else None)
        servers.append(stack.enter_context(TritonServer(repo, extra_flags=[HEADER_FORWARDING])))
    return servers


@pytest.fixture(scope="module")
def trio(data):
    """Three fast servers with 1, 2 and 1 instances per model, recording request parameters."""
    root, _, _ = data
    with ExitStack() as stack:
        yield _servers(stack, root, 3, delay=0.02, instances=(1, 2, 1), record=True)


@pytest.fixture(scope="module")
def reference(data, trio):
    """One server, one window at a time (no look-ahead): the bytes every other run must give."""
    root, fasta, clf = data
    proc = run_cli("predict", *predict_args(fasta, clf, trio[0].grpc_url), "--lookahead", "0",
                   "-o", str(root / "ref"))
    assert proc.returncode == 0, proc.stderr
    return outputs_of(root / "ref")


def _run_json(outdir: Path) -> dict:
    return json.loads((outdir / "run.json").read_text())






# -- addresses and headers --------------------------------------------------------------------------
def test_server_lists_repeat_and_split_on_commas():
    assert parse_servers(["a:8001,b:8001", " c:8002 ", "a:8001"]) == ["a:8001", "b:8001", "c:8002"]
    assert parse_servers(["grpc://[::1]:8001"]) == ["[::1]:8001"]
    assert parse_servers(["dns:///triton.svc:8001,a:1"]) == ["dns:///triton.svc:8001", "a:1"]
    for bad in ("a", "a:0", "a:99999", "a:b", ","):
        with pytest.raises(InputError):
            parse_servers([bad])


def test_headers_follow_grpc_metadata_rules():
    assert parse_headers(["Authorization=Bearer x=y", "x-team=virome"]) == (
        ("authorization", "Bearer x=y"), ("x-team", "virome"))
    for bad in ("novalue", "=v", "grpc-timeout=1", "key-bin=x", "bad key=v", "k=caf\u00e9"):
        with pytest.raises(InputError):
            parse_headers([bad])


@pytest.mark.server
def test_cli_rejects_a_bad_server_list(data, tmp_path):
    _, fasta, clf = data
    proc = run_cli("predict", *predict_args(fasta, clf, "node1:8001,node2"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "'node2' is not HOST:PORT" in proc.stderr


# -- many servers ------------------------------------------------------------------------------------
@pytest.mark.server
def test_two_servers_identical_to_one_and_both_used(data, trio, reference, tmp_path):
    _, fasta, clf = data
    out = tmp_path / "o"
    proc = run_cli("predict", *predict_args(fasta, clf, trio[0].grpc_url, trio[1].grpc_url), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert outputs_of(out) == reference
    endpoints = _run_json(out)["endpoints"]
    assert [e["url"] for e in endpoints] == [trio[0].grpc_url, trio[1].grpc_url]
    assert all(e["rows"] > 0 and e["failures"] == 0 for e in endpoints)
    # each endpoint's in-flight limit comes from its own config: 2 x its instance count
    assert [e["max_in_flight"]["esm2"] for e in endpoints] == [2, 4]
    # the 2-instance server takes the larger share
    assert endpoints[1]["rows"] > endpoints[0]["rows"]


@pytest.mark.server
def test_three_servers_from_env_list_with_lookahead_and_headers(data, trio, reference, tmp_path):
    _, fasta, clf = data
    out = tmp_path / "o"
    for s in trio:
        (s.model_repository / "parameters.jsonl").unlink(missing_ok=True)
    env = {"VIRNUCPRO_TRITON_URL": ",".join(s.grpc_url for s in trio)}
    proc = run_cli("predict", *predict_args(fasta, clf), "--lookahead", "4", "-o", str(out),
                   "--header", "Authorization=Bearer t0ken", "--header", "x-team=virome", env=env)
    assert proc.returncode == 0, proc.stderr
    assert outputs_of(out) == reference
    endpoints = _run_json(out)["endpoints"]
    assert len(endpoints) == 3 and all(e["rows"] > 0 for e in endpoints)
    for s in trio:  # every request reached the models with both headers
        lines = (s.model_repository / "parameters.jsonl").read_text().splitlines()
        assert lines
        for line in lines:
            params = json.loads(line)
            assert params.get("authorization") == "Bearer t0ken"
            assert params.get("x-team") == "virome"


@pytest.mark.server
def test_dns_name_becomes_one_endpoint_per_address(data, trio, reference, tmp_path):
    """`dns:///NAME:PORT` (a headless Service) is every address NAME resolves to."""
    _, fasta, clf = data
    port = trio[1].grpc_port
    assert f"127.0.0.1:{port}" in resolve_servers([f"dns:///localhost:{port}"])
    out = tmp_path / "o"
    proc = run_cli("predict", *predict_args(fasta, clf, f"dns:///localhost:{port}"), "-o", str(out),
                   env={"VIRNUCPRO_CONNECT_TIMEOUT": "2"})
    assert proc.returncode == 0, proc.stderr
    assert outputs_of(out) == reference
    endpoints = {e["url"]: e for e in _run_json(out)["endpoints"]}
    assert endpoints[f"127.0.0.1:{port}"]["rows"] > 0
    # a name that does not resolve (yet: a headless Service without ready pods) is waited for
    unknown = run_cli("predict", *predict_args(fasta, clf, "dns:///no-such-host.invalid:8001"),
                      "-o", str(tmp_path / "u"), env={"VIRNUCPRO_RETRY_DEADLINE": "2"})
    assert unknown.returncode == 3
    assert "cannot resolve dns:///no-such-host.invalid:8001" in unknown.stderr


@pytest.mark.server
def test_requests_of_the_next_window_go_out_before_the_last_one_returns(data):
    """No barrier between windows: window 2's first request is sent while window 1 is still in
    flight (and window 1 still completes first)."""
    root, _, _ = data
    rng = np.random.default_rng(3)
    seqs = ["".join(rng.choice(list("ACGT"), size=60)) for _ in range(64)]
    prots = [s[:20].replace("T", "M") for s in seqs]
    with ExitStack() as stack:
        (server,) = _servers(stack, root, 1, delay=0.1, tag="overlap")
        client = stack.enter_context(EmbeddingClient(server.grpc_url, batch_size=8))
        first = client.submit(seqs, prots)
        second = client.submit(seqs, prots)
        a, b = first.result(), second.result()
    assert second.first_sent < first.completed
    assert first.completed <= second.completed
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# -- endpoints that differ or are missing ---------------------------------------------------------
@pytest.mark.server
def test_endpoint_with_other_weights_is_refused_before_any_row(data, trio, tmp_path):
    _, fasta, clf = data
    with TritonServer(write_toy_repository(tmp_path / "other", weights_tag="-retrained")) as other:
        out = tmp_path / "o"
        proc = run_cli("predict", *predict_args(fasta, clf, trio[0].grpc_url, other.grpc_url),
                       "-o", str(out))
        stats = _dna_rows_seen(other)
    assert proc.returncode == 2
    msg = proc.stderr.strip().splitlines()[-1]
    assert other.grpc_url in msg and "weights_sha256" in msg and "dnabert_s" in msg
    assert stats == 0
    assert windows_done(out) == 0 and not (out / "prediction_results.txt").exists()


def _dna_rows_seen(server: TritonServer) -> int:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        stats = client.get_inference_statistics("dnabert_s", as_json=True)
        return int(stats["model_stats"][0].get("inference_count", 0) or 0)
    finally:
        client.close()


@pytest.mark.server
def test_endpoint_down_at_start_is_reported_and_the_run_goes_on(data, trio, reference, tmp_path, server_source):
    _, fasta, clf = data
    dead = f"127.0.0.1:{free_port()}"
    out = tmp_path / "o"
    proc = run_cli("predict", *predict_args(fasta, clf, trio[2].grpc_url, dead), "-o", str(out),
                   env={"VIRNUCPRO_CONNECT_TIMEOUT": "2"})
    assert proc.returncode == 0, proc.stderr
    assert f"Triton at {dead} is unavailable at start" in proc.stderr
    assert outputs_of(out) == reference
    by_url = {e["url"]: e for e in _run_json(out)["endpoints"]}
    assert by_url[dead]["state"] == "down" and by_url[dead]["rows"] == 0
    assert by_url[dead]["unavailable_seconds"] > 0


@pytest.mark.server
def test_no_endpoint_usable_exit_3_names_each(data, tmp_path):
    _, fasta, clf = data
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    proc = run_cli("predict", *predict_args(fasta, clf, ",".join(dead)), "-o", str(tmp_path / "o"),
                   env={"VIRNUCPRO_CONNECT_TIMEOUT": "2"})
    assert proc.returncode == 3
    assert all(u in proc.stderr for u in dead) and "Traceback" not in proc.stderr


# -- failover -------------------------------------------------------------------------------------


@pytest.mark.server
def test_one_of_three_killed_mid_run_completes_identically(data, reference, tmp_path, server_source):
    root, fasta, clf = data
    out = tmp_path / "o"
    with ExitStack() as stack:
        servers = _servers(stack, root, 3, delay=0.5, tag="kill")
        proc = start_predict([*predict_args(fasta, clf, *(s.grpc_url for s in servers)), "-o", str(out)])
        wait_for_window(proc, out)
        crash(servers[1])
        err = stderr_of(proc)
    assert proc.returncode == 0, err
    assert outputs_of(out) == reference
    by_url = {e["url"]: e for e in _run_json(out)["endpoints"]}
    killed = by_url[servers[1].grpc_url]
    assert killed["failures"] >= 1 and killed["state"] == "down"
    assert killed["unavailable_seconds"] > 0
    survivors = [by_url[s.grpc_url] for s in (servers[0], servers[2])]
    assert all(e["failures"] == 0 and e["rows"] > 0 for e in survivors)


@pytest.mark.server
def test_endpoint_that_comes_up_mid_run_is_admitted(data, reference, tmp_path, server_source):
    """Down at start, started once the run is going: the health probe admits it and it takes
    requests; the run records how long it was unavailable."""
    root, fasta, clf = data
    out = tmp_path / "o"
    late_ports = {"grpc_port": free_port(), "http_port": free_port(), "metrics_port": free_port()}
    late_url = f"127.0.0.1:{late_ports['grpc_port']}"
    with ExitStack() as stack:
        (first,) = _servers(stack, root, 1, delay=2.0, tag="early")
        proc = start_predict([*predict_args(fasta, clf, first.grpc_url, late_url), "-o", str(out)],
                      {"VIRNUCPRO_CONNECT_TIMEOUT": "1"})
        wait_for_window(proc, out)
        stack.enter_context(TritonServer(write_toy_repository(tmp_path / "late"),
                                         **late_ports))
        err = stderr_of(proc)
    assert proc.returncode == 0, err
    assert f"Triton at {late_url} answers again; re-admitted" in err
    assert outputs_of(out) == reference
    late = {e["url"]: e for e in _run_json(out)["endpoints"]}[late_url]
    assert late["state"] == "up" and late["rows"] > 0 and late["unavailable_seconds"] > 0


@pytest.mark.server
def test_all_servers_stopped_exit_3_then_resume_on_other_servers(data, reference, tmp_path, server_source):
    root, fasta, clf = data
    out = tmp_path / "o"
    env = {"VIRNUCPRO_RETRY_DEADLINE": "2"}
    with ExitStack() as stack:
        first = _servers(stack, root, 2, delay=0.5, tag="ab")
        proc = start_predict([*predict_args(fasta, clf, *(s.grpc_url for s in first)), "-o", str(out)], env)
        wait_for_window(proc, out)
        for s in first:
            crash(s)
        err = stderr_of(proc, timeout=60)
    assert proc.returncode == 3, err
    assert "no Triton endpoint answered" in err and "rerun" in err
    assert windows_done(out) >= 1
    with ExitStack() as stack:
        second = _servers(stack, root, 2, delay=0.0, tag="cd")
        again = run_cli("predict", *predict_args(fasta, clf, *(s.grpc_url for s in second)),
                        "-o", str(out), env=env)
    assert again.returncode == 0, again.stderr
    assert "resuming" in again.stderr
    assert outputs_of(out) == reference


# -- one run per output folder ----------------------------------------------------------------------
@pytest.mark.server
def test_second_run_into_a_live_outdir_is_refused_and_a_killed_run_resumes(data, reference,
                                                                            tmp_path):
    root, fasta, clf = data
    out = tmp_path / "o"
    with ExitStack() as stack:
        (server,) = _servers(stack, root, 1, delay=1.0, tag="lock")
        args = [*predict_args(fasta, clf, server.grpc_url), "-o", str(out)]
        first = start_predict(args)
        wait_for_window(first, out)
        t0 = time.monotonic()
        second = run_cli("predict", *args)
        assert time.monotonic() - t0 < margin(20)
        assert second.returncode == 2
        assert f"pid {first.pid} on host {socket.gethostname()}" in second.stderr
        assert first.poll() is None  # the refused run did not disturb the live one
        first.send_signal(signal.SIGKILL)
        first.wait()
        third = run_cli("predict", *args)
    assert third.returncode == 0, third.stderr
    assert "resuming" in third.stderr
    assert outputs_of(out) == reference


# -- TLS ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pki(data):
    from tls_fixtures import CertificateAuthority

    root, _, _ = data
    ca = CertificateAuthority(root / "pki")
    return {"ca": ca.files.cert, "server": ca.issue("server", server=True),
            "client": ca.issue("client", server=False),
            "other_ca": CertificateAuthority(root / "pki-other", name="someone else").files.cert}


def _serve(repo: Path, *tls_args: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    cmd = orchestrator_cmd("serve", "--model-repository", str(repo), "--grpc-port", str(port),
                           "--http-port", str(free_port()), "--metrics-port", str(free_port()),
                           *tls_args)
    proc = subprocess.Popen(cmd, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + margin(120)
    for line in proc.stderr:
        if "ready:" in line:
            assert "(TLS" in line
            return proc, f"localhost:{port}"
        assert time.monotonic() < deadline
    raise AssertionError(f"serve exited {proc.wait()} before ready")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()


TLS_MESSAGE = re.compile(r"TLS problem with Triton at localhost:\d+: ")


@pytest.mark.server
@pytest.mark.parametrize("mutual", [False, True], ids=["tls", "mutual-tls"])
def test_tls_server_from_serve(data, pki, tmp_path, mutual):
    root, _, clf = data
    fasta = write_coding_fasta(tmp_path / "small.fa", records=3, length=900, seed=5)
    repo = write_toy_repository(tmp_path / "repo")
    server_args = ["--ssl-cert", str(pki["server"].cert), "--ssl-key", str(pki["server"].key)]
    if mutual:
        server_args += ["--ssl-root-cert", str(pki["ca"])]
    client_cert = ["--ssl-cert", str(pki["client"].cert), "--ssl-key", str(pki["client"].key)]
    proc, url = _serve(repo, *server_args)
    env = {"VIRNUCPRO_CONNECT_TIMEOUT": "5"}
    try:
        def predict(name: str, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
            t0 = time.monotonic()
            done = run_cli("predict", *predict_args(fasta, clf, url), "-o", str(tmp_path / name),
                           *extra, env=env)
            return done, time.monotonic() - t0

        ok, _ = predict("ok", "--ssl-root-cert", str(pki["ca"]), *(client_cert if mutual else []))
        assert ok.returncode == 0, ok.stderr
        assert _run_json(tmp_path / "ok")["parameters"]["tls"].startswith("TLS")
        failures = {
            "plaintext": predict("plain"),
            "system roots": predict("noroot", "--ssl", *(client_cert if mutual else [])),
            "wrong CA": predict("wrongca", "--ssl-root-cert", str(pki["other_ca"]),
                                *(client_cert if mutual else [])),
        }
        if mutual:
            failures["no client cert"] = predict("nocert", "--ssl-root-cert", str(pki["ca"]))
        for case, (done, seconds) in failures.items():
            assert done.returncode == 3, (case, done.stderr)
            last = done.stderr.strip().splitlines()[-1]
            assert TLS_MESSAGE.search(last), (case, last)
            assert seconds < 5 + margin(10), (case, seconds)  # within the connect timeout (+ start-up)
        assert "plaintext" in failures["plaintext"][0].stderr
        assert "certificate" in failures["wrong CA"][0].stderr.lower()
        if mutual:
            assert "client certificate" in failures["no client cert"][0].stderr
    finally:
        _stop(proc)
    assert proc.returncode == 0
