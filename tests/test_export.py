"""`python -m export`: demo artifacts in the real formats, reloaded by the real loaders,
byte-identical for a seed; `pretrained` offline fails fast with one clear line."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from timing import margin
from tolerances import PROBABILITY_SUM_TOLERANCE

from encoders import load_embedder, weights_sha256
from encoders.repository import read_config
from export.cli import main as export_main
from export.layout import CHUNK_SIZES, MODELS, classifier_path, weights_dir

REPO = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert export_main(["demo", "--out", str(out)]) == 0
    return out


def test_demo_layout(demo: Path) -> None:
    dn = weights_dir(demo, "dnabert_s")
    assert sorted(p.name for p in dn.iterdir()) == ["config.json", "pytorch_model.bin",
                                                    "tokenizer.json"]
    es = weights_dir(demo, "esm2")
    assert sorted(p.name for p in es.iterdir()) == ["esm2_t2_demo-contact-regression.pt",
                                                    "esm2_t2_demo.pt"]
    for size in CHUNK_SIZES:
        assert classifier_path(demo, size).is_file()
    for model in MODELS:
        src = REPO / "model_repository" / model
        dest = demo / "model_repository" / model
        assert (dest / "1/model.py").read_bytes() == (src / "1/model.py").read_bytes()
    manifest = json.loads((demo / "export.json").read_text())
    assert manifest["kind"] == "demo" and manifest["hidden"] == {"dnabert_s": 48, "esm2": 64}
    assert "model_repository/esm2/1/weights/esm2_t2_demo.pt" in manifest["files"]


@pytest.mark.parametrize("config_name", ["config.pbtxt", "configs/gpu.pbtxt"])
@pytest.mark.parametrize("model", MODELS)
def test_exported_configs_state_width_and_checksum(demo: Path, model: str, config_name: str) -> None:
    """The committed config plus exactly two facts from the weights: width and checksum."""
    committed = read_config(REPO / "model_repository" / model / config_name)
    exported = read_config(demo / "model_repository" / model / config_name)
    emb = load_embedder(model, weights_dir(demo, model))
    (output,) = exported.output
    assert list(output.dims) == [emb.hidden_size]
    assert exported.parameters["weights_sha256"].string_value == emb.weights_sha256
    assert emb.weights_sha256 == weights_sha256(model, weights_dir(demo, model))
    del exported.output[0].dims[:]
    exported.output[0].dims.append(-1)
    del exported.parameters["weights_sha256"]
    assert exported == committed


def test_demo_dnabert_is_in_the_published_format(demo: Path) -> None:
    dn = weights_dir(demo, "dnabert_s")
    cfg = json.loads((dn / "config.json").read_text())
    for field in ("alibi_starting_size", "attention_probs_dropout_prob", "hidden_act",
                  "hidden_dropout_prob", "initializer_range", "max_position_embeddings",
                  "type_vocab_size", "architectures", "auto_map", "vocab_size"):
        assert field in cfg
    assert cfg["model_type"] == "bert" and cfg["num_attention_heads"] == 12
    state = torch.load(dn / "pytorch_model.bin", weights_only=True)
    assert "pooler.dense.weight" in state and "encoder.layer.1.mlp.layernorm.weight" in state
    assert not any(k.startswith("bert.") for k in state)
    assert state["encoder.layer.0.attention.self.Wqkv.weight"].shape == (3 * 48, 48)
    assert state["encoder.layer.0.mlp.gated_layers.weight"].shape == (2 * 96, 48)
    ln = state["encoder.layer.0.attention.output.LayerNorm.weight"]
    assert not torch.allclose(ln, torch.ones_like(ln))  # LayerNorms randomised too
    tok = json.loads((dn / "tokenizer.json").read_text())
    assert tok["normalizer"] is None and tok["pre_tokenizer"]["type"] == "Whitespace"
    assert tok["model"]["type"] == "BPE" and len(tok["model"]["vocab"]) == cfg["vocab_size"]
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    assert ids == {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 3, "[MASK]": 4}
    assert tok["post_processor"]["type"] == "TemplateProcessing"


def test_demo_esm2_loads_with_fair_esm(demo: Path) -> None:
    import esm

    ckpt = weights_dir(demo, "esm2") / "esm2_t2_demo.pt"
    with pytest.raises(Exception, match="Namespace"):
        torch.load(ckpt, weights_only=True)  # the real format needs the Namespace allow-listed
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(ckpt, weights_only=True)
        model, _ = esm.pretrained.load_model_and_alphabet_local(str(ckpt))
    assert isinstance(data["cfg"]["model"], argparse.Namespace)
    assert any(k.startswith("encoder.lm_head.") for k in data["model"])
    assert all(k.startswith(("encoder.sentence_encoder.", "encoder.lm_head.")) for k in data["model"])
    assert model.num_layers == 2 and model.embed_dim == 64 and model.attention_heads == 4


def test_demo_reloads_through_the_real_loaders(demo: Path) -> None:
    from orchestrator.classify.classifier import load_classifier

    dn = load_embedder("dnabert_s", weights_dir(demo, "dnabert_s"))
    es = load_embedder("esm2", weights_dir(demo, "esm2"))
    feats = np.concatenate([dn.embed(["ACGTTGCA" * 20, "ACG"]), es.embed(["MKVLA" * 10, "M"])], 1)
    for size in CHUNK_SIZES:
        clf = load_classifier(classifier_path(demo, size))
        clf.check_widths(dn.hidden_size, es.hidden_size)
        probs = clf.predict_proba(feats)
        assert probs.shape == (2, 2)
        assert np.abs(probs.sum(1) - 1.0).max() <= PROBABILITY_SUM_TOLERANCE
        assert np.abs(clf.state_dict()["bn1.running_mean"]).max() > 0  # randomised running stats
    c300 = load_classifier(classifier_path(demo, 300)).state_dict()["hidden_layer.weight"]
    c500 = load_classifier(classifier_path(demo, 500)).state_dict()["hidden_layer.weight"]
    assert not np.array_equal(c300, c500)


def test_demo_is_deterministic_and_seeded(demo: Path, tmp_path: Path) -> None:
    again, other = tmp_path / "again", tmp_path / "other"
    assert export_main(["demo", "--out", str(again), "--seed", "0"]) == 0
    assert _files(again) == _files(demo)
    assert export_main(["demo", "--out", str(other), "--seed", "1"]) == 0
    a, b = _files(demo), _files(other)
    key = "model_repository/esm2/1/weights/esm2_t2_demo.pt"
    assert a[key] != b[key]
    assert a["classifiers/500_model.pth"] != b["classifiers/500_model.pth"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.server
def test_pretrained_offline_fails_fast_with_one_line(tmp_path: Path) -> None:
    env = dict(os.environ)
    proxy = f"http://127.0.0.1:{_closed_port()}"  # unreachable even where the hubs are online
    env.update(https_proxy=proxy, HTTPS_PROXY=proxy, http_proxy=proxy, HTTP_PROXY=proxy)
    env.pop("no_proxy", None)
    env.pop("NO_PROXY", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "export", "pretrained", "--out", str(tmp_path / "o")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert time.perf_counter() - start < margin(30)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("export: error: cannot reach huggingface.co")
    assert "export demo" in lines[0]
    assert not (tmp_path / "o" / "model_repository").exists()


def test_pretrained_from_local_dir_uses_the_same_checks(demo: Path, tmp_path: Path) -> None:
    """Offline install path: files copied in by hand (here: demo files under the real names)."""
    local = tmp_path / "local"
    local.mkdir()
    for p in weights_dir(demo, "dnabert_s").iterdir():
        shutil.copy(p, local / p.name)
    es = weights_dir(demo, "esm2")
    shutil.copy(es / "esm2_t2_demo.pt", local / "esm2_t36_3B_UR50D.pt")
    shutil.copy(es / "esm2_t2_demo-contact-regression.pt",
                local / "esm2_t36_3B_UR50D-contact-regression.pt")
    for size in CHUNK_SIZES:
        shutil.copy(classifier_path(demo, size), local / f"{size}_model.pth")
    out = tmp_path / "out"
    assert export_main(["pretrained", "--out", str(out), "--local-dir", str(local), "--probe"]) == 0
    assert (weights_dir(out, "esm2") / "esm2_t36_3B_UR50D.pt").is_file()
    assert json.loads((out / "export.json").read_text())["kind"] == "pretrained"
    # a broken file is caught by the shared checks: exit 2 naming the file
    state = torch.load(local / "pytorch_model.bin", weights_only=True)
    del state["encoder.layer.0.mlp.wo.bias"]
    torch.save(state, local / "pytorch_model.bin")
    assert export_main(["pretrained", "--out", str(out), "--local-dir", str(local)]) == 2
    (local / "500_model.pth").unlink()
    assert export_main(["pretrained", "--out", str(out), "--local-dir", str(local)]) == 2
