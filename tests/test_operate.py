"""Operating the shared service: locked-down servers, `orchestrator status`, dashboards and alerts.

Real tritonservers with the fast numpy toy models on loopback. Anonymous clients (gRPC and HTTP)
are refused every administrative protocol, the server stays up and keeps serving; the admin key
opens them where the model-control mode allows.
"""

from __future__ import annotations

import glob
import os
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
        deadline = time.monotonic() + 60
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
