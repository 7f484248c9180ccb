"""Per-sequence calls, viral regions and genome tracks (orchestrator.classify.calls + their files).

The call method is checked table-driven on hand-made chunk maxima at every threshold edge
(dyadic thresholds, so edges are exact in floating point); regions and tracks against the chunking
arithmetic; and end to end, a bacterial-like contig with a GC-rich insert scored through a real
tritonserver (toy encoders + a classifier that reads GC content) yields one region over the insert.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from predict_fixtures import TOY_WIDTH, run_cli

from orchestrator.chunk.chunking import chunk_bounds
from orchestrator.classify.calls import (
    CallSettings,
    ChunkScore,
    call_sequence,
    find_regions,
    track_intervals,
)
from orchestrator.embed.triton.server import TritonServer

EDGES = CallSettings(min_weighted_delta=0.25, high_confidence_delta=0.625,
                     min_confident_score=0.75, max_opposing_score=0.25, min_ambiguous_score=0.625,
                     min_viral_prop=0.125, min_nonviral_prop=0.125, min_chunks=4)


def chunks_of(*maxima: tuple[float, float]) -> list[ChunkScore]:
    return [ChunkScore(k, 0, 1, m0, m1) for k, m0, m1 in
            ((k, m0, m1) for k, (m0, m1) in enumerate(maxima, 1))]


CV = (0.125, 0.875)  # confident viral under EDGES (delta 0.75)
CN = (0.875, 0.125)  # confident non-viral

CASES = [
    # (maxima, expected call, tier, weighted delta)
    ((), "no-frames", None, None),
    ((CV,) * 4, "viral", "high", 0.75),
    ((CN,) * 4, "non-viral", "high", -0.75),
    (((0.125, 0.75),) * 4, "viral", "low", 0.625),  # max1 0.75 is not > 0.75: not confident
    (((0.1875, 0.8125),) * 4, "viral", "moderate", 0.625),  # confident, delta exactly the edge
    (((0.125, 0.8125),) * 4, "viral", "high", 0.6875),
    (((0.25, 0.875),) * 4, "viral", "low", 0.625),  # max0 0.25 is not < 0.25: never confident
    (((0.25, 0.5),) * 4, "ambiguous", "review", 0.25),  # weighted exactly +edge: ambiguous
    (((0.5, 0.25),) * 4, "ambiguous", "review", -0.25),
    (((0.5, 0.8125),) * 4, "viral", "low", 0.3125),  # above the edge, no confident chunk
    (((0.5, 0.5),) * 6, "ambiguous", "review", 0.0),  # all weights 0: plain mean
    ((CV,) * 3, "viral", "low", 0.75),  # high, but fewer than min_chunks: down one step
    (((0.5, 0.8125),) * 3, "viral", "review", 0.3125),  # low, few chunks: review
    # 1 confident of 8 = 0.125 >= min_viral_prop: moderate; of 9: low
    ((CV,) + ((0.375, 0.6875),) * 7, "viral", "moderate", None),
    ((CV,) + ((0.375, 0.6875),) * 8, "viral", "low", None),
    # ambiguous chunks (both > 0.625) leave the denominator: 1 of (9 - 8) -> high
    ((CV,) + ((0.6875, 0.6875),) * 8, "viral", "high", 0.75),
    ((CN,) + ((0.6875, 0.375),) * 7, "non-viral", "moderate", None),
]


@pytest.mark.parametrize(("maxima", "call", "tier", "weighted"), CASES)
def test_call_method_edges(maxima, call, tier, weighted) -> None:
    c = call_sequence(chunks_of(*maxima), EDGES)
    assert (c.call, c.confidence) == (call, tier)
    if weighted is not None:
        # float64 sums of a few dyadic values: exact but for a few units of 1e-16
        assert c.weighted_delta == pytest.approx(weighted, abs=1e-12)
    assert c.n_chunks == len(maxima)


def test_weighted_delta_uses_square_root_weights() -> None:
    c = call_sequence(chunks_of((0.0, 1.0), (0.75, 0.5)), CallSettings())
    d = np.array([1.0, -0.25])
    w = np.sqrt(np.abs(d))
    # both sides float64, the same 2-term formula: pytest's default rel 1e-6 is ~1e10 units of slack
    assert c.weighted_delta == pytest.approx(float((d * w).sum() / w.sum()))
    assert (c.n_confident_viral, c.n_confident_nonviral, c.n_ambiguous) == (1, 0, 0)


def _scored(length: int, chunk_size: int, viral: set[int], missing: frozenset = frozenset()
            ) -> list[ChunkScore]:
    bounds = chunk_bounds(length, chunk_size)
    return [ChunkScore(k, s, e, *((0.0, 1.0) if k in viral else (1.0, 0.0)))
            for k, (s, e) in enumerate(bounds, 1) if k not in missing]


def test_regions_bridge_gaps_and_use_the_chunk_arithmetic() -> None:
    length, size = 9_100, 500  # 19 chunks; the overlap is spread, so starts are not k * 500
    bounds = chunk_bounds(length, size)
    chunks = _scored(length, size, {5, 6, 7, 8, 9, 11, 12, 15})
    one_gap = find_regions(chunks, CallSettings(region_max_gap=1, region_min_length=0))
    assert [(r.start, r.end, r.n_chunks, r.n_viral_chunks) for r in one_gap] == [
        (bounds[4][0], bounds[11][1], 8, 7), (bounds[14][0], bounds[14][1], 1, 1)]
    assert bounds[4][0] != 4 * size
    no_gap = find_regions(chunks, CallSettings(region_max_gap=0, region_min_length=0))
    assert [r.n_chunks for r in no_gap] == [5, 2, 1]
    wide = find_regions(chunks, CallSettings(region_max_gap=2, region_min_length=0))
    assert [(r.start, r.end) for r in wide] == [(bounds[4][0], bounds[14][1])]
    assert wide[0].mean_score == pytest.approx(8 / 11)  # float64 mean of 11 values: ~1e-16 off
    longer = find_regions(chunks, CallSettings(region_max_gap=1, region_min_length=1000))
    assert len(longer) == 1  # the one-chunk region (500 bp) is dropped
    # a chunk without kept frames is a gap chunk
    holed = _scored(length, size, {5, 6, 8, 9}, missing=frozenset({7}))
    assert len(find_regions(holed, CallSettings(region_max_gap=1, region_min_length=0))) == 1
    assert len(find_regions(holed, CallSettings(region_max_gap=0, region_min_length=0))) == 2


@pytest.mark.parametrize("size", [300, 500])
def test_track_intervals_tile_the_sequence_without_overlap(size: int) -> None:
    for length in (1, size - 1, size, size + 1, 2 * size + 7, 7_777, 10_000):
        bounds = chunk_bounds(length, size)
        chunks = _scored(length, size, set())
        cuts = track_intervals(chunks, bounds)
        assert cuts[0][0] == 0 and cuts[-1][1] == length
        for (s, e), (bs, be), nxt in zip(cuts, bounds, [*cuts[1:], None], strict=True):
            assert bs <= s < e <= be  # inside its chunk
            if nxt is not None:
                assert e == nxt[0]  # contiguous, no overlap
        if len(bounds) > 1:  # a cut halves the overlap
            (_, e0), (s1, _) = bounds[0], bounds[1]
            assert cuts[0][1] == (s1 + e0) // 2


def write_gc_classifier(path: Path) -> Path:
    """p(virus) = sigmoid(40 (GC - 0.5)) of the toy DNA embedding (letter bins: C=3, G=7)."""
    from orchestrator.classify.classifier import save_classifier_safetensors

    width = 2 * TOY_WIDTH
    w1 = np.zeros((512, width), np.float32)
    b1 = np.zeros(512, np.float32)
    w1[0, [3, 7]], b1[0] = 1.0, -0.5
    w1[1, [3, 7]], b1[1] = -1.0, 0.5
    w2 = np.zeros((2, 512), np.float32)
    w2[1, 0], w2[1, 1] = 40.0, -40.0
    save_classifier_safetensors({
        "hidden_layer.weight": w1, "hidden_layer.bias": b1,
        "bn1.weight": np.ones(512, np.float32), "bn1.bias": np.zeros(512, np.float32),
        "bn1.running_mean": np.zeros(512, np.float32), "bn1.running_var": np.ones(512, np.float32),
        "bn1.num_batches_tracked": np.array(0, np.int64),
        "output_layer.weight": w2, "output_layer.bias": np.zeros(2, np.float32),
    }, path)
    return path


def _rows(path: Path) -> list[list[str]]:
    lines = path.read_text().splitlines()
    return [line.split("\t") for line in lines[1:]]


@pytest.mark.server
def test_prophage_scan_end_to_end(tmp_path: Path, toy_server: TritonServer) -> None:
    length, size = 9_100, 500
    bounds = chunk_bounds(length, size)
    ins_start, ins_end = bounds[6][0], bounds[11][1]  # chunks 7..12 lie inside the insert
    host = "A" * ins_start + "GC" * ((ins_end - ins_start) // 2) + "A" * (length - ins_end)
    assert len(host) == length and (ins_end - ins_start) % 2 == 0
    fasta = tmp_path / "contigs.fa"
    fasta.write_text(f">host\n{host}\n>phage\n{'GC' * 1500}\n>none\nNNNNNNNNNN\n")
    clf = write_gc_classifier(tmp_path / "gc.safetensors")
    args = [str(fasta), "-o", str(tmp_path / "out"), "--chunk-size", "500", "--classifier",
            str(clf), "--no-report", "--window", "8"]
    proc = run_cli("predict", *args, "--server", toy_server.grpc_url)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    _check_prophage(out, bounds, ins_start, ins_end, length)
    first = (out / "sequence_calls.tsv").read_bytes()
    # other thresholds on the finished run: re-derived from the chunk table, not re-embedded
    rerun = run_cli("predict", *args, "--server", toy_server.grpc_url, "--min-chunks", "20",
                    "--region-min-length", "5000")
    assert rerun.returncode == 0, rerun.stderr
    assert "nothing is re-embedded" in rerun.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["parameters"]["calls"]["min_chunks"] == 20
    assert run["resumed"]["windows_run"] > 0  # the record of the first run, not rewritten
    calls = {r[0]: r for r in _rows(out / "sequence_calls.tsv")}
    assert calls["phage"][2:4] == ["viral", "low"] and calls["host"][2:4] == ["non-viral", "low"]
    assert (out / "sequence_calls.tsv").read_bytes() != first
    assert _rows(out / "viral_regions.tsv") == []  # both regions are shorter than 5000 bp


def _check_prophage(out: Path, bounds: list, ins_start: int, ins_end: int, length: int) -> None:
    regions = _rows(out / "viral_regions.tsv")
    assert [r[:7] for r in regions] == [
        ["host", "host_region_1", str(ins_start + 1), str(ins_end), str(ins_end - ins_start),
         "6", "6"],
        ["phage", "phage_region_1", "1", "3000", "3000", "6", "6"]]
    bed = (out / "viral_regions.bed").read_text().splitlines()
    assert bed[0].startswith("track ")
    assert bed[1].split("\t")[:4] == ["host", str(ins_start), str(ins_end), "host_region_1"]
    assert 0 <= int(bed[1].split("\t")[4]) <= 1000
    calls = {r[0]: r for r in _rows(out / "sequence_calls.tsv")}
    # 13 bacterial chunks of 19: weighted delta about (6 - 13) / 19 = -0.37, above -0.6
    assert calls["host"][2:5] == ["non-viral", "moderate", "-0.368"]
    assert calls["phage"][2:4] == ["viral", "high"]
    assert calls["none"][2:5] == ["no-frames", "NA", "NA"]
    track = (out / "chunk_scores.bedgraph").read_text().splitlines()
    assert track[0].startswith("track type=bedGraph")
    host_rows = [r.split("\t") for r in track[1:] if r.startswith("host\t")]
    assert len(host_rows) == len(bounds)
    for (_chrom, s, e, score), (bs, be) in zip(host_rows, bounds, strict=True):
        assert bs <= int(s) < int(e) <= be and 0.0 <= float(score) <= 1.0
    assert int(host_rows[-1][2]) == length
    highest = {line.split("\t")[0]: line.split("\t")[3]
               for line in (out / "prediction_results_highestscore.csv").read_text().splitlines()[1:]}
    assert [r[3] for r in host_rows] == [highest[f"host_chunk_{k}"] for k in range(1, 20)]
    run = json.loads((out / "run.json").read_text())
    assert run["parameters"]["calls"]["region_max_gap"] == 1
    assert run["counts"]["windows"] > 2  # records span windows
