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
from orchestrator.commands.cli import main
from orchestrator.write.paths import CHUNK_TABLE_NAME, STATE_DIR_NAME

pytestmark = pytest.mark.server

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "example.fa"


def _predict(out: Path, repo: Path, clf: Path, fasta: Path = EXAMPLE, chunk_size: str = "300") -> Path:
    """In-process: six runs share one torch import (the runs are the inputs of compare, not the
    subject of these tests)."""
    code = main(["predict", str(fasta), "-o", str(out), "--chunk-size", chunk_size,
                 "--classifier", str(clf), "--backend", "local", "--model-repository", str(repo),
                 "--no-report", "-q"])
    assert code == 0
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


def _copy(runs: dict[str, Path], name: str, source: str = "fp32_again") -> Path:
    target = runs["root"] / name
    if not target.exists():
        shutil.copytree(runs[source], target)
    return target


def _one_line_exit_2(a: Path, b: Path, *extra: str) -> str:
    proc = run_cli("compare", str(a), str(b), *extra)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and proc.stdout == "", proc.stderr
    return lines[0]


def test_a_run_without_its_sequence_calls_cannot_be_compared(runs: dict[str, Path]) -> None:
    run = _copy(runs, "no_calls")
    (run / "sequence_calls.tsv").unlink(missing_ok=True)
    line = _one_line_exit_2(runs["fp32"], run)
    assert "sequence_calls.tsv is missing" in line and "orchestrator call" in line


@pytest.mark.parametrize(("name", "file", "damage", "reason"), [
    ("short_call_row", "sequence_calls.tsv", lambda row: row.split("\t")[0], "1 fields, expected 5"),
    ("bad_score", f"{STATE_DIR_NAME}/{CHUNK_TABLE_NAME}", lambda row: "\t".join([*row.split("\t")[:2], "high",
                                                                  *row.split("\t")[3:]]),
     "'high' is not a number"),
])
def test_a_malformed_row_makes_runs_not_comparable(runs: dict[str, Path], name: str, file: str,
                                                    damage, reason: str) -> None:
    run = _copy(runs, name)
    path = run / file
    lines = path.read_text().splitlines()
    row = 1 if file == "sequence_calls.tsv" else 0  # past the header
    lines[row] = damage(lines[row])
    path.write_text("\n".join(lines) + "\n")
    line = _one_line_exit_2(runs["fp32"], run)
    assert f"{path} line {row + 1} is malformed" in line and reason in line


def test_other_call_thresholds_are_reported_as_such(runs: dict[str, Path]) -> None:
    run = _copy(runs, "other_thresholds")
    proc = run_cli("call", str(run), "--min-weighted-delta", "0.45")
    assert proc.returncode == 0, proc.stderr
    line = _one_line_exit_2(runs["fp32"], run)
    assert "call thresholds differ" in line and '"min_weighted_delta": 0.45' in line


def _set_first_chunk(run: Path, scores: tuple[str, str]) -> None:
    path = run / STATE_DIR_NAME / CHUNK_TABLE_NAME
    lines = path.read_text().splitlines()
    fields = lines[0].split("\t")
    lines[0] = "\t".join([*fields[:2], *scores, *fields[4:]])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("b_score", "expected"), [("0.6", 0), ("0.6000001", 1)])
def test_a_delta_exactly_at_the_tolerance_is_within_it(runs: dict[str, Path], b_score: str,
                                                        expected: int) -> None:
    # 0.6 - 0.5 is exactly 0.1 as written; in float32 it reads 0.10000000149 (over 0.1), in
    # float64 0.09999999999999998: binary rounding could put it on either side
    a, b = _copy(runs, "at_tol_a", "fp32"), _copy(runs, f"at_tol_b_{b_score}")
    _set_first_chunk(a, ("0.5", "0.5"))
    _set_first_chunk(b, (b_score, "0.5"))
    rc, data, err = _compare(a, b, "--max-score-diff", "0.1")
    assert rc == expected, err
    assert data["chunks_over_tolerance"] == expected
