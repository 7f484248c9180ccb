"""`orchestrator embed` and `predict --save-embeddings`: the vectors predict classifies, kept.

The equality test runs the demo encoders in a real tritonserver: the stored vectors, put through
the classifier, must give exactly the scores predict wrote (float32 printed the same way). The
resume tests use toy models that sleep per request, so a run can be killed between windows.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from golden_data import GOLDEN
from predict_fixtures import (
    ROOT,
    orchestrator_cmd,
    run_cli,
    traced_peak_bytes,
    wait_for_window,
    write_coding_fasta,
    write_toy_classifier,
    write_toy_repository,
)

from orchestrator.classify.classifier import load_classifier
from orchestrator.embed.triton.server import TritonServer
from orchestrator.learning.embed_run import EmbedPaths
from orchestrator.write.embeddings import read_embeddings, read_header
from orchestrator.write.formats import format_scores

pytestmark = pytest.mark.server


def _prediction_rows(outdir: Path) -> list[list[str]]:
    lines = (outdir / "prediction_results.txt").read_text().splitlines()[1:]
    return [line.split("\t") for line in lines]


def _datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as h5:
        return {name: h5[name][()] for name in h5}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_embed_vectors_give_predicts_scores(tmp_path, triton_server, demo_artifacts):
    fasta = GOLDEN / "pub_mixed_500.fa"
    clf_path = demo_artifacts / "classifiers" / "500_model.pth"
    common = ["--chunk-size", "500", "--server", triton_server.grpc_url, "--window", "100"]
    proc = run_cli("predict", str(fasta), "-o", str(tmp_path / "pred"), "--classifier",
                   str(clf_path), "--save-embeddings", "--no-report", *common)
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("embed", str(fasta), "-o", str(tmp_path / "mixed.h5"), "--label", "mixed",
                   *common)
    assert proc.returncode == 0, proc.stderr

    rows = _prediction_rows(tmp_path / "pred")
    emb = read_embeddings(tmp_path / "mixed.h5")
    assert emb.frame_ids == [r[0] for r in rows]  # same frames, same order
    assert emb.chunk_ids == [r[0][:-2] for r in rows]
    assert emb.record_ids[0] == rows[0][0].rsplit("_chunk_", 1)[0]
    probs = load_classifier(clf_path).predict_proba(emb.features)
    assert format_scores(probs[:, 0]) == [r[2] for r in rows]
    assert format_scores(probs[:, 1]) == [r[3] for r in rows]

    # predict's copy holds the same data; only the label differs
    saved = _datasets(tmp_path / "pred" / "embeddings.h5")
    embedded = _datasets(tmp_path / "mixed.h5")
    assert set(embedded) - set(saved) == {"label"}
    for name, values in saved.items():
        np.testing.assert_array_equal(values, embedded[name], err_msg=name)
    assert saved["dna_embedding"].dtype == np.float32
    assert set(embedded["label"].tolist()) == {b"mixed"}

    header, n = read_header(tmp_path / "mixed.h5")
    assert n == len(rows)
    assert header.chunk_size == 500 and header.label == "mixed"
    assert [m["name"] for m in header.models] == ["dnabert_s", "esm2"]
    assert [m["width"] for m in header.models] == [emb.dna_width,
                                                   emb.features.shape[1] - emb.dna_width]
    assert all(m["weights_sha256"] for m in header.models)
    with h5py.File(tmp_path / "mixed.h5", "r") as h5:
        ds = h5["protein_embedding"]
        assert ds.compression == "gzip" and ds.shuffle and ds.maxshape == (None, ds.shape[1])
        assert ds.attrs["model"] == "esm2"


@pytest.fixture(scope="module")
def job(tmp_path_factory, slow_server):
    """Input, arguments and an uninterrupted run's file (the reference)."""
    root = tmp_path_factory.mktemp("embed_job")
    fasta = write_coding_fasta(root / "in.fa", records=24, length=2000, seed=11)
    args = [str(fasta), "--chunk-size", "500", "--server", slow_server.grpc_url,
            "--window", "16", "--batch-size", "8"]
    ref = root / "ref.h5"
    proc = run_cli("embed", *args, "-o", str(ref))
    assert proc.returncode == 0, proc.stderr
    return args, ref


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_resumed_embed_is_identical(tmp_path, job, sig):
    args, ref = job
    out = tmp_path / "run.h5"
    proc = subprocess.Popen(orchestrator_cmd("embed", *args, "-o", str(out)), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_window(proc, out, 2, state=EmbedPaths(out).state)
    proc.send_signal(sig)
    proc.communicate(timeout=60)
    assert proc.returncode in (-signal.SIGKILL, 143)
    assert not out.exists()  # the file appears only complete

    resumed = run_cli("embed", *args, "-o", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from window" in resumed.stderr
    assert _sha256(out) == _sha256(ref)  # the same bytes, not only the same values
    for name, values in _datasets(ref).items():
        np.testing.assert_array_equal(values, _datasets(out)[name], err_msg=name)

    again = run_cli("embed", *args, "-o", str(out))
    assert again.returncode == 0 and "already complete" in again.stderr
    assert _sha256(out) == _sha256(ref)


def test_embed_refusals(tmp_path, job, slow_server):
    args, ref = job
    fasta = args[0]
    cases = [
        (["embed", fasta, "-o", str(tmp_path), *args[1:]], "is a folder"),
        (["embed", fasta, "-o", str(tmp_path / "missing" / "x.h5"), *args[1:]], "no such folder"),
        (["embed", str(tmp_path / "nope.fa"), "-o", str(tmp_path / "a.h5"), *args[1:]],
         "no such file"),
        (["embed", fasta, "-o", str(tmp_path / "b.h5"), "--cds-frames-only", *args[1:]],
         "needs GenBank inputs"),
        (["embed", fasta, "-o", str(tmp_path / "c.h5"), "--label", " ", *args[1:]],
         "--label must not be empty"),
        (["embed", fasta, "-o", str(tmp_path / "d.h5"), "--chunk-size", "5000"],
         "between 3 and 3066"),
    ]
    for argv, message in cases:
        proc = run_cli(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert message in proc.stderr, (argv, proc.stderr)
        assert len(proc.stderr.strip().splitlines()[-1]) < 400

    bad = tmp_path / "bad.fa"
    bad.write_text(">a\nACGT\n>a\nACGT\n")
    proc = run_cli("embed", str(bad), "-o", str(tmp_path / "e.h5"), *args[1:])
    assert proc.returncode == 2 and "duplicate" in proc.stderr.lower(), proc.stderr

    # an existing file that no embed run of ours left there is not overwritten
    foreign = tmp_path / "foreign.h5"
    foreign.write_bytes(b"keep me")
    proc = run_cli("embed", fasta, "-o", str(foreign), *args[1:])
    assert proc.returncode == 2 and "--restart" in proc.stderr
    assert foreign.read_bytes() == b"keep me"

    # a different run into the same file is refused, naming what changed
    other = tmp_path / "other.h5"
    assert run_cli("embed", fasta, "-o", str(other), *args[1:]).returncode == 0
    proc = run_cli("embed", fasta, "-o", str(other), "--label", "viral", *args[1:])
    assert proc.returncode == 2 and "label" in proc.stderr, proc.stderr
    proc = run_cli("embed", fasta, "-o", str(other), "--label", "viral", "--restart", *args[1:])
    assert proc.returncode == 0, proc.stderr
    assert read_header(other)[0].label == "viral"


def test_predict_save_embeddings_resumes_and_restarts(tmp_path, job, slow_server):
    """The vectors survive an interrupted predict; --restart without the flag removes them."""
    args, ref = job
    clf = write_toy_classifier(tmp_path / "clf.safetensors")
    out = tmp_path / "pred"
    pargs = [*args, "--classifier", str(clf), "--no-report", "-o", str(out)]
    proc = subprocess.Popen(orchestrator_cmd("predict", *pargs, "--save-embeddings"), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_window(proc, out, 2)
    proc.kill()
    proc.wait()
    resumed = run_cli("predict", *pargs, "--save-embeddings")
    assert resumed.returncode == 0, resumed.stderr
    saved, reference = _datasets(out / "embeddings.h5"), _datasets(ref)
    for name, values in reference.items():
        np.testing.assert_array_equal(values, saved[name], err_msg=name)
    assert not list((out / ".virnucpro_state").glob("*.emb.npz"))  # parts removed once assembled

    # the flag is part of the run: dropping it is a different run
    proc = run_cli("predict", *pargs)
    assert proc.returncode == 2 and "save_embeddings" in proc.stderr, proc.stderr
    assert run_cli("predict", *pargs, "--restart").returncode == 0
    assert not (out / "embeddings.h5").exists()


def test_cds_frames_only_keeps_the_annotated_genes_frames(tmp_path, slow_server):
    """GenBank in: with --cds-frames-only only the frames that lie in the annotated CDS remain."""
    from Bio import SeqIO
    from Bio.Seq import Seq
    from Bio.SeqFeature import FeatureLocation, SeqFeature
    from Bio.SeqRecord import SeqRecord

    rng = np.random.default_rng(4)
    codons = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT"
              if a + b + c not in ("TAA", "TAG", "TGA")]
    gene = "ATG" + "".join(rng.choice(codons, size=299)) + "TAA"  # 903 bp at [600, 1503)
    flank = ["".join(rng.choice(list("ACGT"), size=n)) for n in (600, 597)]  # 2,100 bp: 14 chunks
    record = SeqRecord(Seq(flank[0] + gene + flank[1]), id="g1.1", name="g1",
                       annotations={"molecule_type": "DNA"})
    record.features.append(SeqFeature(FeatureLocation(600, 1503, strand=1), type="CDS",
                                      qualifiers={"transl_table": ["11"]}))
    gbk = tmp_path / "g1.gbk"
    SeqIO.write([record], gbk, "genbank")

    common = ["--chunk-size", "150", "--server", slow_server.grpc_url]
    assert run_cli("embed", str(gbk), "-o", str(tmp_path / "all.h5"), *common).returncode == 0
    proc = run_cli("embed", str(gbk), "-o", str(tmp_path / "cds.h5"), "--cds-frames-only", *common)
    assert proc.returncode == 0, proc.stderr
    every = read_embeddings(tmp_path / "all.h5").frame_ids
    kept = read_embeddings(tmp_path / "cds.h5").frame_ids
    # chunks 5..10 cover the gene in frame F1; chunk 11 holds its stop codon
    assert kept == [f"g1.1_chunk_{k}F1" for k in range(5, 11)]
    assert set(kept) < set(every)
    header, _ = read_header(tmp_path / "cds.h5")
    assert header.frame_filter == "stop-free, in an annotated CDS"


def test_embed_peak_memory_independent_of_input_size(tmp_path):
    """10x the input may not raise the memory embed allocates at its peak by more than 25%, with
    rows of 64 KB per frame (the 10x file holds over 100 MB of vectors: held in memory, they would
    show). Traced allocations, not RSS (see test_peak_memory_independent_of_input_size).

    The deduplication table is a bound of its own (--dedup-memory, filled by the 1x input here
    too), so the run's memory beyond it must not grow with the input."""
    repo = write_toy_repository(tmp_path / "wide", width=8192)
    small = write_coding_fasta(tmp_path / "small.fa", records=40, length=2500, seed=3)
    big = write_coding_fasta(tmp_path / "big.fa", records=400, length=2500, seed=3)
    peaks, frames = {}, {}
    with TritonServer(repo) as server:
        for name, fa in (("1x", small), ("10x", big)):
            out = tmp_path / f"{name}.h5"
            peaks[name] = traced_peak_bytes(["embed", str(fa), "-o", str(out), "--chunk-size", "500",
                                        "--server", server.grpc_url, "--window", "32", "-q",
                                        "--dedup-memory", "16M"])
            frames[name] = read_header(out)[1]
    assert frames["10x"] >= 9 * frames["1x"] and frames["1x"] > 5 * 32  # 1x: steady state too
    assert frames["10x"] * 2 * 8192 * 4 > 100 * 2**20
    assert peaks["10x"] <= 1.25 * peaks["1x"], peaks

