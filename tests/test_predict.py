"""`orchestrator predict` end to end on golden inputs, through a real tritonserver and in-process.

What must hold: the frames scored are exactly the original's kept frames (IDs and order of the
golden `*_identified_nucleotide.fa`); the highestscore file follows from the per-frame rows (max per
chunk, Is_Virus rule, string order); the summary has one row per input record; byte formats are
the original's; the Triton path and the in-process path agree (scores <= 1e-5, labels equal); bad
input gets exit 2 before any model call; memory does not grow with the input.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import tritonclient.grpc as grpcclient
from golden_data import GOLDEN
from predict_fixtures import (
    ROOT,
    outputs_of,
    traced_peak_bytes,
    write_coding_fasta,
    write_toy_classifier,
    write_toy_repository,
)
from tolerances import CONTRACT_TOLERANCE, PROBABILITY_SUM_TOLERANCE, max_abs_diff

from orchestrator.chunk.chunking import chunk_bounds
from orchestrator.commands.cli import main
from orchestrator.commands.predict import run_predict
from orchestrator.embed.triton.server import TritonServer, free_port
from orchestrator.pipeline.options import PipelineOptions
from orchestrator.read.formats import read_records
from orchestrator.write.formats import HIGHEST_HEADER, PREDICTIONS_HEADER, SUMMARY_HEADER

pytestmark = pytest.mark.server

GOLDEN_SETS = [
    ("pub_mixed_500", GOLDEN / "pub_mixed_500.fa", 500),
    ("pub_mixed_300", GOLDEN / "pub_mixed_300.fa", 300),
    ("pub_edge_500", GOLDEN / "pub_edge_500.fa", 500),
    ("test_with_orfs", GOLDEN / "broad_fixtures" / "test_with_orfs.fa", 500),
]


def _golden_frame_ids(fasta: Path) -> list[str]:
    ident = fasta.with_name(fasta.name.replace(".fa", "_identified_nucleotide.fa"))
    return [line[1:].rstrip("\n") for line in ident.open() if line.startswith(">")]


def _rows(path: Path, header: str) -> list[list[str]]:
    text = path.read_text()
    assert text.startswith(header), f"{path.name} header {text.splitlines()[0]!r}"
    assert text.endswith("\n")
    return [line.split("\t") for line in text[len(header):].splitlines()]


def _predict(fasta: Path, chunk: int, outdir: Path, artifacts: Path, backend: str,
             server: str) -> dict:
    options = PipelineOptions(inputs=[str(fasta)], chunk_size=chunk, backend=backend, servers=server,
                              model_repository=str(artifacts / "model_repository"), window=128)
    return run_predict(options, outdir=str(outdir),
                       classifier=str(artifacts / "classifiers" / f"{chunk}_model.pth"))


@pytest.fixture(scope="module")
def golden_runs(tmp_path_factory, demo_artifacts, triton_server):
    """Every golden set predicted once through Triton and once in-process."""
    base = tmp_path_factory.mktemp("golden_runs")
    runs = {}
    for name, fasta, chunk in GOLDEN_SETS:
        for backend in ("triton", "local"):
            out = base / f"{name}_{backend}"
            record = _predict(fasta, chunk, out, Path(demo_artifacts), backend,
                              triton_server.grpc_url)
            runs[name, backend] = (out, record)
    return runs


@pytest.mark.parametrize("name,fasta,chunk", GOLDEN_SETS, ids=[s[0] for s in GOLDEN_SETS])
def test_golden_frames_formats_and_consistency(golden_runs, name, fasta, chunk):
    out, record = golden_runs[name, "triton"]
    pred = _rows(out / "prediction_results.txt", PREDICTIONS_HEADER)
    # The frames scored are the original's kept frames, in its order.
    assert [r[0] for r in pred] == _golden_frame_ids(fasta)
    for fid, label, s1, s2 in pred:
        p0, p1 = np.float32(s1), np.float32(s2)
        assert s1 == str(p0) and s2 == str(p1), "scores are shortest float32 reprs"
        assert label == ("virus" if p1 > p0 else "others"), fid
        assert abs(float(p0) + float(p1) - 1.0) <= PROBABILITY_SUM_TOLERANCE

    # highestscore = per-chunk max over the frame rows, Is_Virus = max1 >= max0, string order.
    expected: dict[str, list[np.float32]] = {}
    for fid, _label, s1, s2 in pred:
        cur = expected.setdefault(fid[:-2], [np.float32(s1), np.float32(s2)])
        cur[0] = max(cur[0], np.float32(s1))
        cur[1] = max(cur[1], np.float32(s2))
    high = _rows(out / "prediction_results_highestscore.csv", HIGHEST_HEADER)
    assert [r[0] for r in high] == sorted(expected)
    for cid, is_virus, m0, m1 in high:
        assert (np.float32(m0), np.float32(m1)) == tuple(expected[cid])
        assert is_virus == str(bool(np.float32(m1) >= np.float32(m0)))
        assert m0 == str(np.float32(m0)) and m1 == str(np.float32(m1))

    # summary: every input record once, in input order, counts matching the other files.
    records = list(read_records([str(fasta)]))
    summary = _rows(out / "sequence_summary.tsv", SUMMARY_HEADER)
    assert [r[0] for r in summary] == [rec.id for rec in records]
    frames_per_record: dict[str, int] = {}
    for fid, *_ in pred:
        rid = fid[:-2].rsplit("_chunk_", 1)[0]
        frames_per_record[rid] = frames_per_record.get(rid, 0) + 1
    for row, rec in zip(summary, records, strict=True):
        assert int(row[1]) == len(rec.seq)
        assert int(row[2]) == len(chunk_bounds(len(rec.seq), chunk))
        assert int(row[4]) == frames_per_record.get(rec.id, 0)
        if int(row[4]) == 0:
            assert row[6] == "NA"
    counts = record["counts"]
    assert counts["records"] == len(records)
    assert counts["frames"] == len(pred)
    assert counts["chunks"] == sum(int(r[2]) for r in summary)
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["counts"] == counts
    assert {m["name"] for m in run_json["models"]} == {"dnabert_s", "esm2"}
    assert run_json["resumed"]["resumed"] is False


@pytest.mark.parametrize("name", [s[0] for s in GOLDEN_SETS])
def test_triton_matches_in_process(golden_runs, name):
    t_out, t_rec = golden_runs[name, "triton"]
    l_out, l_rec = golden_runs[name, "local"]
    t_rows = _rows(t_out / "prediction_results.txt", PREDICTIONS_HEADER)
    l_rows = _rows(l_out / "prediction_results.txt", PREDICTIONS_HEADER)
    assert [r[0] for r in t_rows] == [r[0] for r in l_rows]
    assert [r[1] for r in t_rows] == [r[1] for r in l_rows], "labels differ"
    t = np.array([[float(r[2]), float(r[3])] for r in t_rows])
    loc = np.array([[float(r[2]), float(r[3])] for r in l_rows])
    if len(t):
        assert max_abs_diff(t, loc) <= CONTRACT_TOLERANCE
    assert [m["width"] for m in t_rec["models"]] == [m["width"] for m in l_rec["models"]]
    # the server reports the checksum export stamped into its config; the local backend hashes
    # the same files, so both runs name the same weights
    assert [m["weights_sha256"] for m in t_rec["models"]] == [m["weights_sha256"] for m in l_rec["models"]]
    assert all(len(m["weights_sha256"]) == 64 for m in t_rec["models"])
    assert t_rec["backend"] == "triton" and l_rec["backend"] == "local"


def test_real_encoders_over_two_servers_match_in_process(golden_runs, tmp_path, demo_artifacts,
                                                         triton_server):
    """Two servers of the real encoder architectures, windows queued ahead: labels equal the
    in-process run and scores stay within 1e-5 (batch composition may differ per server)."""
    name, fasta, chunk = GOLDEN_SETS[0]
    l_out, _ = golden_runs[name, "local"]
    with TritonServer(triton_server.model_repository) as second:
        options = PipelineOptions(inputs=[str(fasta)], chunk_size=chunk,
                                  servers=[triton_server.grpc_url, second.grpc_url], window=64,
                                  lookahead=3)
        record = run_predict(options, outdir=str(tmp_path / "o"),
                             classifier=str(Path(demo_artifacts) / "classifiers" / f"{chunk}_model.pth"))
    rows = _rows(tmp_path / "o" / "prediction_results.txt", PREDICTIONS_HEADER)
    l_rows = _rows(l_out / "prediction_results.txt", PREDICTIONS_HEADER)
    assert [r[:2] for r in rows] == [r[:2] for r in l_rows]
    scores = np.array([[float(r[2]), float(r[3])] for r in rows])
    l_scores = np.array([[float(r[2]), float(r[3])] for r in l_rows])
    assert max_abs_diff(scores, l_scores) <= CONTRACT_TOLERANCE
    assert [e["url"] for e in record["endpoints"]] == [triton_server.grpc_url, second.grpc_url]
    assert all(e["rows"] > 0 for e in record["endpoints"])


def test_stdin_input_and_empty_record(tmp_path, demo_artifacts, triton_server):
    fasta = (GOLDEN / "broad_fixtures" / "test_with_orfs.fa").read_text()
    text = ">empty_one some description\n" + fasta + ">empty_two\n"
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", "predict", "-", "-o", str(out),
         "--chunk-size", "500", "--classifier",
         str(Path(demo_artifacts) / "classifiers" / "500_model.pth"),
         "--server", triton_server.grpc_url],
        input=text, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    summary = _rows(out / "sequence_summary.tsv", SUMMARY_HEADER)
    assert [r[0] for r in summary] == ["empty_one", "synthetic_seq_1", "synthetic_seq_2",
                                       "empty_two"]
    assert summary[0][1:6] == ["0", "0", "0", "0", "0"] and summary[0][6] == "NA"
    pred = _rows(out / "prediction_results.txt", PREDICTIONS_HEADER)
    orfs = GOLDEN / "broad_fixtures" / "test_with_orfs.fa"
    assert [r[0] for r in pred] == _golden_frame_ids(orfs)


# -- bad input ------------------------------------------------------------------------------------
def _dead_server() -> str:
    return f"127.0.0.1:{free_port()}"


def test_duplicate_ids_exit_2_before_any_model_call(tmp_path, capsys, demo_artifacts):
    fa = tmp_path / "dup.fa"
    fa.write_text(">a\nACGT\n>b\nACGT\n>a desc\nGGGG\n")
    clf = Path(demo_artifacts) / "classifiers" / "500_model.pth"
    with socket.create_server(("127.0.0.1", 0)) as listener:  # a server that never answers
        listener.setblocking(False)
        code = main(["predict", str(fa), "-o", str(tmp_path / "o"), "--chunk-size", "500",
                     "--classifier", str(clf), "--server", f"127.0.0.1:{listener.getsockname()[1]}"])
        with pytest.raises(BlockingIOError):  # no connection waits: the run never reached a server
            listener.accept()
    assert code == 2
    err = capsys.readouterr().err
    assert "a" in err and "duplicate" in err.lower()


def test_not_fasta_exit_2(tmp_path, capsys, demo_artifacts):
    fa = tmp_path / "bad.fa"
    fa.write_bytes(b"\x00\x01binary junk\nnot a fasta\n")
    clf = Path(demo_artifacts) / "classifiers" / "500_model.pth"
    code = main(["predict", str(fa), "-o", str(tmp_path / "o"), "--chunk-size", "500",
                 "--classifier", str(clf), "--server", _dead_server()])
    assert code == 2
    err = capsys.readouterr().err
    assert "bad.fa" in err and "Traceback" not in err


def test_empty_input_exit_0_header_only(tmp_path, capsys, demo_artifacts):
    fa = tmp_path / "empty.fa"
    fa.write_text("")
    clf = Path(demo_artifacts) / "classifiers" / "500_model.pth"
    out = tmp_path / "o"
    code = main(["predict", str(fa), "-o", str(out), "--chunk-size", "500", "--classifier",
                 str(clf), "--server", _dead_server(), "--save-embeddings"])
    assert code == 0
    assert (out / "prediction_results.txt").read_text() == PREDICTIONS_HEADER
    assert (out / "prediction_results_highestscore.csv").read_text() == HIGHEST_HEADER
    assert (out / "sequence_summary.tsv").read_text() == SUMMARY_HEADER
    assert json.loads((out / "run.json").read_text())["counts"]["records"] == 0
    err = capsys.readouterr().err
    assert "no records" in err and "no embeddings.h5" in err
    assert not (out / "embeddings.h5").exists()
    code = main(["predict", str(fa), "-o", str(out), "--chunk-size", "500", "--classifier",
                 str(clf), "--server", _dead_server(), "--save-embeddings"])
    assert code == 0 and "already complete" in capsys.readouterr().err


def test_outdir_with_another_runs_results_refused(tmp_path, capsys, demo_artifacts):
    fa = tmp_path / "empty.fa"
    fa.write_text("")
    out = tmp_path / "o"
    out.mkdir()
    (out / "prediction_results.txt").write_text("someone else's results\n")
    clf = Path(demo_artifacts) / "classifiers" / "500_model.pth"
    args = ["predict", str(fa), "-o", str(out), "--chunk-size", "500", "--classifier", str(clf),
            "--server", _dead_server()]
    assert main(args) == 2
    assert "--restart" in capsys.readouterr().err
    assert (out / "prediction_results.txt").read_text() == "someone else's results\n"
    assert main([*args, "--restart"]) == 0
    assert (out / "prediction_results.txt").read_text() == PREDICTIONS_HEADER


def test_classifier_width_mismatch_exit_2(tmp_path, capsys, triton_server):
    clf = write_toy_classifier(tmp_path / "narrow.safetensors", width=16)
    code = main(["predict", str(GOLDEN / "broad_fixtures" / "test_with_orfs.fa"), "-o",
                 str(tmp_path / "o"), "--chunk-size", "500", "--classifier", str(clf),
                 "--server", triton_server.grpc_url])
    assert code == 2
    assert "16" in capsys.readouterr().err


# -- lifecycle and memory --------------------------------------------------------------------
def _tree_rss(pid: int) -> int:
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)])


def test_repeated_runs_keep_server_ready_and_flat(tmp_path, demo_artifacts, triton_server):
    example = ROOT / "examples" / "example.fa"
    clf = Path(demo_artifacts) / "classifiers" / "500_model.pth"
    rss = []
    outputs = []
    for i in range(4):
        out = tmp_path / f"run{i}"
        code = main(["predict", str(example), "-o", str(out), "--chunk-size", "500",
                     "--classifier", str(clf), "--server", triton_server.grpc_url, "-q"])
        assert code == 0
        outputs.append(outputs_of(out))
        rss.append(_tree_rss(triton_server.process.pid))
    assert all(o == outputs[0] for o in outputs), "same input, same server: same bytes"
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    try:
        assert client.is_model_ready("dnabert_s") and client.is_model_ready("esm2")
    finally:
        client.close()
    # After the first run has warmed the allocators, later runs must not keep growing the server.
    assert rss[-1] <= rss[1] * 1.10 + 32 * 2**20, f"server RSS grew: {rss}"


def test_peak_memory_independent_of_input_size(tmp_path):
    """10x the input may not raise the memory predict allocates at its peak by more than 25%, with
    the default deduplication on (predict's answer cache grows with the distinct frames, by 32
    bytes each). Traced allocations, not RSS: RSS also counts the allocator's per-thread arenas,
    which vary from run to run with thread timing."""
    repo = write_toy_repository(tmp_path / "toy")
    clf = write_toy_classifier(tmp_path / "toy.safetensors")
    small = write_coding_fasta(tmp_path / "small.fa", records=40, length=2500, seed=3)
    big = write_coding_fasta(tmp_path / "big.fa", records=400, length=2500, seed=3)
    peaks = {}
    with TritonServer(repo) as server:
        for name, fa in (("1x", small), ("10x", big)):
            peaks[name] = traced_peak_bytes(
                ["predict", str(fa), "-o", str(tmp_path / name), "--chunk-size", "500",
                 "--classifier", str(clf), "--server", server.grpc_url, "--window", "128", "-q"])
    runs = {name: json.loads((tmp_path / name / "run.json").read_text()) for name in peaks}
    frames_small, frames_big = (runs[name]["counts"]["frames"] for name in ("1x", "10x"))
    assert frames_big >= 9 * frames_small
    assert frames_small > 128, "the 1x input must fill a window too (like for like)"
    answers = {name: run["dedup"]["answers"] for name, run in runs.items()}
    for name, run in runs.items():  # the default: dedup on, through the answer cache
        assert run["parameters"]["dedup"] is True and answers[name] is not None, run["dedup"]
    assert peaks["10x"] <= 1.25 * peaks["1x"], (peaks, answers)


def test_triton_backend_never_imports_torch(tmp_path, demo_artifacts, triton_server):
    clf = Path(demo_artifacts) / "classifiers" / "500_model.pth"
    code = (
        "import sys\n"
        "from orchestrator.commands.cli import main\n"
        f"rc = main(['predict', {str(ROOT / 'examples' / 'example.fa')!r}, '-o', "
        f"{str(tmp_path / 'o')!r}, '--chunk-size', '500', '--classifier', {str(clf)!r}, "
        f"'--server', {triton_server.grpc_url!r}, '-q'])\n"
        "print('TORCH', 'torch' in sys.modules)\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "TORCH False" in proc.stdout


def test_demo_runs_end_to_end(tmp_path, capsys, demo_artifacts):
    from orchestrator.commands.demo import run_demo

    out = tmp_path / "demo_out"
    assert run_demo(artifacts=str(demo_artifacts), outdir=str(out), progress=False) == 0
    captured = capsys.readouterr()
    assert "MEANINGLESS" in captured.err
    assert "24 records" in captured.out and str(out.resolve()) in captured.out
    pred = _rows(out / "prediction_results.txt", PREDICTIONS_HEADER)
    assert len(pred) == json.loads((out / "run.json").read_text())["counts"]["frames"] > 0
