"""`orchestrator.learning.metrics` against scikit-learn, and `evaluate` end to end on small embeddings files."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from sklearn import metrics as skm

from export.demo import classifier_state
from orchestrator.classify.classifier import load_classifier, save_classifier_pth, save_classifier_safetensors
from orchestrator.classify.consensus import chunk_consensus
from orchestrator.errors import InputError
from orchestrator.learning.evaluate import run_evaluate
from orchestrator.learning.metrics import binary_metrics, roc_curve
from orchestrator.write.embeddings import EmbeddingsHeader, EmbeddingsWriter, read_embeddings

TOL = 1e-12  # float64 against scikit-learn's float64 on the same scores: sums of <= 10^3 terms
# of magnitude <= 1 in another order differ by ~n * 1.1e-16 = 1e-13
DNA_W, PROT_W = 8, 16
FRAMES = ("F1", "F2", "F3", "R1", "R2", "R3")


# --------------------------------------------------------------------------- metrics vs sklearn


def sklearn_metrics(y: np.ndarray, score: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """The reference values; None where scikit-learn raises, warns or returns nan/0 by convention."""
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    one_class = len(set(y.tolist())) < 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "accuracy": skm.accuracy_score(y, pred),
            "precision": skm.precision_score(y, pred, zero_division=0),
            "recall": skm.recall_score(y, pred, zero_division=0),
            "f1": skm.f1_score(y, pred, zero_division=0),
            "mcc": skm.matthews_corrcoef(y, pred),
            "roc_auc": None if one_class else skm.roc_auc_score(y, score),
            "pr_auc": None if not y.any() else skm.average_precision_score(y, score),
            "confusion": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
            "n": len(y), "n_positive": int(y.sum()), "n_negative": int((y == 0).sum()),
        }


def assert_same(ours: dict[str, Any], ref: dict[str, Any]) -> None:
    assert ours.keys() == ref.keys()
    for key, want in ref.items():
        if want is None or isinstance(want, dict | int):
            assert ours[key] == want, key
        else:
            assert ours[key] == pytest.approx(float(want), rel=TOL, abs=TOL), key


HAND_CASES = {
    "mixed_with_ties": ([1, 0, 1, 1, 0, 0, 1, 0, 1, 0], [.9, .9, .5, .5, .5, .1, .7, .3, .3, .2],
                        [1, 1, 0, 1, 0, 0, 1, 0, 0, 1]),
    "all_scores_tied": ([1, 0, 1, 0, 0], [.4] * 5, [1, 1, 1, 1, 1]),
    "perfect": ([0, 0, 1, 1, 1], [.1, .2, .7, .8, .9], [0, 0, 1, 1, 1]),
    "all_wrong": ([0, 0, 1, 1], [.9, .8, .2, .1], [1, 1, 0, 0]),
    "all_positive": ([1, 1, 1], [.2, .5, .5], [1, 0, 1]),
    "all_negative": ([0, 0, 0, 0], [.2, .5, .5, .9], [0, 1, 0, 0]),
    "no_predicted_positive": ([1, 0, 1, 0], [.3, .2, .4, .1], [0, 0, 0, 0]),
    "single_sample": ([1], [.5], [1]),
}


@pytest.mark.parametrize("case", HAND_CASES, ids=list(HAND_CASES))
def test_binary_metrics_equal_sklearn_on_hand_cases(case: str) -> None:
    y, s, p = (np.array(v) for v in HAND_CASES[case])
    assert_same(binary_metrics(y, s, p), sklearn_metrics(y, s, p))


def test_binary_metrics_undefined_cases() -> None:
    m = binary_metrics(np.array([0, 0]), np.array([.1, .2]), np.array([0, 0]))
    assert (m["precision"], m["recall"], m["f1"], m["mcc"]) == (0.0, 0.0, 0.0, 0.0)
    assert m["roc_auc"] is None and m["pr_auc"] is None
    m = binary_metrics(np.array([1, 1]), np.array([.1, .2]), np.array([1, 1]))
    assert m["roc_auc"] is None and m["pr_auc"] == 1.0 and m["mcc"] == 0.0
    with pytest.raises(ValueError):
        binary_metrics(np.array([], int), np.array([]), np.array([], int))
    with pytest.raises(ValueError):
        binary_metrics(np.array([0, 2]), np.array([.1, .2]), np.array([0, 1]))
    with pytest.raises(ValueError):
        binary_metrics(np.array([0, 1]), np.array([.1, np.nan]), np.array([0, 1]))


def test_binary_metrics_equal_sklearn_on_random_cases() -> None:
    for seed in range(40):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 80))
        y = (rng.random(n) < rng.random()).astype(int)
        score = np.round(rng.random(n) + 0.3 * y, int(rng.integers(1, 4)))  # coarse: many ties
        pred = (score > rng.random()).astype(int)
        assert_same(binary_metrics(y, score, pred), sklearn_metrics(y, score, pred))


def test_roc_curve_points_equal_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    score = np.round(rng.random(60), 1)
    fpr, tpr, _ = skm.roc_curve(y, score, drop_intermediate=False)
    ours = roc_curve(y, score)
    np.testing.assert_allclose(ours[0], fpr, rtol=0, atol=TOL)
    np.testing.assert_allclose(ours[1], tpr, rtol=0, atol=TOL)
    with pytest.raises(ValueError):
        roc_curve(np.ones(3, int), np.arange(3.0))


def test_chunk_consensus_groups_by_id_in_first_seen_order() -> None:
    probs = np.array([[.9, .1], [.2, .8], [.6, .4], [.3, .7], [.5, .5]], np.float32)
    ids, maxima = chunk_consensus(["b", "a", "b", "c", "a"], probs)
    assert ids == ["b", "a", "c"]
    np.testing.assert_array_equal(maxima, np.array([[.9, .4], [.5, .8], [.3, .7]], np.float32))
    ids, maxima = chunk_consensus([], np.empty((0, 2), np.float32))
    assert ids == [] and maxima.shape == (0, 2)


# --------------------------------------------------------------------------- embeddings fixtures


def models(dna_sha: str = "a" * 64, dna_width: int = DNA_W) -> list[dict[str, Any]]:
    return [{"name": "dnabert_s", "version": "1", "weights_sha256": dna_sha, "width": dna_width},
            {"name": "esm2_t36_3B_UR50D", "version": "1", "weights_sha256": "b" * 64, "width": PROT_W}]


def make_embeddings(path: Path, seed: int, *, shift: float, n_records: int = 6, chunk_size: int = 300,
                    model_list: list[dict[str, Any]] | None = None, label: str | None = None) -> Path:
    """Records of several chunks, each keeping a random subset of its six frames; some rows are
    exact copies of others so that scores tie."""
    rng = np.random.default_rng(seed)
    ids: list[str] = []
    for r in range(n_records):
        for c in range(1, int(rng.integers(2, 7))):
            kept = [f for f in FRAMES if rng.random() < 0.6] or ["F1"]
            ids += [f"s{seed}_{r}_chunk_{c}{f}" for f in kept]
    mlist = model_list or models()
    dna = rng.standard_normal((len(ids), mlist[0]["width"])).astype(np.float32) + shift
    prot = rng.standard_normal((len(ids), PROT_W)).astype(np.float32) + shift
    dup = rng.choice(len(ids), size=len(ids) // 5, replace=False)
    dna[dup], prot[dup] = dna[0], prot[0]
    writer = EmbeddingsWriter(path, EmbeddingsHeader(chunk_size=chunk_size, models=mlist, label=label))
    writer.append(ids, dna, prot)
    writer.close()
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("evaluate")
    state = classifier_state(DNA_W + PROT_W, 7)
    save_classifier_safetensors(state, d / "clf.safetensors")
    save_classifier_pth(state, d / "300_model.pth")
    save_classifier_safetensors(classifier_state(DNA_W + PROT_W + 2, 7), d / "wide.safetensors")
    return {
        "dir": d,
        "safetensors": d / "clf.safetensors",
        "pth": d / "300_model.pth",
        "wide": d / "wide.safetensors",
        "viral_a": make_embeddings(d / "viral_a.h5", 1, shift=0.4, label="virus"),
        "viral_b": make_embeddings(d / "viral_b.h5", 2, shift=0.4, n_records=3),
        "other": make_embeddings(d / "other.h5", 3, shift=-0.4, label="others"),
    }


def expected_levels(clf_path: Path, viral: list[Path], other: list[Path]) -> dict[str, dict[str, Any]]:
    """Both levels recomputed independently: whole files in memory, chunks grouped by hand."""
    clf = load_classifier(clf_path)
    frame_y, frame_p = [], []
    chunk_y, chunk_max = [], []
    for label, paths in ((1, viral), (0, other)):
        for path in paths:
            emb = read_embeddings(path)
            probs = clf.predict_proba(emb.features)
            frame_y += [label] * len(probs)
            frame_p.append(probs)
            groups: dict[str, list[float]] = {}
            for cid, (p0, p1) in zip(emb.chunk_ids, probs.tolist(), strict=True):
                m = groups.setdefault(cid, [p0, p1])
                m[0], m[1] = max(m[0], p0), max(m[1], p1)
            chunk_y += [label] * len(groups)
            chunk_max += list(groups.values())
    p = np.concatenate(frame_p)
    fy, cy, cm = np.array(frame_y), np.array(chunk_y), np.array(chunk_max)
    return {
        "frame": sklearn_metrics(fy, p[:, 1], (p[:, 1] > p[:, 0]).astype(int)),
        "chunk": sklearn_metrics(cy, cm[:, 1] - cm[:, 0], (cm[:, 1] >= cm[:, 0]).astype(int)),
    }


# --------------------------------------------------------------------------- run_evaluate


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_run_evaluate_equals_sklearn(data: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    viral, other = [data["viral_a"], data["viral_b"]], [data["other"]]
    out = tmp_path / "eval"
    result = run_evaluate(classifier=str(data[fmt]), viral=[str(p) for p in viral],
                          other=[str(p) for p in other], outdir=str(out))
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    want = expected_levels(data[fmt], viral, other)
    for level in ("frame", "chunk"):
        assert_same(on_disk["metrics"][level], want[level])
    assert want["frame"]["roc_auc"] not in (None, 0.0, 1.0)  # a non-trivial case

    assert on_disk["classifier"]["sha256"] == load_classifier(data[fmt]).sha256
    assert [(f["path"], f["label"]) for f in on_disk["files"]] == [(str(p), lab) for p, lab
                                                                   in ((viral[0], 1), (viral[1], 1), (other[0], 0))]
    assert on_disk["chunk_size"] == 300 and on_disk["models"] == models()
    n_frames = want["frame"]["n"]
    assert sum(on_disk["counts"]["frames"].values()) == n_frames
    assert on_disk["counts"]["chunks"]["virus"] == want["chunk"]["n_positive"]

    rows = (out / "scores.tsv").read_text().splitlines()
    assert rows[0] == "file\tframe_id\tlabel\tp_others\tp_virus"
    assert len(rows) == 1 + n_frames
    assert rows[1].startswith(f"{viral[0]}\ts1_0_chunk_1") and rows[-1].split("\t")[2] == "0"

    tsv = [line.split("\t") for line in (out / "metrics.tsv").read_text().splitlines()]
    assert tsv[0][:2] == ["level", "n"] and [r[0] for r in tsv[1:]] == ["frame", "chunk"]
    assert float(tsv[1][tsv[0].index("roc_auc")]) == on_disk["metrics"]["frame"]["roc_auc"]
    for name in ("roc.png", "score_histogram.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_small_blocks_give_identical_results(data: dict[str, Path], tmp_path: Path) -> None:
    """Blocks of 7 rows split chunks across blocks and change the classifier's batch shapes."""
    kwargs = {"classifier": str(data["safetensors"]), "viral": [str(data["viral_a"])],
              "other": [str(data["other"])]}
    whole = run_evaluate(**kwargs, outdir=str(tmp_path / "a"))
    blocks = run_evaluate(**kwargs, outdir=str(tmp_path / "b"), block_rows=7)
    assert blocks == whole
    for name in ("scores.tsv", "metrics.tsv", "metrics.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    want = expected_levels(data["safetensors"], [data["viral_a"]], [data["other"]])
    assert blocks["metrics"]["chunk"]["n"] == want["chunk"]["n"]
    for level in ("frame", "chunk"):
        for key in ("roc_auc", "pr_auc", "mcc"):
            # float64 on both sides, summed in other orders (~1e-13 apart); 1e-6 is a generous
            # margin that still catches any changed rank or count, which moves a metric by >= 1/n.
            assert blocks["metrics"][level][key] == pytest.approx(want[level][key], abs=1e-6)


def test_one_class_only_leaves_ranking_metrics_undefined(data: dict[str, Path], tmp_path: Path) -> None:
    result = run_evaluate(classifier=str(data["safetensors"]), viral=[str(data["viral_a"])], other=[],
                          outdir=str(tmp_path))
    assert result["metrics"]["frame"]["roc_auc"] is None
    assert result["metrics"]["chunk"]["pr_auc"] is not None
    row = (tmp_path / "metrics.tsv").read_text().splitlines()[1].split("\t")
    assert row[9] == "NA"
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------- refusals


def refused(data: dict[str, Path], *, viral: Sequence[Path], other: Sequence[Path] = (),
            classifier: Path | None = None) -> str:
    with pytest.raises(InputError) as info:
        run_evaluate(classifier=str(classifier or data["safetensors"]), viral=[str(p) for p in viral],
                     other=[str(p) for p in other], outdir=str(data["dir"] / "refused"))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_refuses_mismatched_chunk_size(data: dict[str, Path]) -> None:
    odd = make_embeddings(data["dir"] / "cs500.h5", 4, shift=0, chunk_size=500)
    message = refused(data, viral=[data["viral_a"]], other=[odd])
    assert str(odd) in message and "chunk size 500" in message and "300" in message


def test_refuses_mismatched_models(data: dict[str, Path]) -> None:
    odd = make_embeddings(data["dir"] / "models.h5", 5, shift=0, model_list=models(dna_sha="c" * 64))
    message = refused(data, viral=[data["viral_a"]], other=[odd])
    assert str(odd) in message and "DNA model" in message and "weights_sha256" in message


def test_refuses_wrong_classifier_width(data: dict[str, Path]) -> None:
    message = refused(data, viral=[data["viral_a"]], classifier=data["wide"])
    assert str(data["viral_a"]) in message and "expects 26 features" in message


def test_refuses_missing_and_foreign_files(data: dict[str, Path]) -> None:
    missing = data["dir"] / "nope.h5"
    assert str(missing) in refused(data, viral=[data["viral_a"]], other=[missing])
    foreign = data["dir"] / "foreign.h5"
    with h5py.File(foreign, "w") as h5:
        h5["x"] = np.arange(3)
    message = refused(data, viral=[foreign])
    assert str(foreign) in message and "not a VirNucPro embeddings file" in message


def test_refuses_same_file_twice_and_no_files(data: dict[str, Path]) -> None:
    message = refused(data, viral=[data["viral_a"]], other=[data["viral_a"].parent / "." / "viral_a.h5"])
    assert "given twice" in message and str(data["viral_a"]) in message
    copy = data["dir"] / "copy.h5"
    copy.write_bytes(data["other"].read_bytes())
    assert "same content" in refused(data, viral=[copy], other=[data["other"]])
    assert "no embeddings files" in refused(data, viral=[])
