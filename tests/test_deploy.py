"""Deployment files, checked as far as a machine without a Docker engine, Kubernetes or GPU allows.

Compose: Debian's `docker-compose config` accepts the file; the images are built from our
Dockerfiles (whose COPY sources exist), nothing runs `pip install` at start, and the GPU server
keeps what production needs. Kubernetes: `kubectl kustomize` renders base and GPU overlay, and
every rendered object validates against the Kubernetes schemas (`kubernetes-validate`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _dockerfile_sources(dockerfile: Path) -> list[str]:
    """COPY/ADD sources (not --from= stage copies), ARG defaults substituted."""
    text = dockerfile.read_text().replace("\\\n", " ")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    sources = []
    for line in re.findall(r"^(?:COPY|ADD) (.+)$", text, re.M):
        parts = [p for p in line.split() if not p.startswith("--")]
        for src in parts[:-1]:
            sources.append(re.sub(r"\$\{(\w+)(?::-[^}]*)?\}", lambda m: args[m.group(1)], src))
    return sources


@pytest.mark.workflow
@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="Debian's docker-compose is not installed (make setup installs it as root)")
def test_compose_file_is_valid_for_docker_compose():
    proc = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr


def test_compose_builds_our_images_and_installs_nothing_at_start():
    services = {n: s for n, s in _compose()["services"].items() if "build" in s}
    assert set(services) == {"triton", "orchestrator"}
    for name, service in services.items():
        build = service["build"]
        dockerfile = ROOT / build["context"] / build["dockerfile"]
        assert dockerfile.is_file(), name
        started = " ".join(str(x) for x in (service.get("command") or []) + (service.get("entrypoint") or []))
        assert "pip install" not in started, name
        for src in _dockerfile_sources(dockerfile):
            if src.startswith("artifacts/"):  # built by `python -m export`, baked only on request
                assert src == "artifacts/model_repository"
                continue
            assert (ROOT / build["context"] / src).exists(), f"{dockerfile.name}: COPY {src}"


def test_compose_gpu_server_keeps_production_settings():
    triton = _compose()["services"]["triton"]
    assert "--model-config-name=gpu" in triton["command"]
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"] and devices[0]["count"] == "all"
    assert triton["shm_size"] == "16gb"
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert "8002:8002" in triton["ports"]
    assert any(v.endswith(":/models:ro") for v in triton["volumes"])


def test_server_image_installs_dependencies_at_build_and_client_has_no_torch():
    server = (ROOT / "deploy" / "docker" / "server.Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/tritonserver:\$\{TRITON_VERSION\}-pyt-python-py3", server, re.M)
    assert re.search(r"^ARG TRITON_VERSION=\d\d\.\d\d$", server, re.M)
    assert re.search(r"^RUN pip install .*fair-esm==2\.0\.0", server, re.M)
    assert "--model-config-name=gpu" in server
    client = (ROOT / "deploy" / "docker" / "client.Dockerfile").read_text()
    installs = " ".join(re.findall(r"^RUN (.+)$", client, re.M))
    assert "pip install" in installs and "torch" not in installs and "[models" not in installs
    assert re.search(r"^FROM python:3\.\d+-slim$", client, re.M)
    assert 'ENTRYPOINT ["orchestrator"]' in client


def _kustomize(folder: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    proc = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


@pytest.mark.workflow
@pytest.mark.parametrize("variant", ["base", "overlays/gpu"])
def test_kustomize_renders_valid_objects(variant):
    import kubernetes_validate

    objects = _kustomize(KUSTOMIZE / variant)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["Deployment", "HorizontalPodAutoscaler", "Job", "Service"]
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.workflow
def test_gpu_overlay_has_gpus_probes_shm_and_a_headless_service():
    objects = {o["kind"]: o for o in _kustomize(KUSTOMIZE / "overlays" / "gpu")}
    pod = objects["Deployment"]["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    assert "--model-config-name=gpu" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    affinity = pod["spec"]["affinity"]["podAntiAffinity"]
    assert affinity["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == \
        "kubernetes.io/hostname"
    service = objects["Service"]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"] == objects["Deployment"]["spec"]["selector"]["matchLabels"]
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == objects["Deployment"]["metadata"]["name"]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == "triton_queue_time_ms"
    job_args = objects["Job"]["spec"]["template"]["spec"]["containers"][0]["args"]
    server = job_args[job_args.index("--server") + 1]
    assert server == f"dns:///{service['metadata']['name']}:8001"


@pytest.mark.workflow
def test_gpu_overlay_rolls_out_without_taking_capacity_away():
    """Surge before removal (maxUnavailable 0) and readiness gated on both models, so a rolling
    update of the weights never leaves running jobs with fewer ready servers."""
    deployment = {o["kind"]: o for o in _kustomize(KUSTOMIZE / "overlays" / "gpu")}["Deployment"]
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert deployment["spec"]["minReadySeconds"] > 0
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--strict-readiness=true" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"


LOCKDOWN_ENTRY = ["python3", "-m", "orchestrator.embed.triton.lockdown"]


@pytest.mark.workflow
def test_every_server_entry_point_is_locked_down():
    """The image starts tritonserver through the lock-down entry point; compose and Kubernetes
    keep that entry point (they set arguments only) and pass the admin key from outside."""
    server = (ROOT / "deploy" / "docker" / "server.Dockerfile").read_text()
    assert f"ENTRYPOINT {json.dumps(LOCKDOWN_ENTRY)}" in server
    triton = _compose()["services"]["triton"]
    assert "entrypoint" not in triton
    assert triton["environment"]["VIRNUCPRO_ADMIN_KEY"] == "${VIRNUCPRO_ADMIN_KEY:-}"
    for variant in ("base", "overlays/gpu"):
        objects = {o["kind"]: o for o in _kustomize(KUSTOMIZE / variant)}
        container = objects["Deployment"]["spec"]["template"]["spec"]["containers"][0]
        assert "command" not in container
        assert not any("restricted" in a or "model-control-mode" in a for a in container["args"])
        env = {e["name"]: e for e in container["env"]}
        ref = env["VIRNUCPRO_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
        assert ref["optional"] is True  # no Secret: refused to everyone, the pod still starts
