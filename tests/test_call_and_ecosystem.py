"""The tools labs already run around a VirNucPro step: `orchestrator call` (other thresholds after
the servers are gone), Broad's contig table, MultiQC over several runs, and the CWL tool.

One module fixture makes two runs through a toy tritonserver (numpy models, GC-reading
classifier) and a `predict` rerun with other thresholds, then stops the server: every `call`
below runs with no server at all. MultiQC and cwltool are the real programs (the `workflows`
extra).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from predict_fixtures import outputs_of, run_cli, write_toy_repository
from test_calls import write_gc_classifier

from orchestrator.commands.cli import main
from orchestrator.embed.triton.server import TritonServer
from orchestrator.write.formats import BROAD_CALLS_HEADER, _broad_number, natural_sort_key
from orchestrator.write.rederive import default_sample

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CWL_TOOL = ROOT / "workflows" / "cwl" / "virnucpro_predict.cwl"
ANSWERS = ("sequence_calls.tsv", "viral_regions.tsv", "viral_regions.bed", "chunk_scores.bedgraph",
           "contigs_classified.tsv", "virnucpro_mqc.tsv", "virnucpro_calls_mqc.tsv")
OTHER_THRESHOLDS = ("--min-chunks", "3", "--region-min-length", "2500", "--min-weighted-delta", "0.5")
BROAD_WORDS = {"viral": "Viral", "non-viral": "Non-viral", "ambiguous": "Ambiguous"}
BROAD_TIERS = {"high": "high_confidence", "moderate": "moderate_confidence",
               "low": "low_confidence", "review": "review"}


def _contigs(path: Path) -> Path:
    """SPAdes-like names (natural order differs from string order), a host contig with a GC-rich
    insert (viral chunks inside), a phage, an AT-rich contig and one without any kept frame."""
    host = "A" * 3000 + "GC" * 1500 + "A" * 3100
    path.write_text(f">NODE_2_length_9100\n{host}\n>NODE_10_length_3000\n{'GC' * 1500}\n"
                    f">NODE_3_length_4\nNNNN\n>node_1_length_1600\n{'AT' * 800}\n"
                    f">NODE_11_length_2400\n{'GCA' * 800}\n")
    return path


def _host_only(path: Path) -> Path:
    path.write_text(f">h1\n{'A' * 3000}\n>h2\n{'AT' * 700}\n")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("ecosystem")
    clf = write_gc_classifier(root / "gc.safetensors")
    contigs = _contigs(root / "sample_a.fasta")
    host = _host_only(root / "host.fa")
    common = ("--chunk-size", "500", "--classifier", str(clf), "--no-progress")
    with TritonServer(write_toy_repository(root / "repo")) as server:
        for name, fasta, extra in (("a", contigs, ()), ("b", host, ("--sample", "beta"))):
            proc = run_cli("predict", str(fasta), "-o", str(root / name), *common,
                           "--server", server.grpc_url, *extra)
            assert proc.returncode == 0, proc.stderr
        shutil.copytree(root / "a", root / "rerun")
        shutil.copytree(root / "a", root / "offline")
        proc = run_cli("predict", str(contigs), "-o", str(root / "rerun"), *common,
                       "--server", server.grpc_url, *OTHER_THRESHOLDS)
        assert proc.returncode == 0, proc.stderr
        assert "nothing is re-embedded" in proc.stderr
    yield {"root": root, "a": root / "a", "b": root / "b", "rerun": root / "rerun",
           "offline": root / "offline", "contigs": contigs, "classifier": clf}


def _snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder` (hidden ones too) but `skip`: its bytes and modification time."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip}


def _table(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


# --------------------------------------------------------------------------- orchestrator call


@pytest.mark.server
def test_call_without_servers_writes_what_a_predict_rerun_writes(runs: dict[str, Path]) -> None:
    offline, rerun, first = runs["offline"], runs["rerun"], runs["a"]
    report_before = (offline / "report.html").stat().st_mtime_ns
    proc = run_cli("call", str(offline), *OTHER_THRESHOLDS)  # the server is stopped by now
    assert proc.returncode == 0, proc.stderr
    for name in ANSWERS:
        assert (offline / name).read_bytes() == (rerun / name).read_bytes(), name
    assert (offline / "sequence_calls.tsv").read_bytes() != (first / "sequence_calls.tsv").read_bytes()
    assert (offline / "viral_regions.tsv").read_bytes() != (first / "viral_regions.tsv").read_bytes()
    got, want = (json.loads((d / "run.json").read_text()) for d in (offline, rerun))
    assert got["parameters"] == want["parameters"]
    assert got["parameters"]["calls"]["min_chunks"] == 3
    assert got["counts"] == want["counts"]
    assert (offline / "report.html").stat().st_mtime_ns > report_before
    # back to the defaults: the first run's files again, and a new sample name reaches MultiQC
    assert main(["call", str(offline), "--sample", "patient 7", "--no-report", "-q"]) == 0
    for name in ANSWERS[:5]:
        assert (offline / name).read_bytes() == (first / name).read_bytes(), name
    assert (offline / "virnucpro_mqc.tsv").read_text().splitlines()[-1].startswith("patient 7\t")
    assert json.loads((offline / "run.json").read_text())["parameters"]["sample"] == "patient 7"


@pytest.mark.server
def test_call_refuses_a_folder_that_is_not_a_finished_run(runs: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "sequence_calls.tsv").write_text("seq_id\tcall\nx\tviral\n")
    (foreign / "run.json").write_text('{"tool": "something else"}\n')
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs["a"], unfinished)
    manifest = unfinished / ".virnucpro_state" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "complete": False}))
    no_table = tmp_path / "no_table"
    shutil.copytree(runs["a"], no_table)
    (no_table / ".virnucpro_state" / "chunk_maxima.tsv").unlink()
    no_state = tmp_path / "no_state"
    shutil.copytree(runs["a"], no_state)
    shutil.rmtree(no_state / ".virnucpro_state")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {tmp_path / "missing": "no such folder", empty: "run.json missing",
             foreign: "names no chunk size", unfinished: "has not finished",
             no_table: "chunk_maxima.tsv", no_state: "no checkpoint manifest"}
    for folder, reason in cases.items():
        before = _snapshot(folder)
        assert main(["call", str(folder), "--min-chunks", "2"]) == 2, folder
        err = capsys.readouterr().err
        assert "is not a finished predict run" in err and reason in err, err
        assert len(err.strip().splitlines()) == 1
        assert _snapshot(folder) == before, folder
    assert not (tmp_path / "missing").exists()
    # bad values are refused before anything is written too
    copy = tmp_path / "finished"
    shutil.copytree(runs["a"], copy)
    before = _snapshot(copy)
    assert main(["call", str(copy), "--min-viral-prop", "1.5"]) == 2
    assert main(["call", str(copy), "--sample", "a\tb"]) == 2
    assert _snapshot(copy) == before


@pytest.mark.server
def test_call_failing_half_way_keeps_the_previous_files(runs: dict[str, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    shutil.copytree(runs["a"], out)
    lock = (".virnucpro.lock",)  # names the holder of each run: rewritten by design
    before = _snapshot(out, lock)

    def broken(*_args: object) -> str:
        raise OSError("disk full")

    # the last file of the pass: every other answer is already written beside its target
    monkeypatch.setattr("orchestrator.write.answers.format_multiqc_calls", broken)
    assert main(["call", str(out), "--min-chunks", "3", "-q"]) == 1
    assert _snapshot(out, lock) == before  # no file replaced, run.json untouched, no temp file left


# --------------------------------------------------------------------------- Broad's contig table


@pytest.mark.server
def test_broad_table_has_that_steps_layout_and_our_numbers(runs: dict[str, Path]) -> None:
    out = runs["a"]
    text = (out / "contigs_classified.tsv").read_text()
    assert text.splitlines()[0] + "\n" == BROAD_CALLS_HEADER
    assert BROAD_CALLS_HEADER == ("ID\tcall\ttier\tweighted_delta\tn_chunks\tn_confident_viral\t"
                                  "n_confident_nonviral\tn_ambiguous\tviral_proportion\t"
                                  "nonviral_proportion\n")
    broad = _table(out / "contigs_classified.tsv")
    ours = {r["seq_id"]: r for r in _table(out / "sequence_calls.tsv")}
    # natural order, case-insensitive; the record without a kept frame has no chunk rows there
    assert [r["ID"] for r in broad] == ["node_1_length_1600", "NODE_2_length_9100",
                                        "NODE_10_length_3000", "NODE_11_length_2400"]
    assert ours["NODE_3_length_4"]["call"] == "no-frames"
    assert {r["call"] for r in broad} == {"Viral", "Non-viral"}
    for row in broad:
        mine = ours[row["ID"]]
        assert row["call"] == BROAD_WORDS[mine["call"]]
        assert row["tier"] == BROAD_TIERS[mine["confidence"]]
        for column in ("weighted_delta", "viral_proportion", "nonviral_proportion"):
            assert float(row[column]) == float(mine[column]), (row["ID"], column)
            assert row[column] == repr(round(float(row[column]), 3))  # pandas' float column
        for column in ("n_chunks", "n_confident_viral", "n_confident_nonviral", "n_ambiguous"):
            assert row[column] == mine[column]


def test_broad_rounding_and_natural_order() -> None:
    # numpy's round: scaled, half to even on the binary value; printed like a pandas float column
    assert [_broad_number(x) for x in (1, 0, -0.0004, 0.0625, 0.33333, -0.6667, 0.1 + 0.2)] == [
        "1.0", "0.0", "-0.0", "0.062", "0.333", "-0.667", "0.3"]
    ids = ["c10", "C2", "c1", "b", "NODE_100_x", "NODE_20_x", "a2b10", "a2b9"]
    assert sorted(ids, key=natural_sort_key) == ["a2b9", "a2b10", "b", "c1", "C2", "c10",
                                                 "NODE_20_x", "NODE_100_x"]


# --------------------------------------------------------------------------- MultiQC


def test_default_sample_name_is_the_first_inputs_base_name() -> None:
    assert default_sample(["/data/reads.fq.gz"]) == "reads"
    assert default_sample(["-", "lane2.unaligned.bam"]) == "lane2.unaligned"
    assert default_sample(["contigs.FASTA.ZST", "b.fa"]) == "contigs"
    assert default_sample(["-"]) == "stdin"
    assert default_sample([".fa"]) == ".fa"


@pytest.mark.server
def test_multiqc_over_two_runs_has_a_row_per_sample(runs: dict[str, Path], tmp_path: Path) -> None:
    report = tmp_path / "multiqc"
    proc = subprocess.run([str(BIN / "multiqc"), str(runs["a"]), str(runs["b"]), "-o", str(report),
                           "--no-ansi"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = report / "multiqc_data"
    table = {r["Sample"]: r for r in _table(data / "multiqc_virnucpro_summary_table.txt")}
    bars = {r["Sample"]: r for r in _table(data / "multiqc_virnucpro_calls_plot.txt")}
    names = {runs["a"]: "sample_a", runs["b"]: "beta"}  # default: the input's base name
    assert set(table) == set(bars) == set(names.values())
    for folder, name in names.items():
        row, counts = table[name], json.loads((folder / "run.json").read_text())["counts"]
        assert (int(row["records"]), int(row["chunks"]), int(row["frames_kept"])) == (
            counts["records"], counts["chunks"], counts["frames"])
        calls = _table(folder / "sequence_calls.tsv")
        for cls in ("viral", "non-viral", "ambiguous", "no-frames"):
            expected = sum(c["call"] == cls for c in calls)
            assert int(row[cls]) == int(bars[name][cls]) == expected, (name, cls)
        for tier in ("high", "moderate", "low", "review"):
            assert int(row[tier]) == sum(c["confidence"] == tier for c in calls), (name, tier)
        regions = _table(folder / "viral_regions.tsv")
        assert int(row["viral_regions"]) == len(regions)
        assert int(row["viral_region_bp"]) == sum(int(r["length"]) for r in regions)
    assert int(table["beta"]["viral"]) == 0 and int(table["sample_a"]["viral"]) > 0
    assert int(table["sample_a"]["viral_regions"]) == 3  # host insert, phage, GCA contig
    assert "VirNucPro" in (report / "multiqc_report.html").read_text()


# --------------------------------------------------------------------------- CWL


@pytest.mark.server
def test_cwl_tool_validates_and_runs_against_a_live_server(runs: dict[str, Path],
                                                           tmp_path: Path) -> None:
    cwltool = str(BIN / "cwltool")
    check = subprocess.run([cwltool, "--validate", str(CWL_TOOL)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "is valid CWL" in check.stdout + check.stderr
    job = tmp_path / "job.json"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    with TritonServer(write_toy_repository(tmp_path / "repo")) as server:
        job.write_text(json.dumps({
            "reads": [{"class": "File", "path": str(runs["contigs"])}],
            "classifier": {"class": "File", "path": str(runs["classifier"])},
            "chunk_size": 500, "servers": [server.grpc_url], "sample": "cwl_sample",
            "headers": ["x-run=cwl"], "region_min_length": 1000,
        }))
        proc = subprocess.run([cwltool, "--no-container", "--preserve-environment", "PYTHONPATH",
                               "--outdir", str(tmp_path / "results"), str(CWL_TOOL), str(job)],
                              capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = json.loads(proc.stdout)
    out = Path(outputs["outdir"]["path"])
    files = {k: Path(v["path"]) for k, v in outputs.items() if isinstance(v, dict) and k != "outdir"}
    assert {p.name for p in files.values()} == {
        "prediction_results.txt", "prediction_results_highestscore.csv", "sequence_summary.tsv",
        "run.json", "report.html", *ANSWERS}
    assert outputs["embeddings"] is None
    assert all(p.parent == out and p.is_file() for p in files.values())
    assert outputs_of(out) == outputs_of(runs["a"])  # the same run as predict's own
    assert (out / "contigs_classified.tsv").read_bytes() == (
        runs["a"] / "contigs_classified.tsv").read_bytes()
    run = json.loads((out / "run.json").read_text())
    assert run["parameters"]["sample"] == "cwl_sample" and run["parameters"]["headers"] == ["x-run"]
    assert (out / "virnucpro_mqc.tsv").read_text().splitlines()[-1].startswith("cwl_sample\t")
