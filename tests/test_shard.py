"""One sample over N processes: `predict --shard K/N` and `orchestrator merge`, byte for byte.

A real tritonserver with toy models serves every run. The sample mixes FASTA (the golden edge
cases), FASTQ and an unaligned BAM, with records of every length class (empty, shorter than a
codon, shorter than a chunk, exact multiples, many chunks). Every answer file of the merge must
equal the unsharded run's bytes, whatever order the shards ran in and with one shard killed
and resumed. Windows are small, so shards and the unsharded run cut windows in different places.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from golden_data import GOLDEN
from predict_fixtures import (
    run_cli,
    start_predict,
    stderr_of,
    wait_for_window,
    write_toy_classifier,
)
from test_inputs import write_alignments, write_fastq

from orchestrator.errors import InputError
from orchestrator.read.formats import read_records
from orchestrator.read.record import Record
from orchestrator.read.scan import scan_inputs
from orchestrator.read.shard import Shard, parse_shard, shard_of

ANSWERS = ("prediction_results.txt", "prediction_results_highestscore.csv",
           "sequence_summary.tsv", "sequence_calls.tsv", "contigs_classified.tsv",
           "viral_regions.tsv", "viral_regions.bed", "chunk_scores.bedgraph",
           "virnucpro_mqc.tsv", "virnucpro_calls_mqc.tsv", "embeddings.h5")
SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"
         if a + b + c not in ("TAA", "TAG", "TGA")]


def _coding(rng: np.random.Generator, length: int) -> bytes:
    codons = rng.integers(0, len(SENSE), size=length // 3 + 1)
    return "".join(SENSE[c] for c in codons)[:length].encode()


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> list[str]:
    """FASTA (golden edge cases) + FASTQ + BAM: one sample of every length class."""
    root = tmp_path_factory.mktemp("shard_sample")
    rng = np.random.default_rng(25)
    lengths = [0, 2, 137, 499, 500, 501, 999, 1000, 1001, 1500, 2600, 40, 750]
    fq = [Record(f"fq{i}_{n}", _coding(rng, n)) for i, n in enumerate(lengths)]
    bam = [Record(f"bam{i}_{n}", _coding(rng, n)) for i, n in enumerate(reversed(lengths))]
    return [str(GOLDEN / "pub_edge_500.fa"), str(write_fastq(root / "reads.fq", fq)),
            str(write_alignments(root / "reads.bam", bam))]


@pytest.fixture(scope="module")
def job(tmp_path_factory, sample, slow_server):
    """The predict arguments (no -o) and the unsharded run's folder (the reference)."""
    root = tmp_path_factory.mktemp("shard_job")
    clf = write_toy_classifier(root / "clf.safetensors")
    args = [*sample, "--chunk-size", "500", "--classifier", str(clf), "--server",
            slow_server.grpc_url, "--window", "8", "--batch-size", "8", "--save-embeddings",
            "--region-min-length", "500", "--min-chunks", "2"]
    ref = root / "unsharded"
    proc = run_cli("predict", *args, "-o", str(ref))
    assert proc.returncode == 0, proc.stderr
    return args, ref


def _run_shards(args: list[str], root: Path, n: int, order: list[int]) -> list[Path]:
    dirs = [root / f"shard{k}" for k in range(1, n + 1)]
    for k in order:
        proc = run_cli("predict", *args, "--shard", f"{k}/{n}", "-o", str(dirs[k - 1]))
        assert proc.returncode == 0, proc.stderr
    return dirs


def _report_normalised(outdir: Path) -> str:
    """report.html without what differs between any two runs: the time it was made, the run's
    finish time, its folder, and the window count (the shards cut their own windows)."""
    text = (outdir / "report.html").read_text()
    text = text.replace(str(outdir.resolve()), "OUTDIR").replace(str(outdir), "OUTDIR")
    text = text.replace(f"report: {outdir.resolve().name}</title>", "report: OUTDIR</title>")
    text = re.sub(r"report generated [0-9T:+\-]+", "report generated T", text)
    text = re.sub(r"<td>\d{4}-\d\d-\d\dT[0-9:+\-]+</td>", "<td>T</td>", text)
    return re.sub(r"(windows</t[hd]><td>)\d+", r"\1W", text)


def _assert_same(merged: Path, ref: Path) -> None:
    for name in ANSWERS:
        assert (merged / name).read_bytes() == (ref / name).read_bytes(), name
    assert _report_normalised(merged) == _report_normalised(ref)
    a, b = (json.loads((d / "run.json").read_text()) for d in (merged, ref))
    for key in ("records", "bases", "chunks", "frames"):
        assert a["counts"][key] == b["counts"][key], key
    assert a["parameters"]["outdir"] == str(merged)
    assert "shard" not in a["parameters"]


def test_the_split_is_by_bases_whole_records_each_in_one_shard(sample) -> None:
    total = scan_inputs(sample).n_bases
    records = list(read_records(sample))
    for n in (1, 3, 7):
        parts = [list(Shard(k, n).select(iter(records), total)) for k in range(1, n + 1)]
        # every record in exactly one shard, shards contiguous in input order
        assert [r.id for part in parts for r in part] == [r.id for r in records]
        longest = max(len(r.seq) for r in records)
        for part in parts:  # within one record of an equal share of the bases
            assert abs(sum(len(r.seq) for r in part) - total / n) <= longest
    assert shard_of(0, 0, 0, 5) == 1  # a sample of empty records: all in shard 1
    assert shard_of(99, 1, 100, 4) == 4


@pytest.mark.server
@pytest.mark.parametrize("text", ["0/3", "4/3", "a/b", "3", "-1/3", "1/0"])
def test_bad_shard_is_one_line_exit_2(text, tmp_path, job) -> None:
    args, _ = job
    with pytest.raises(InputError):
        parse_shard(text)
    proc = run_cli("predict", *args, "--shard", text, "-o", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()[-1:]) == 1 and "--shard" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.server
