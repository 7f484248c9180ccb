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

from predict_fixtures import write_coding_fasta

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEFILE = ROOT / "workflows" / "snakemake" / "Snakefile"
WDL_TASK = ROOT / "workflows" / "wdl" / "virnucpro.wdl"


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
    assert "gpu" not in {k.lower() for k in task.runtime}
    # optional vectors: a Boolean input switching --save-embeddings, an output that may be empty
    assert "save_embeddings" in inputs and "--save-embeddings" in str(task.command)
    assert 'glob("out/embeddings.h5")' in outputs["embeddings"]

