"""`orchestrator compare RUN_A RUN_B` on real runs: the demo models in-process (the local backend)
at fp32, the same models at bf16 (a precision change), another classifier of the same type, other
inputs and another chunk size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from predict_fixtures import run_cli, write_coding_fasta

from export.demo import write_classifiers

pytestmark = pytest.mark.server

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "example.fa"


def _predict(out: Path, repo: Path, clf: Path, fasta: Path = EXAMPLE, chunk_size: str = "300") -> Path:
    proc = run_cli("predict", str(fasta), "-o", str(out), "--chunk-size", chunk_size,
                   "--classifier", str(clf), "--backend", "local", "--model-repository",
                   str(repo), "--no-report")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def runs(demo_artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    repo = demo_artifacts / "model_repository"
    bf16 = root / "repo_bf16"
    shutil.copytree(repo, bf16)
    for cfg in bf16.glob("*/config.pbtxt"):
        text = cfg.read_text()
        assert 'string_value: "fp32"' in text
        cfg.write_text(text.replace('string_value: "fp32"', 'string_value: "bf16"'))
    clf = demo_artifacts / "classifiers" / "300_model.pth"
    other_clf = root / "other"
    write_classifiers(other_clf, width=_width(demo_artifacts), seed=11)
    other = write_coding_fasta(root / "other.fa", records=4, length=900, seed=3)
    return {
        "fp32": _predict(root / "fp32", repo, clf),
        "fp32_again": _predict(root / "fp32_again", repo, clf),
        "bf16": _predict(root / "bf16", bf16, clf),
        "other_clf": _predict(root / "other_clf", repo, other_clf / "classifiers" / "300_model.pth"),
        "other_inputs": _predict(root / "other_inputs", repo, clf, fasta=other),
        "chunk_500": _predict(root / "chunk_500", repo,
                              demo_artifacts / "classifiers" / "500_model.pth", chunk_size="500"),
        "root": root,
    }


def _width(artifacts: Path) -> int:
    from orchestrator.classify.classifier import load_classifier

    return int(load_classifier(str(artifacts / "classifiers" / "300_model.pth")).input_width)


def _compare(a: Path, b: Path, *extra: str) -> tuple[int, dict, str]:
    proc = run_cli("compare", str(a), str(b), "--json", *extra)
    data = json.loads(proc.stdout) if proc.returncode in (0, 1) else {}
    return proc.returncode, data, proc.stderr


def test_identical_runs_agree_exactly(runs: dict[str, Path]) -> None:
    rc, data, err = _compare(runs["fp32"], runs["fp32_again"], "--max-score-diff", "0")
    assert rc == 0, err
    assert data["ok"] and data["same_classifier"]
    assert data["frames_compared"] > 0 and data["chunks_compared"] > 0
    assert data["chunk_max_abs_delta_quantiles"]["max"] == 0.0
    assert data["calls_agree"] == data["sequences_compared"] > 0
    assert data["differing_calls"] == []


def test_precision_change_is_measured_against_the_tolerance(runs: dict[str, Path]) -> None:
    rc, data, err = _compare(runs["fp32"], runs["bf16"])
    assert rc == 0, err  # bf16 moves the demo's scores by ~1e-3, inside the default 0.01
    q = data["chunk_max_abs_delta_quantiles"]
    assert 0 < q["p50"] <= q["p90"] <= q["p99"] <= q["max"] <= 0.01
    assert data["top_chunks"][0]["abs_delta"] == pytest.approx(q["max"], rel=1e-6)
    assert len(data["top_chunks"]) == 10
    # a tolerance below the largest delta: exit 1, and the count of chunks over it
    rc, tight, _ = _compare(runs["fp32"], runs["bf16"], "--max-score-diff", str(q["p50"]))
    assert rc == 1 and not tight["ok"]
    assert 0 < tight["chunks_over_tolerance"] < tight["chunks_compared"]
    rc, none_listed, _ = _compare(runs["fp32"], runs["bf16"], "--top", "0")
    assert rc == 0 and none_listed["top_chunks"] == [] and none_listed["differing_calls"] == []
    text = run_cli("compare", str(runs["fp32"]), str(runs["bf16"]), "--top", "3")
    assert text.returncode == 0 and "SAME" in text.stdout and "call confusion" in text.stdout
    assert text.stdout.count("\n") < 30


def test_differing_calls_are_listed_with_their_confusion(runs: dict[str, Path]) -> None:
    rc, data, err = _compare(runs["fp32"], runs["other_clf"])
    assert rc == 1, err
    assert not data["same_classifier"]
    differ = data["sequences_compared"] - data["calls_agree"]
    assert differ > 0 and len(data["differing_calls"]) == min(differ, 10)
    off_diagonal = sum(n for a, row in data["call_confusion"].items() for b, n in row.items()
                       if a != b)
    assert off_diagonal == differ
    first = data["differing_calls"][0]
    assert first["call_a"] != first["call_b"]


@pytest.mark.parametrize(("other", "reason"), [
    ("other_inputs", "other inputs"),
    ("chunk_500", "chunk size 300 vs 500"),
    ("unfinished", "run.json missing"),
    ("missing", "no such folder"),
])
def test_runs_that_cannot_be_compared_exit_2_with_the_reason(runs: dict[str, Path], other: str,
                                                            reason: str) -> None:
    target = runs["root"] / other
    if other == "unfinished" and not target.exists():  # assembled outputs not written yet
        shutil.copytree(runs["fp32"], target)
        (target / "run.json").unlink()
    proc = run_cli("compare", str(runs["fp32"]), str(target))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], proc.stderr
    assert proc.stdout == ""
