"""A server verifies the weights it loads: each model's `initialize` hashes the version's weight
files and refuses to load when they differ from the config's `weights_sha256_<version>` (or
`weights_sha256`), so clients never get answers from weights other than the checksum they pin.

Real servers on the exported demo repository with one weight file changed after export."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest
from predict_fixtures import run_cli
from timing import margin

from encoders import weights_sha256
from encoders.errors import WeightsError
from encoders.repository import expected_sha256, parameters, read_config, verify_weights
from orchestrator.embed.triton.server import TritonServer, free_port

ESM2_FILE = "esm2_t2_demo.pt"
ADMIN_KEY = "weights-check-admin-key"


def _tampered(model_repository: Path, root: Path) -> tuple[Path, str, str]:
    """A copy of the repository whose ESM-2 weight file changed after export: (repository,
    checksum the config states, checksum of the changed files)."""
    repo = root / "model_repository"
    if not repo.exists():
        shutil.copytree(model_repository, repo)
        with open(repo / "esm2" / "1" / "weights" / ESM2_FILE, "ab") as fh:
            fh.write(b"\0")
    weights = repo / "esm2" / "1" / "weights"
    expected = expected_sha256(parameters(read_config(repo / "esm2" / "config.pbtxt")), "1")
    assert expected is not None
    return repo, expected, weights_sha256("esm2", weights)


@pytest.mark.server  # the demo repository is built by `python -m export demo`
def test_verify_weights_states_model_version_and_both_checksums(model_repository, tmp_path):
    repo, expected, actual = _tampered(model_repository, tmp_path)
    params = parameters(read_config(repo / "esm2" / "config.pbtxt"))
    weights = repo / "esm2" / "1" / "weights"
    with pytest.raises(WeightsError) as info:
        verify_weights("esm2", "esm2", "1", weights, params)
    message = str(info.value)
    assert "\n" not in message and message.startswith("esm2 version 1: weights checksum mismatch")
    assert expected in message and actual in message and expected != actual
    # the per-version parameter wins over the model-wide one
    assert verify_weights("esm2", "esm2", "1", weights, {**params, "weights_sha256_1": actual}) is None
    warning = verify_weights("esm2", "esm2", "1", weights, {"weights": "weights"})
    assert warning is not None and "unverified" in warning


@pytest.mark.server
def test_serve_refuses_a_changed_weight_file_with_one_line(model_repository, tmp_path):
    repo, expected, actual = _tampered(model_repository, tmp_path)
    proc = run_cli("serve", "--model-repository", str(repo), "--grpc-port", str(free_port()),
                   "--http-port", str(free_port()), "--metrics-port", str(free_port()))
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.search(rf"esm2 version 1: weights checksum mismatch: config expects {expected}, "
                     rf"the files in \S+ have {actual}; refusing to load", lines[0]), lines[0]


def _wait_for_refusal(server: TritonServer, text: str, timeout: float = 180.0) -> None:
    """Until the server's log holds `text` (esm2's load ended) and it listens with dnabert_s
    ready; fails if it exits first."""
    deadline = time.monotonic() + margin(timeout)
    while (text not in server.log_path.read_text(errors="replace")
           or server.models_not_ready() != ["esm2"]):
        assert server.poll() is None, server.last_log_line()
        assert time.monotonic() < deadline, f"no {text!r} in {server.log_path}"
        time.sleep(0.2)


@pytest.mark.server
def test_a_server_that_stays_up_never_serves_the_changed_model(model_repository, tmp_path):
    """A tritonserver told not to exit on a failed model (as a cluster may run it) keeps the model
    unavailable: status and predict say it is not ready and exit 3; nothing is embedded."""
    repo, expected, actual = _tampered(model_repository, tmp_path)
    server = TritonServer(repo, ready_timeout=180, admin_key=ADMIN_KEY,
                          extra_flags=["--exit-on-error=false"])
    server.start()
    try:
        _wait_for_refusal(server, f"have {actual}; refusing to load")
        status = run_cli("status", "--server", server.grpc_url, env={"VIRNUCPRO_ADMIN_KEY": ""})
        assert status.returncode == 3, status.stdout + status.stderr
        assert "model esm2 not ready" in status.stdout, status.stdout
        # an operator holding the admin key also reads why
        status = run_cli("status", "--server", server.grpc_url,
                         env={"VIRNUCPRO_ADMIN_KEY": ADMIN_KEY})
        assert status.returncode == 3, status.stdout + status.stderr
        assert re.search(rf"model esm2 not ready .*esm2 version 1: weights checksum mismatch: "
                         rf"config expects {expected}, .* have {actual}", status.stdout), status.stdout
        fasta = tmp_path / "one.fa"
        fasta.write_text(">s\n" + "ATGGCT" * 60 + "\n")
        clf = model_repository.parent / "classifiers" / "300_model.pth"
        predict = run_cli("predict", str(fasta), "-o", str(tmp_path / "out"), "--chunk-size",
                          "300", "--classifier", str(clf), "--server", server.grpc_url,
                          env={"VIRNUCPRO_RETRY_DEADLINE": "1"})
        assert predict.returncode == 3, predict.stderr
        assert "esm2" in predict.stderr and "not ready" in predict.stderr, predict.stderr
    finally:
        server.stop()
        server.cleanup()


@pytest.mark.server
def test_a_config_without_checksum_loads_with_a_warning(model_repository, tmp_path):
    repo = tmp_path / "model_repository"
    shutil.copytree(model_repository, repo)
    for config in repo.glob("*/config.pbtxt"):
        text = config.read_text()
        stripped = re.sub(r'  \{\n    key: "weights_sha256(_\d+)?"\n    value: '
                          r'\{ string_value: "[0-9a-f]+" \}\n  \},\n', "", text)
        assert stripped != text and "weights_sha256" not in stripped.split("parameters [", 1)[1]
        config.write_text(stripped)
    with TritonServer(repo, ready_timeout=180) as server:
        assert not server.models_not_ready()
        log = server.log_path.read_text(errors="replace")
    assert "esm2 version 1: no weights_sha256_1 or weights_sha256 parameter" in log
    assert "unverified" in log
