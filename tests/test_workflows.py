"""The workflow-manager entry points: the Snakemake workflow runs for real against a tritonserver
(demo models); the WDL task passes `miniwdl check` and keeps the interface of the widely used
`classify_virnucpro` task."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from predict_fixtures import write_coding_fasta

pytestmark = [pytest.mark.server, pytest.mark.workflow]

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEFILE = ROOT / "workflows" / "snakemake" / "Snakefile"
WDL_TASK = ROOT / "workflows" / "wdl" / "virnucpro.wdl"
WDL_SHARDED = ROOT / "workflows" / "wdl" / "virnucpro_sharded.wdl"
CWL = ROOT / "workflows" / "cwl"


def _snakemake(workdir: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "snakemake"), "-s", str(SNAKEFILE), "--configfile", str(config),
                           "--cores", "2", "-d", str(workdir)],
                          capture_output=True, text=True, env=env, timeout=600)


def test_snakemake_runs_each_sample_and_merges(tmp_path, demo_artifacts, triton_server):
    write_coding_fasta(tmp_path / "a.fa", records=3, length=1200, seed=31)
    write_coding_fasta(tmp_path / "b.fa", records=5, length=700, seed=32)
    (tmp_path / "samples.tsv").write_text("sample\tfasta\nalpha\ta.fa\nbeta\tb.fa\n")
    config = tmp_path / "config.yaml"
    config.write_text(
        "samples: samples.tsv\n"
        f"servers: [{triton_server.grpc_url}]\n"
        "chunk_size: 500\n"
        f"classifier: {demo_artifacts / 'classifiers' / '500_model.pth'}\n"
        "outdir: results\n")
    first = _snakemake(tmp_path, config)
    assert first.returncode == 0, first.stderr[-3000:]
    table = tmp_path / "results" / "virnucpro_samples.tsv"
    with open(table, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert [r["sample"] for r in rows] == ["alpha", "beta"]
    for row, records in zip(rows, (3, 5), strict=True):
        folder = tmp_path / "results" / row["sample"]
        assert json.loads((folder / "run.json").read_text())["counts"]["records"] == records
        with open(folder / "prediction_results_highestscore.csv", newline="") as fh:
            chunks = list(csv.DictReader(fh, delimiter="\t"))
        viral = sum(c["Is_Virus"] == "True" for c in chunks)
        assert int(row["records"]) == records
        assert int(row["chunks_scored"]) == len(chunks) > 0
        assert int(row["viral_chunks"]) == viral
        assert row["fraction_viral"] == f"{viral / len(chunks):.4f}"
    before = table.stat().st_mtime_ns
    again = _snakemake(tmp_path, config)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Nothing to be done" in again.stderr
    assert table.stat().st_mtime_ns == before


def test_snakemake_sample_sheet_errors_are_clear(tmp_path):
    (tmp_path / "samples.tsv").write_text("name\tpath\nx\tx.fa\n")
    config = tmp_path / "config.yaml"
    config.write_text("samples: samples.tsv\nservers: a:1\nclassifier: c.pth\n")
    proc = _snakemake(tmp_path, config)
    assert proc.returncode != 0
    assert "expected a TSV with the columns 'sample' and 'fasta'" in proc.stderr


def test_wdl_task_checks_and_keeps_the_original_interface():
    proc = subprocess.run([str(BIN / "miniwdl"), "check", "--strict", "--suppress",
                           "CommandShellCheck", str(WDL_TASK)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import WDL

    task = next(t for t in WDL.load(str(WDL_TASK)).tasks if t.name == "classify_virnucpro")
    inputs = {d.name for d in task.inputs}
    original = {"reads_input", "expected_length", "parallel", "persist_model", "use_gpu",
                "batch_size", "esm_batch_size", "dnabert_batch_size", "resume",
                "accelerator_type", "accelerator_count", "gpu_type", "gpu_count", "vm_size",
                "docker"}
    assert original <= inputs and "triton_url" in inputs
    outputs = {d.name: str(d.expr) for d in task.outputs}
    assert "virnuc_pro_scores" in outputs
    assert ".virnucpro.tsv" in outputs["prediction_results"]
    assert ".virnucpro_highestscore.csv" in outputs["highestscore"]
    # without triton_url the task starts its own server in the server image, on the GPU its
    # runtime asks for: the original's GPU inputs mean what they meant
    assert "triton_url" in {d.name for d in task.inputs if d.type.optional}
    serving = str(next(d.expr for d in task.postinputs if d.name == "serving"))
    assert "--start-server" in serving and "--model-repository" in serving
    assert "~{serving}" in str(task.command)
    runtime = {k: str(v) for k, v in task.runtime.items()}
    assert "server_docker" in runtime["docker"]
    for key, name in (("gpuType", "gpu_type"), ("gpuCount", "gpu_count"),
                      ("acceleratorType", "accelerator_type"),
                      ("acceleratorCount", "accelerator_count"), ("gpu", "use_gpu")):
        assert name in runtime[key] or "want_gpu" in runtime[key], key
    # optional vectors: a Boolean input switching --save-embeddings, an output that may be empty
    assert "save_embeddings" in inputs and "--save-embeddings" in str(task.command)
    assert 'glob("out/embeddings.h5")' in outputs["embeddings"]



def test_snakemake_shards_each_sample_and_merges_byte_identical(tmp_path, demo_artifacts,
                                                              triton_server):
    """`shards: 3`: three predict --shard jobs per sample and a merge; the sample's files are
    those of one unsharded predict, byte for byte."""
    fasta = write_coding_fasta(tmp_path / "a.fa", records=6, length=1100, seed=33)
    (tmp_path / "samples.tsv").write_text("sample\tfasta\nalpha\ta.fa\n")
    clf = demo_artifacts / "classifiers" / "500_model.pth"
    config = tmp_path / "config.yaml"
    config.write_text(
        "samples: samples.tsv\n"
        f"servers: [{triton_server.grpc_url}]\n"
        "chunk_size: 500\n"
        f"classifier: {clf}\n"
        "outdir: results\n"
        "shards: 3\n")
    proc = _snakemake(tmp_path, config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shards = [json.loads((tmp_path / "results" / "shards" / "alpha" / str(k) / "run.json")
                         .read_text())["parameters"]["shard"] for k in (1, 2, 3)]
    assert shards == ["1/3", "2/3", "3/3"]
    ref = tmp_path / "unsharded"
    direct = subprocess.run([sys.executable, "-m", "orchestrator", "predict", str(fasta), "-o",
                             str(ref), "--chunk-size", "500", "--classifier", str(clf),
                             "--server", triton_server.grpc_url, "--sample", "alpha"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert direct.returncode == 0, direct.stderr
    merged = tmp_path / "results" / "alpha"
    for name in ("prediction_results.txt", "prediction_results_highestscore.csv",
                 "sequence_summary.tsv", "sequence_calls.tsv", "viral_regions.tsv",
                 "chunk_scores.bedgraph", "contigs_classified.tsv", "virnucpro_mqc.tsv"):
        assert (merged / name).read_bytes() == (ref / name).read_bytes(), name
    assert (merged / "report.html").is_file()
    table = (tmp_path / "results" / "virnucpro_samples.tsv").read_text().splitlines()
    assert table[1].startswith("alpha\t6\t")


def test_sharded_wdl_workflow_checks_and_scatters_predict_then_merge():
    proc = subprocess.run([str(BIN / "miniwdl"), "check", "--strict", "--suppress",
                           "CommandShellCheck", str(WDL_SHARDED)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import WDL

    doc = WDL.load(str(WDL_SHARDED))
    tasks = {t.name: t for t in doc.tasks}
    assert "--shard" in str(tasks["predict_shard"].command)
    assert "orchestrator merge" in str(tasks["merge_shards"].command)
    scatter = next(e for e in doc.workflow.body if isinstance(e, WDL.Tree.Scatter))
    assert "n_shards" in str(scatter.expr)


def test_cwl_tool_merge_and_sharded_workflow_validate():
    for name in ("virnucpro_predict.cwl", "virnucpro_merge.cwl", "virnucpro_sharded.cwl"):
        proc = subprocess.run([str(BIN / "cwltool"), "--validate", str(CWL / name)],
                              capture_output=True, text=True)
        assert proc.returncode == 0 and "is valid CWL" in proc.stdout + proc.stderr, proc.stderr
