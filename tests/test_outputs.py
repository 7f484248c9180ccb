"""Output writers: byte-exact against the original tool's files, score formatting, atomic writes."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
from golden_data import GOLDEN

from orchestrator import atomic
from orchestrator.atomic import write_atomic, write_json_atomic
from orchestrator.classify.consensus import chunk_maxima
from orchestrator.read.record import count_ambiguous
from orchestrator.write.formats import (
    HIGHEST_HEADER,
    PREDICTIONS_HEADER,
    SUMMARY_HEADER,
    format_highest_rows,
    format_score,
    format_scores,
    prediction_rows,
)
from orchestrator.write.paths import OutputPaths
from orchestrator.write.tally import SequenceTally


def tally_for(seq_id: str, seq: bytes, n_chunks: int) -> SequenceTally:
    """A record's tally as predict starts it (length and ambiguous bases from the sequence)."""
    return SequenceTally(seq_id, len(seq), n_chunks, count_ambiguous(seq))

MERGED = GOLDEN / "broad_fixtures" / "test_with_orfs_merged"


def parse_predictions(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    assert lines[0] + "\n" == PREDICTIONS_HEADER
    ids = [ln.split("\t")[0] for ln in lines[1:]]
    probs = np.array([[float(x) for x in ln.split("\t")[2:4]] for ln in lines[1:]], np.float32)
    return ids, probs


def chunk_id_of(frame_id: str) -> str:
    """Modified_ID as the original derives it: the frame ID minus its last 2 characters (F1..R3)."""
    return frame_id[:-2]


def chunk_groups(frame_ids: list[str]) -> tuple[list[str], list[int]]:
    """(chunk IDs, index of each chunk's first frame) for frames grouped by chunk, as in a window."""
    ids: list[str] = []
    starts: list[int] = []
    for i, fid in enumerate(frame_ids):
        cid = chunk_id_of(fid)
        if not ids or ids[-1] != cid:
            ids.append(cid)
            starts.append(i)
    return ids, starts


# --------------------------------------------------------------------------- golden files


def test_prediction_results_reproduced_byte_for_byte() -> None:
    ids, probs = parse_predictions(MERGED / "prediction_results.txt")
    text = PREDICTIONS_HEADER + prediction_rows(ids, probs)
    assert text.encode() == (MERGED / "prediction_results.txt").read_bytes()


def test_highestscore_first_two_columns_match_original() -> None:
    ids, probs = parse_predictions(MERGED / "prediction_results.txt")
    chunk_ids, starts = chunk_groups(ids)
    rows = format_highest_rows(chunk_ids, chunk_maxima(starts, probs))
    ours = (HIGHEST_HEADER + "".join(sorted(rows))).splitlines()
    original = (MERGED / "prediction_results_highestscore.csv").read_text().splitlines()
    assert ours[0] == "Modified_ID\tIs_Virus\tmax_score_0\tmax_score_1"
    assert ["\t".join(line.split("\t")[:2]) for line in ours] == original
    # synthetic_seq_2_chunk_1: R1 says others (0.55 / 0.45), R2 virus: maxima 0.5501341, 0.93954605.
    assert ours[2] == "synthetic_seq_2_chunk_1\tTrue\t0.5501341\t0.93954605"


def test_the_vanilla_copy_is_the_same_fixture() -> None:
    vanilla = GOLDEN / "broad_fixtures" / "reference_vanilla_output"
    for name in ("prediction_results.txt", "prediction_results_highestscore.csv"):
        assert (vanilla / name).read_bytes() == (MERGED / name).read_bytes()


# --------------------------------------------------------------------------- score strings


def _significant_digits(s: str) -> int:
    mantissa = s.lstrip("-").split("e")[0].replace(".", "")
    return len(mantissa.strip("0")) or 1


def _shortest_digits(v: np.float32) -> int:
    """Fewest significant digits whose decimal reading rounds back to the same float32."""
    for p in range(1, 10):
        with np.errstate(over="ignore"):  # rounding up near float32 max overflows to inf
            if np.float32(float(f"{float(v):.{p - 1}e}")) == v:
                return p
    raise AssertionError(v)


SPECIAL = [0.0, -0.0, 1.0, 2.0, 0.5, 1e-05, 1.5e-05, 1e-4, 9.99e-05, 1e-3, 1e16, 9.999e15,
           1e15, 123456789.0, 3.4028235e38, 1.17549435e-38, 1.4e-45, 0.1, 1 / 3, 2 / 3,
           0.002076708, 0.9979233, 0.99999994, 5.9604645e-08, -1.5, 100.0, 1e7, 12345678.0]


def test_format_score_matches_numpy_str_and_is_shortest() -> None:
    rng = np.random.default_rng(0)
    # Random bit patterns cover every exponent; plus uniform probabilities and special values.
    bits = rng.integers(0, 2**32, size=8000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    values = np.concatenate([
        bits[np.isfinite(bits)], rng.random(8000).astype(np.float32), np.float32(SPECIAL),
    ])
    for v in values:
        s = format_score(v)
        assert s == str(np.float32(v))
        assert np.float32(float(s)) == v or (math.isnan(v) and s == "nan")
        assert _significant_digits(s) == _shortest_digits(v), (s, v)
    assert format_scores(values) == [str(v) for v in values]


@pytest.mark.parametrize(
    "value, text",
    [(0.002076708, "0.002076708"), (0.9979233, "0.9979233"), (1e-05, "1e-05"), (1.0, "1.0"),
     (1e-4, "1e-04"), (0.0, "0.0"), (1e16, "1e+16"), (float("nan"), "nan"),
     (float("inf"), "inf"), (np.float64(0.1), "0.1")],
)
def test_format_score_examples(value: float, text: str) -> None:
    assert format_score(value) == text


# --------------------------------------------------------------------------- rows


def test_prediction_labels_and_ties() -> None:
    ids = ["a_chunk_1F1", "a_chunk_1R1", "a_chunk_2F2"]
    probs = np.array([[0.25, 0.75], [0.75, 0.25], [0.5, 0.5]], np.float32)
    assert prediction_rows(ids, probs) == (
        "a_chunk_1F1\tvirus\t0.25\t0.75\n"
        "a_chunk_1R1\tothers\t0.75\t0.25\n"
        "a_chunk_2F2\tothers\t0.5\t0.5\n"
    )
    assert prediction_rows([], np.zeros((0, 2), np.float32)) == ""
    with pytest.raises(ValueError):
        prediction_rows(ids, probs[:2])


def test_chunk_maxima_per_chunk_from_different_frames() -> None:
    ids = ["s_chunk_1F1", "s_chunk_1R2", "s_chunk_2F3", "t_chunk_1R1"]
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]], np.float32)
    chunk_ids, starts = chunk_groups(ids)
    maxima = chunk_maxima(starts, probs)
    assert chunk_ids == ["s_chunk_1", "s_chunk_2", "t_chunk_1"]
    expected = np.array([[0.9, 0.7], [0.6, 0.4], [0.2, 0.8]], np.float32)
    assert maxima.dtype == np.float32 and np.array_equal(maxima, expected)
    # The two maxima come from different frames: 0.9 (others) vs 0.7 -> not virus.
    assert format_highest_rows(chunk_ids, maxima) == [
        "s_chunk_1\tFalse\t0.9\t0.7\n", "s_chunk_2\tFalse\t0.6\t0.4\n", "t_chunk_1\tTrue\t0.2\t0.8\n"]


