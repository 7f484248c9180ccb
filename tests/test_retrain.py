"""Retraining end to end: embed two sequence classes with the demo encoders in a real
tritonserver, train on the files, evaluate, and predict with the trained model.

The classes are GC-rich and AT-rich coding "genomes" made here (random proteins written with
GC-ending or AT-ending codons), so the demo encoders' vectors separate them even though the
encoders' weights are random. A control with labels shuffled by record must not learn.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from predict_fixtures import run_cli

from orchestrator.write.embeddings import EmbeddingsWriter, read_embeddings, read_header

pytestmark = pytest.mark.server

CHUNK = "150"
AMINO = "ACDEFGHIKLMNPQRSTVWY"
# two codons per amino acid where the code allows: one GC-rich, one AT-rich
GC_CODONS = {"A": "GCC", "C": "TGC", "D": "GAC", "E": "GAG", "F": "TTC", "G": "GGC", "H": "CAC",
             "I": "ATC", "K": "AAG", "L": "CTG", "M": "ATG", "N": "AAC", "P": "CCC", "Q": "CAG",
             "R": "CGC", "S": "AGC", "T": "ACC", "V": "GTG", "W": "TGG", "Y": "TAC"}
AT_CODONS = {"A": "GCA", "C": "TGT", "D": "GAT", "E": "GAA", "F": "TTT", "G": "GGA", "H": "CAT",
             "I": "ATA", "K": "AAA", "L": "TTA", "M": "ATG", "N": "AAT", "P": "CCA", "Q": "CAA",
             "R": "AGA", "S": "TCA", "T": "ACA", "V": "GTA", "W": "TGG", "Y": "TAT"}


def _genomes(path: Path, name: str, codons: dict[str, str], records: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w") as fh:
        for r in range(records):
            protein = rng.choice(list(AMINO), size=300)  # 900 bp: six 150 bp chunks, F1 stop-free
            fh.write(f">{name}{r}\n{''.join(codons[a] for a in protein)}\n")
    return path


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, triton_server) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("retrain")
    files = {}
    for name, codons, label, seed in (("gc", GC_CODONS, "viral", 1), ("at", AT_CODONS, "host", 2)):
        fasta = _genomes(root / f"{name}.fa", name, codons, records=20, seed=seed)
        out = root / f"{name}.h5"
        proc = run_cli("embed", str(fasta), "-o", str(out), "--chunk-size", CHUNK, "--label",
                       label, "--server", triton_server.grpc_url)
        assert proc.returncode == 0, proc.stderr
        files[name], files[f"{name}_fa"] = out, fasta
    files["root"] = root
    return files


def _card(model: Path) -> dict:
    return json.loads(model.with_name(model.name.replace(".safetensors", ".card.json")).read_text())


def test_trained_model_separates_classes_and_loads_in_predict(embedded, triton_server):
    root = embedded["root"]
    model = root / "gc_vs_at.safetensors"
    proc = run_cli("train", "--viral", str(embedded["gc"]), "--other", str(embedded["at"]),
                   "-o", str(model), "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    card = _card(model)
    held_out = card["validation_metrics"]["frame"]
    assert held_out["accuracy"] >= 0.9, held_out
    assert card["validation_metrics"]["chunk"]["accuracy"] >= 0.9
    assert card["validation_metrics"]["chunk"]["n"] < held_out["n"]  # frames pooled per chunk
    assert card["chunk_size"] == int(CHUNK)

    # the model predicts at the size it was trained on, through the same servers
    for name, expect_viral in (("gc", True), ("at", False)):
        out = root / f"pred_{name}"
        proc = run_cli("predict", str(embedded[f"{name}_fa"]), "-o", str(out), "--chunk-size",
                       CHUNK, "--classifier", str(model), "--server", triton_server.grpc_url,
                       "--no-report")
        assert proc.returncode == 0, proc.stderr
        assert "trained on" not in proc.stderr  # same chunk size, same encoder weights
        rows = (out / "prediction_results_highestscore.csv").read_text().splitlines()[1:]
        viral = sum(r.split("\t")[1] == "True" for r in rows) / len(rows)
        assert (viral >= 0.9) if expect_viral else (viral <= 0.1), (name, viral)

    proc = run_cli("predict", str(embedded["gc_fa"]), "-o", str(root / "wrong_size"),
                   "--chunk-size", "300", "--classifier", str(model), "--server",
                   triton_server.grpc_url, "--no-report")
    assert proc.returncode == 0 and "trained on 150 bp chunks" in proc.stderr, proc.stderr

    # evaluate reads the same files and the same model
    proc = run_cli("evaluate", "--classifier", str(model), "--viral", str(embedded["gc"]),
                   "--other", str(embedded["at"]), "-o", str(root / "eval"))
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((root / "eval" / "metrics.json").read_text())["metrics"]
    assert metrics["chunk"]["accuracy"] >= 0.9 and metrics["frame"]["roc_auc"] >= 0.9


def test_shuffled_labels_do_not_learn(embedded):
    """The same vectors, records assigned to the two sides at random: held-out accuracy near 0.5."""
    root = embedded["root"]
    rng = np.random.default_rng(5)
    data = [read_embeddings(embedded[name]) for name in ("gc", "at")]
    records = [(d, r) for d in data for r in dict.fromkeys(d.record_ids)]
    side = rng.permutation(len(records)) % 2
    header, _ = read_header(embedded["gc"])
    header.label = None
    writers = [EmbeddingsWriter(root / f"shuffled{k}.h5", header) for k in (0, 1)]
    for (d, record), k in zip(records, side, strict=True):
        rows = [i for i, rid in enumerate(d.record_ids) if rid == record]
        writers[k].append([d.frame_ids[i] for i in rows], d.features[rows, :d.dna_width],
                          d.features[rows, d.dna_width:])
    for w in writers:
        w.close()
    model = root / "shuffled.safetensors"
    proc = run_cli("train", "--viral", str(root / "shuffled0.h5"), "--other",
                   str(root / "shuffled1.h5"), "-o", str(model), "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    card = _card(model)
    held_out = card["validation_metrics"]["frame"]
    assert 0.2 <= held_out["accuracy"] <= 0.8, held_out
