"""Re-classification: `predict INPUT --embeddings RUN.h5 --classifier NEW` writes every output of a
predict run from saved vectors, with no server.

One real tritonserver (toy models) makes the reference runs; the re-classifications point
`--server` at a closed port, so any attempt to reach a server would fail the run (exit 3).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from predict_fixtures import (
    TOY_WIDTH,
    outputs_of,
    run_cli,
    write_coding_fasta,
    write_toy_classifier,
)

from orchestrator.classify.classifier import load_classifier, save_classifier_safetensors

pytestmark = pytest.mark.server

NO_SERVER = "127.0.0.1:9"  # discard port: nothing answers gRPC there
ALL_OUTPUTS = ("report.html", "run.json", "embeddings.h5")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, toy_server):
    """Inputs (two files, one with an empty record), two classifiers, and predict runs with each:
    A with --save-embeddings (the file to re-classify), B without."""
    root = tmp_path_factory.mktemp("reclassify")
    a = write_coding_fasta(root / "a.fa", records=10, length=1700, seed=4)
    b = root / "b.fa"
    coding = write_coding_fasta(root / "b_coding.fa", records=3, length=900, seed=9).read_text()
    b.write_text(">empty_record\n\n" + coding.replace(">rec", ">b_rec"))
    clf_a = write_toy_classifier(root / "a.safetensors", seed=7)
    clf_b = write_toy_classifier(root / "b.safetensors", seed=8)
    server = toy_server  # only sent work: the session's server
    for name, clf, extra in (("ref_a", clf_a, ["--save-embeddings"]), ("ref_b", clf_b, [])):
        proc = run_cli("predict", str(a), str(b), "-o", str(root / name), "--chunk-size", "500",
                       "--classifier", str(clf), "--server", server.grpc_url, "--window", "16",
                       *extra)
        assert proc.returncode == 0, proc.stderr
    return {"root": root, "inputs": [str(a), str(b)], "clf_a": clf_a, "clf_b": clf_b,
            "h5": root / "ref_a" / "embeddings.h5"}


def _reclassify(runs, out: Path, clf: Path, *extra: str, inputs: list[str] | None = None,
                h5: Path | None = None, chunk_size: str = "500"):
    return run_cli("predict", *(inputs or runs["inputs"]), "-o", str(out), "--chunk-size",
                   chunk_size, "--classifier", str(clf), "--embeddings", str(h5 or runs["h5"]),
                   "--server", NO_SERVER, *extra)


def test_same_classifier_is_byte_identical(tmp_path, runs):
    out = tmp_path / "same"
    proc = _reclassify(runs, out, runs["clf_a"], "--window", "7")  # other windows, same bytes
    assert proc.returncode == 0, proc.stderr
    ref = runs["root"] / "ref_a"
    assert outputs_of(out) == outputs_of(ref)
    summary = (out / "sequence_summary.tsv").read_text()
    assert "empty_record\t0\t0\t0\t0\t" in summary  # a record with no frame keeps its row
    assert (out / "report.html").is_file()
    run = json.loads((out / "run.json").read_text())
    reference = json.loads((ref / "run.json").read_text())
    assert run["backend"] == "embeddings" and run["servers"] is None
    assert run["parameters"]["embeddings"] == str(runs["h5"].resolve())
    assert {**run["counts"], "windows": 0} == {**reference["counts"], "windows": 0}
    assert run["input_lengths"] == reference["input_lengths"]
    assert [m["weights_sha256"] for m in run["models"]] == [
        m["weights_sha256"] for m in reference["models"]]
    rerun = _reclassify(runs, out, runs["clf_a"], "--window", "7")
    assert rerun.returncode == 0 and "nothing to do" in rerun.stderr


def test_other_classifier_equals_a_full_run_with_it(tmp_path, runs):
    out = tmp_path / "other"
    proc = _reclassify(runs, out, runs["clf_b"])
    assert proc.returncode == 0, proc.stderr
    assert outputs_of(out) == outputs_of(runs["root"] / "ref_b")
    assert outputs_of(out) != outputs_of(runs["root"] / "ref_a")


def _trained_like(runs, path: Path, *, chunk_size: str = "500", dna_sha: str | None = None) -> Path:
    """clf_a's weights with the metadata `orchestrator train` writes."""
    header = json.loads(json.dumps(_file_models(runs["h5"])))
    if dna_sha is not None:
        header[0]["weights_sha256"] = dna_sha
    models = [{k: m[k] for k in ("name", "weights_sha256", "width")} for m in header]
    save_classifier_safetensors(load_classifier(runs["clf_a"]).state_dict(), path,
                                {"chunk_size": chunk_size, "models": json.dumps(models)})
    return path


def _file_models(h5: Path) -> list[dict]:
    from orchestrator.write.embeddings import read_header

    return read_header(h5)[0].models


def test_trained_classifier_with_matching_metadata_accepted(tmp_path, runs):
    clf = _trained_like(runs, tmp_path / "trained.safetensors")
    proc = _reclassify(runs, tmp_path / "out", clf)
    assert proc.returncode == 0, proc.stderr
    assert outputs_of(tmp_path / "out") == outputs_of(runs["root"] / "ref_a")


@pytest.mark.parametrize("case", ["width", "chunk_size", "trained_chunk_size", "checksum",
                                  "inputs", "input_order", "save_embeddings", "not_h5"])
def test_mismatches_refused_with_exit_2(tmp_path, runs, case):
    kwargs: dict = {}
    extra: list[str] = []
    clf = runs["clf_a"]
    expect = ""
    if case == "width":
        clf = write_toy_classifier(tmp_path / "wide.safetensors", width=2 * TOY_WIDTH + 8)
        expect = "features"
    elif case == "chunk_size":
        kwargs["chunk_size"] = "300"
        expect = "500 bp chunks"
    elif case == "trained_chunk_size":
        clf = _trained_like(runs, tmp_path / "t.safetensors", chunk_size="300")
        expect = "trained on 300 bp"
    elif case == "checksum":
        clf = _trained_like(runs, tmp_path / "t.safetensors", dna_sha="0" * 64)
        expect = "weights"
    elif case == "inputs":
        kwargs["inputs"] = runs["inputs"][:1]
        expect = "other inputs"
    elif case == "input_order":
        kwargs["inputs"] = runs["inputs"][::-1]
        expect = "other inputs"
    elif case == "save_embeddings":
        extra = ["--save-embeddings"]
        expect = "already in"
    elif case == "not_h5":
        kwargs["h5"] = Path(runs["inputs"][0])
        expect = "HDF5"
    out = tmp_path / "out"
    proc = _reclassify(runs, out, clf, *extra, **kwargs)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert expect in lines[-1] and "Traceback" not in proc.stderr, proc.stderr
    assert not (out / "prediction_results.txt").exists()


def test_classifier_applied_to_the_file_directly_gives_the_same_scores(runs):
    """The file's rows are the run's frames in order: its scores are prediction_results.txt's."""
    from orchestrator.write.embeddings import read_embeddings

    data = read_embeddings(runs["h5"])
    probs = load_classifier(runs["clf_a"]).predict_proba(data.features)
    rows = (runs["root"] / "ref_a" / "prediction_results.txt").read_text().splitlines()[1:]
    assert [r.split("\t")[0] for r in rows] == data.frame_ids
    assert np.array_equal(np.array([float(r.split("\t")[3]) for r in rows], np.float32),
                          probs[:, 1].astype(np.float32))