def test_is_virus_tie_is_true() -> None:
    assert format_highest_rows(["c"], np.array([[0.5, 0.5]], np.float32)) == ["c\tTrue\t0.5\t0.5\n"]
    assert chunk_maxima([], np.empty((0, 2), np.float32)).shape == (0, 2)


# --------------------------------------------------------------------------- sequence summary


def test_summary_header() -> None:
    assert SUMMARY_HEADER == (
        "seq_id\tlength\tn_chunks\tn_chunks_scored\tn_frames\tn_viral_chunks\t"
        "max_virus_score\tmean_virus_score\tn_ambiguous_bases\n"
    )


def test_count_ambiguous() -> None:
    assert count_ambiguous(b"") == 0
    assert count_ambiguous(b"ACGTacgt") == 0
    assert count_ambiguous(b"ACGTNnRYKM-.U*") == 10
    assert count_ambiguous(b"N" * 1000 + b"A" * 7) == 1000


def test_tally_without_frames_says_na() -> None:
    t = tally_for("empty_rec", b"", n_chunks=0)
    assert t.row() == "empty_rec\t0\t0\t0\t0\t0\tNA\tNA\t0\n"
    t = tally_for("all_n", b"N" * 600, n_chunks=2)
    assert t.row() == "all_n\t600\t2\t0\t0\t0\tNA\tNA\t600\n"


def test_tally_counts_chunks_frames_and_scores() -> None:
    t = tally_for("r", b"ACGTN" * 200, n_chunks=3)
    # chunk 1: two frames, max p0 0.9 / max p1 0.7 -> not viral; chunk 3 viral; chunk 2 unscored.
    t.add_chunk_maxima(["r_chunk_1", "r_chunk_3"],
                       np.array([[0.9, 0.7], [0.25, 0.75]], np.float32), n_frames=3)
    mean = format_score(np.float32((np.float64(np.float32(0.7)) + np.float32(0.75)) / 2))
    assert t.row() == f"r\t1000\t3\t2\t3\t1\t0.75\t{mean}\t200\n"
    # A later window with another frame of chunk 1 raises its maximum.
    t.add_chunk_maxima(["r_chunk_1"], np.array([[0.05, 0.95]], np.float32), n_frames=1)
    assert t.row().split("\t")[3:8] == ["2", "4", "2", "0.95", format_score(0.85)]