def test_three_shards_in_reverse_order_merge_byte_identical(tmp_path, job) -> None:
    args, ref = job
    dirs = _run_shards(args, tmp_path, 3, [3, 1, 2])
    runs = [json.loads((d / "run.json").read_text()) for d in dirs]
    assert [r["parameters"]["shard"] for r in runs] == ["1/3", "2/3", "3/3"]
    assert all(r["counts"]["records"] > 0 for r in runs)
    merged = tmp_path / "merged"
    proc = run_cli("merge", *map(str, reversed(dirs)), "-o", str(merged))
    assert proc.returncode == 0, proc.stderr
    _assert_same(merged, ref)
    run = json.loads((merged / "run.json").read_text())
    assert run["counts"]["windows"] == sum(r["counts"]["windows"] for r in runs)
    assert run["throughput"]["frames_embedded"] == sum(
        r["throughput"]["frames_embedded"] for r in runs)
    assert run["timings"]["embed"] == pytest.approx(sum(r["timings"]["embed"] for r in runs),
                                                    abs=1e-3)  # each rounded to 4 places
    assert [s["shard"] for s in run["shards"]] == ["1/3", "2/3", "3/3"]
    # the merged folder is a finished run: `call` re-derives its answers
    proc = run_cli("call", str(merged), "--min-chunks", "2", "--region-min-length", "500")
    assert proc.returncode == 0, proc.stderr
    _assert_same(merged, ref)


@pytest.mark.server
def test_seven_shards_one_killed_and_resumed_merge_byte_identical(tmp_path, job) -> None:
    args, ref = job
    dirs = [tmp_path / f"shard{k}" for k in range(1, 8)]
    biggest = 1 + max(range(7), key=lambda k: len(list(Shard(k + 1, 7).select(
        read_records(args[:3]), scan_inputs(args[:3]).n_bases))))
    victim = dirs[biggest - 1]
    proc = start_predict([*args, "--shard", f"{biggest}/7", "-o", str(victim)])
    wait_for_window(proc, victim)
    os.kill(proc.pid, signal.SIGKILL)
    stderr_of(proc)
    assert proc.returncode == -signal.SIGKILL
    # an unfinished shard is refused, nothing written
    others = [k for k in range(1, 8) if k != biggest]
    _run_shards(args, tmp_path, 7, others[::2] + others[1::2])
    merged = tmp_path / "merged"
    refused = run_cli("merge", *map(str, dirs), "-o", str(merged))
    assert refused.returncode == 2
    assert "unfinished" in refused.stderr and str(victim) in refused.stderr
    assert not merged.exists()
    resumed = run_cli("predict", *args, "--shard", f"{biggest}/7", "-o", str(victim))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((victim / "run.json").read_text())["resumed"]["resumed"]
    proc = run_cli("merge", *map(str, dirs), "-o", str(merged))
    assert proc.returncode == 0, proc.stderr
    _assert_same(merged, ref)


@pytest.fixture(scope="module")
def two_shards(tmp_path_factory, job) -> list[Path]:
    args, _ = job
    root = tmp_path_factory.mktemp("two_shards")
    return _run_shards(args, root, 2, [1, 2])


def _refused(tmp_path: Path, *dirs: Path, out: Path | None = None) -> str:
    target = out if out is not None else tmp_path / "merged"
    existed = target.exists()
    before = sorted(p.name for p in target.iterdir()) if existed else None
    proc = run_cli("merge", *map(str, dirs), "-o", str(target))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    if existed:
        assert sorted(p.name for p in target.iterdir()) == before
    else:
        assert not target.exists()
    return proc.stderr


@pytest.mark.server
def test_merge_refusals_name_the_shard_and_write_nothing(tmp_path, job, two_shards) -> None:
    args, ref = job
    one, two = two_shards
    assert "2 of 2 missing" in _refused(tmp_path, one)
    err = _refused(tmp_path, one, two, one)
    assert "repeated" in err and str(one) in err
    assert "no such folder" in _refused(tmp_path, one, tmp_path / "nowhere")
    err = _refused(tmp_path, one, ref)
    assert "not a shard" in err and str(ref) in err
    # the output folder is one of the shards
    err = _refused(tmp_path, one, two, out=two)
    assert "is shard" in err
    # a shard of 3 among shards of 2
    three = tmp_path / "of3"
    assert run_cli("predict", *args, "--shard", "2/3", "-o", str(three)).returncode == 0
    err = _refused(tmp_path, one, three)
    assert "different number of shards" in err and str(three) in err
    # other options (call thresholds) and other inputs
    other = tmp_path / "other_opts"
    assert run_cli("predict", *args, "--min-chunks", "3", "--shard", "2/2",
                   "-o", str(other)).returncode == 0
    err = _refused(tmp_path, one, other)
    assert "different call thresholds" in err and str(other) in err
    fewer = tmp_path / "other_inputs"
    assert run_cli("predict", *args[1:], "--shard", "2/2", "-o", str(fewer)).returncode == 0
    err = _refused(tmp_path, one, fewer)
    assert "different inputs" in err and str(fewer) in err
    # a folder holding another run is not overwritten
    assert "already holds another run" in _refused(tmp_path, one, two, out=ref)


@pytest.mark.server
def test_merge_twice_into_the_same_folder_is_the_same(tmp_path, job, two_shards) -> None:
    _, ref = job
    merged = tmp_path / "merged"
    for _ in range(2):
        proc = run_cli("merge", *map(str, two_shards), "-o", str(merged))
        assert proc.returncode == 0, proc.stderr
        _assert_same(merged, ref)