def test_tally_checkpoint_round_trip() -> None:
    t = tally_for("r", b"ACGTRY", n_chunks=1)
    t.add_chunk_maxima(["r_chunk_1"], np.array([[0.0020767080, 0.9979233]], np.float32), n_frames=1)
    back = SequenceTally.from_dict(json.loads(json.dumps(t.to_dict())))
    assert back.row() == t.row()
    assert t.row() == "r\t6\t1\t1\t1\t1\t0.9979233\t0.9979233\t2\n"


# --------------------------------------------------------------------------- paths and writes


def test_output_paths(tmp_path: Path) -> None:
    paths = OutputPaths(tmp_path / "out")
    assert paths.predictions.name == "prediction_results.txt"
    assert paths.highest.name == "prediction_results_highestscore.csv"
    assert paths.summary.name == "sequence_summary.tsv"
    assert paths.run_json.name == "run.json"
    assert paths.state == tmp_path / "out" / ".virnucpro_state"
    assert [p.name for p in paths.results()] == [
        "prediction_results.txt", "prediction_results_highestscore.csv", "sequence_summary.tsv",
        "run.json"]
    assert [p.name for p in paths.answers()] == [
        "sequence_calls.tsv", "viral_regions.tsv", "viral_regions.bed", "chunk_scores.bedgraph",
        "contigs_classified.tsv", "virnucpro_mqc.tsv", "virnucpro_calls_mqc.tsv"]
    assert paths.report.name == "report.html"
    assert paths.chunk_table.parent == paths.state


def test_write_atomic_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "prediction_results.txt"
    write_atomic(target, "first\n")
    write_atomic(target, b"second\n")
    assert target.read_bytes() == b"second\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prediction_results.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask


def test_write_atomic_failure_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "run.json"
    write_atomic(target, "old\n")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk gone"):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_write_json_atomic(tmp_path: Path) -> None:
    obj = {"version": "0.1.0", "counts": {"frames": 4}, "ids": ["ä", "b"]}
    write_json_atomic(tmp_path / "run.json", obj)
    text = (tmp_path / "run.json").read_text(encoding="utf-8")
    assert text.endswith("}\n")
    assert json.loads(text) == obj


def test_chunk_maxima_and_tally_match_a_per_frame_reference() -> None:
    """The vectorised per-window path equals a plain loop over frames, ties and window cuts included."""
    rng = np.random.default_rng(3)
    sizes = [1, 3, 6, 2, 1, 4]
    ids = [f"r_chunk_{k}{lab}" for k, n in enumerate(sizes, 1)
           for lab in ("F1", "F2", "F3", "R1", "R2", "R3")[:n]]
    p1 = rng.random(len(ids)).astype(np.float32)
    p1[:4] = 0.5  # ties: Is_Virus and n_viral use >=
    probs = np.stack([1 - p1, p1], axis=1).astype(np.float32)
    reference: dict[str, list[float]] = {}
    for fid, (a, b) in zip(ids, probs.tolist(), strict=True):
        m = reference.setdefault(chunk_id_of(fid), [a, b])
        m[0], m[1] = max(m[0], a), max(m[1], b)
    chunk_ids, starts = chunk_groups(ids)
    maxima = chunk_maxima(starts, probs)
    assert chunk_ids == list(reference) and maxima.tolist() == list(reference.values())
    expected_rows = [f"{c}\t{b >= a}\t{format_score(a)}\t{format_score(b)}\n"
                     for c, (a, b) in reference.items()]
    assert format_highest_rows(chunk_ids, maxima) == expected_rows
    # one record cut across two windows gives the same summary row as in one piece
    whole = SequenceTally("r", 100, 6, 0)
    whole.add_chunk_maxima(chunk_ids, maxima, len(ids))
    cut = SequenceTally("r", 100, 6, 0)
    cut.add_chunk_maxima(chunk_ids[:3], maxima[:3], 10)
    cut.add_chunk_maxima(chunk_ids[3:], maxima[3:], len(ids) - 10)
    assert whole.row() == cut.row() and whole.to_dict() == cut.to_dict()
    viral = sum(b >= a for a, b in reference.values())
    assert whole.row().split("\t")[3:6] == ["6", str(len(ids)), str(viral)]
