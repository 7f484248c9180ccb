"""predict's answer cache: repeats anywhere in the sample cost no request and no classifier work,
outputs stay byte-identical to --no-dedup, memory stays flat.

The cache stores the classifier's scores and serves them to later windows, so the first tests
check, bitwise, that a row's scores do not depend on the rows it is classified with (under each
OpenBLAS kernel family this machine can run). The end-to-end tests run `predict` against a real
tritonserver with toy models whose two rows add up to the real width (1664 + 1664 = 768 + 2560 =
3328 float32 per frame) and read Triton's own statistics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from predict_fixtures import (
    ROOT,
    outputs_of,
    rows_executed,
    run_cli,
    start_predict,
    stderr_of,
    wait_for_window,
    windows_done,
    write_coding_fasta,
    write_toy_classifier,
    write_toy_repository,
)

from orchestrator.embed.triton.server import TritonServer
from orchestrator.pipeline.answers import FIRST_SLOTS, AnswerCache, frame_keys
from orchestrator.pipeline.options import ANSWER_MAX_LOAD, ANSWER_SLOT_BYTES, answer_capacity

# Both toy models at half the real feature width: a frame's vectors weigh what the real ones do.
HALF_WIDTH = 1664

_INVARIANCE = """\
import numpy as np
from orchestrator.classify.classifier import Classifier
rng = np.random.default_rng(3)
d, h = 3328, 512
state = {"hidden_layer.weight": rng.normal(0, 0.05, (h, d)).astype(np.float32),
         "hidden_layer.bias": rng.normal(0, 0.1, h).astype(np.float32),
         "bn1.weight": rng.uniform(0.5, 1.5, h).astype(np.float32),
         "bn1.bias": rng.normal(0, 0.1, h).astype(np.float32),
         "bn1.running_mean": rng.normal(0, 0.1, h).astype(np.float32),
         "bn1.running_var": rng.uniform(0.5, 2, h).astype(np.float32),
         "output_layer.weight": rng.normal(0, 0.3, (2, h)).astype(np.float32),
         "output_layer.bias": rng.normal(0, 0.1, 2).astype(np.float32)}
clf = Classifier(state)
x = (rng.normal(0, 1, (300, d)) * rng.uniform(0.1, 3, (300, 1))).astype(np.float32)
full = clf.predict_proba(x)
for n in (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 64, 65, 129, 299):
    for start in (0, 1, 5, 300 - n):
        part = clf.predict_proba(x[start:start + n])
        assert np.array_equal(part, full[start:start + n]), (n, start)
shuffled = np.random.default_rng(4).permutation(300)
assert np.array_equal(clf.predict_proba(x[shuffled]), full[shuffled])
print("ok")
"""


@pytest.mark.server
@pytest.mark.parametrize("env", [
    {},
    {"OPENBLAS_NUM_THREADS": "1"},
    {"OPENBLAS_CORETYPE": "Haswell"},
    {"OPENBLAS_CORETYPE": "Sandybridge"},
    {"OPENBLAS_CORETYPE": "Prescott"},
], ids=lambda e: ",".join(f"{k}={v}" for k, v in e.items()) or "default")
def test_classifier_scores_do_not_depend_on_batch(env):
    """A row's float32 scores are bitwise the same alone, in any batch size and at any position:
    what the answer cache needs to give the bytes a fresh computation gives. The real width
    (3328 -> 512 -> 2); OpenBLAS kernels of several CPU generations (this machine runs the older
    ones too), one thread and the default."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("OPENBLAS_")}
    proc = subprocess.run([sys.executable, "-c", _INVARIANCE], capture_output=True, text=True,
                          cwd=ROOT, env={**full_env, **env}, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


# --------------------------------------------------------------------------- the cache itself


def _keys(n: int, offset: int = 0) -> np.ndarray:
    return frame_keys([f"ACGT{i}" for i in range(offset, offset + n)],
                      [f"MK{i}" for i in range(offset, offset + n)])


def test_keys_differ_by_slice_and_protein():
    keys = frame_keys(["ACG", "ACG", "ACGT"], ["MK", "MKL", "MK"])
    assert len({k.tobytes() for k in keys}) == 3
    assert np.array_equal(frame_keys(["ACG"], ["MK"]), keys[:1])


def test_cache_returns_what_was_added_and_stays_within_its_bound():
    memory = 64 * 1024
    cache = AnswerCache(memory)
    rng = np.random.default_rng(0)
    keys = _keys(20_000)
    scores = rng.random((20_000, 2)).astype(np.float32)
    for start in range(0, 20_000, 500):
        k, s = keys[start:start + 500], scores[start:start + 500]
        found, _ = cache.lookup(k)
        assert not found.any()
        cache.add(k, s)
        found, got = cache.lookup(k)
        assert found.all() and np.array_equal(got, s)
        assert cache.nbytes <= memory
    info = cache.info()
    assert info["peak_bytes"] <= memory and info["bytes"] <= memory
    assert info["evictions"] > 0 and info["entries"] + info["evictions"] >= 20_000 - 500
    # the most recent generation's worth is still there, bit for bit
    recent = answer_capacity(memory)
    found, got = cache.lookup(keys[-recent:])
    assert found.all() and np.array_equal(got, scores[-recent:])
    # nothing is ever answered wrongly: every hit carries its own scores
    found, got = cache.lookup(keys)
    assert np.array_equal(got[found], scores[found])


def test_old_generation_hits_survive_a_turnover():
    memory = 48 * 1024
    cache = AnswerCache(memory)
    hot = _keys(100, offset=10**6)
    hot_scores = np.full((100, 2), 0.25, dtype=np.float32)
    cache.add(hot, hot_scores)
    for start in range(0, 40_000, 400):
        cache.add(_keys(400, offset=start), np.zeros((400, 2), dtype=np.float32))
        found, got = cache.lookup(hot)  # used all along: moved up at each turnover
        assert found.all() and np.array_equal(got, hot_scores)
    assert cache.evictions > 0


def test_a_window_answered_wholly_by_a_pending_one():
    """Window 2 repeats only frames window 1 sent, before window 1 is finished: it sends nothing,
    takes window 1's answers, and finishing it leaves the cache consistent (a genome with a
    repeated region gives such windows)."""
    from test_dedup import _FakeBackend

    cache, backend = AnswerCache(1 << 20), _FakeBackend()
    nts, prots = ["ACGTAC", "GGGCCC"], ["TY", "GP"]
    first = cache.submit(backend, nts, prots)
    second = cache.submit(backend, nts[::-1], prots[::-1])
    assert second.frames_sent == 0 and sorted(backend.sent_nt) == sorted(nts)

    def classify(dna: np.ndarray, protein: np.ndarray) -> np.ndarray:
        return np.stack([dna[:, 0], protein[:, 0]], axis=1).astype(np.float32)

    answers_first = first.result().answers(classify)
    answers_second = second.result().answers(classify)
    assert np.array_equal(answers_second, answers_first[::-1])
    assert cache.pending == [] and len(cache) == 2 and cache.reused == 2


def test_the_default_holds_a_million_read_sample():
    """A 1M-read sample of short reads has at most 6 million frames (six per read)."""
    from orchestrator.pipeline.options import DEFAULT_DEDUP_MEMORY

    assert answer_capacity(DEFAULT_DEDUP_MEMORY) >= 2 * 6_000_000


@pytest.mark.server
@pytest.mark.parametrize("value,words", [("lots", "not a size"), ("-1M", "0 or more"),
                                          ("50", "holds no entry")])
def test_bad_dedup_memory_one_line_exit_2(tmp_path, value, words):
    fa = write_coding_fasta(tmp_path / "a.fa", records=2, length=300)
    proc = run_cli("predict", str(fa), "-o", str(tmp_path / "o"), "--chunk-size", "150",
                   "--classifier", str(tmp_path / "none.pth"), f"--dedup-memory={value}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], proc.stderr


@pytest.mark.server
def test_help_states_the_default_figure():
    proc = run_cli("predict", "--help")
    text = " ".join(proc.stdout.split())
    assert f"{answer_capacity(1 << 30) / 1e6:.1f} million distinct frames" in text


# --------------------------------------------------------------------------- end to end, Triton

COMPLEMENT = str.maketrans("ACGT", "TGCA")


def _spread_repeats(path: Path, base: Path, fraction: float, seed: int = 9) -> Path:
    """The base reads, then as many more again times fraction/(1-fraction) copies (every other one
    reverse complemented) of reads picked anywhere, the whole set shuffled: repeats sit anywhere."""
    seqs = ["".join(b.splitlines()[1:]) for b in base.read_text().split(">")[1:]]
    rng = np.random.default_rng(seed)
    reads = list(seqs)
    for k in range(int(len(seqs) * fraction / (1 - fraction))):
        s = seqs[int(rng.integers(0, len(seqs)))]
        reads.append(s if k % 2 else s.translate(COMPLEMENT)[::-1])
    with open(path, "w") as fh:
        for n, i in enumerate(rng.permutation(len(reads))):
            fh.write(f">r{n:06d}\n{reads[i]}\n")
    return path


@pytest.fixture(scope="module")
def wide_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("answers_wide")
    with TritonServer(write_toy_repository(root / "repo", width=HALF_WIDTH)) as server:
        yield server, write_toy_classifier(root / "clf.safetensors", width=2 * HALF_WIDTH)


def _predict(server: TritonServer, clf: Path, fasta: Path, out: Path, *extra: str) -> dict:
    before = rows_executed(server.grpc_url)
    proc = run_cli("predict", str(fasta), "-o", str(out), "--chunk-size", "150", "--classifier",
                   str(clf), "--server", server.grpc_url, "--window", "64", "--no-report", "-q",
                   *extra)
    assert proc.returncode == 0, proc.stderr
    after = rows_executed(server.grpc_url)
    run = json.loads((out / "run.json").read_text())
    run["rows_executed"] = {m: after[m] - before[m] for m in after}
    return run


@pytest.mark.server
def test_repeats_anywhere_are_sent_once(tmp_path, wide_server):
    """Half the reads repeat one anywhere in the file (far beyond the look-ahead of 2 windows
    of 64 frames), reverse complements included: with --dedup-memory 32M Triton executes at
    most 1.01x the distinct strings, and every output is byte-identical to --no-dedup."""
    server, clf = wide_server
    base = write_coding_fasta(tmp_path / "base.fa", records=300, length=150, seed=31)
    fasta = _spread_repeats(tmp_path / "reads.fa", base, fraction=0.5)
    prep = run_cli("prepare", str(fasta), "-o", str(tmp_path / "prep"), "--chunk-size", "150")
    assert prep.returncode == 0, prep.stderr
    nts = ["".join(b.splitlines()[1:]) for b in
           (tmp_path / "prep" / "reads_identified_nucleotide.fa").read_text().split(">")[1:]]
    prots = ["".join(b.splitlines()[1:]) for b in
             (tmp_path / "prep" / "reads_identified_protein.faa").read_text().split(">")[1:]]
    distinct = {"dnabert_s": len(set(nts)), "esm2": len(set(prots))}
    frames = len(nts)
    assert frames > 10 * 64 and distinct["dnabert_s"] < 0.6 * frames

    on = _predict(server, clf, fasta, tmp_path / "on", "--dedup-memory", "32M")
    off = _predict(server, clf, fasta, tmp_path / "off", "--no-dedup")
    assert outputs_of(tmp_path / "on") == outputs_of(tmp_path / "off")
    probe = {"dnabert_s": 0, "esm2": 1}  # the toy esm2's width is probed with one row
    for model, rows in on["rows_executed"].items():
        assert rows - probe[model] <= 1.01 * distinct[model], (model, rows, distinct)
        assert off["rows_executed"][model] - probe[model] == frames
    answers = on["dedup"]["answers"]
    distinct_frames = len(set(zip(nts, prots, strict=True)))
    assert answers["reused"] == frames - distinct_frames
    assert answers["entries"] == distinct_frames and answers["evictions"] == 0
    assert 0 < answers["bytes"] <= 32 << 20
    assert on["dedup"]["table_capacity"] == 0  # no vectors kept: only answers
    assert off["dedup"]["answers"] is None


@pytest.mark.server
def test_save_embeddings_vectors_identical_to_no_dedup(tmp_path, wide_server):
    """--save-embeddings keeps the vector table (the vectors are an output): same file bytes."""
    server, clf = wide_server
    base = write_coding_fasta(tmp_path / "base.fa", records=60, length=150, seed=32)
    fasta = _spread_repeats(tmp_path / "reads.fa", base, fraction=0.5)
    runs = {}
    for name, extra in (("on", ()), ("off", ("--no-dedup",))):
        runs[name] = _predict(server, clf, fasta, tmp_path / name, "--save-embeddings", *extra)
    assert (tmp_path / "on" / "embeddings.h5").read_bytes() == \
        (tmp_path / "off" / "embeddings.h5").read_bytes()
    assert outputs_of(tmp_path / "on") == outputs_of(tmp_path / "off")
    assert runs["on"]["dedup"]["answers"] is None and runs["on"]["dedup"]["table_capacity"] > 0
    # and the saved vectors re-classified (no server) give the answer cache's outputs
    replay = run_cli("predict", str(fasta), "-o", str(tmp_path / "replay"), "--chunk-size", "150",
                     "--classifier", str(clf), "--embeddings", str(tmp_path / "on" / "embeddings.h5"),
                     "--no-report", "-q")
    assert replay.returncode == 0, replay.stderr
    cached = _predict(server, clf, fasta, tmp_path / "cached")
    assert cached["dedup"]["answers"]["reused"] > 0
    assert outputs_of(tmp_path / "replay") == outputs_of(tmp_path / "cached")


@pytest.mark.server
def test_without_repeats_dedup_holds_only_the_answer_cache(tmp_path, wide_server):
    """No repeats at all, real widths: dedup keeps no vectors and its one growing structure, the
    answer cache, holds what its entries need and no more (24-byte slots at most 3/4 full, doubling
    from its first size, both tables held while entries move). What that costs in the process's
    peak RSS beside --no-dedup depends on the allocator and thread timing, so it is a benchmark
    figure (bench/bench_dedup.py), not a test."""
    server, clf = wide_server
    fasta = write_coding_fasta(tmp_path / "reads.fa", records=2000, length=450, seed=33)
    runs = {name: _predict(server, clf, fasta, tmp_path / name, "--window", "1024", *extra)
            for name, extra in (("off", ("--no-dedup",)), ("on", ()))}
    assert outputs_of(tmp_path / "on") == outputs_of(tmp_path / "off")
    frames = runs["on"]["counts"]["frames"]
    assert frames > 4 * 1024
    dedup = runs["on"]["dedup"]
    answers = dedup["answers"]
    assert dedup["table_capacity"] == 0  # no vector table: only answers
    assert answers["reused"] == 0 and answers["entries"] == frames and answers["evictions"] == 0
    # at its last doubling the cache held S slots (S <= frames / max load) and the new 2S at once
    slots = max(FIRST_SLOTS, 3 * frames / ANSWER_MAX_LOAD)
    assert answers["peak_bytes"] <= ANSWER_SLOT_BYTES * slots, (answers, frames)
    assert runs["on"]["rows_executed"] == runs["off"]["rows_executed"]


@pytest.mark.server
def test_kill_and_resume_with_the_answer_cache_is_byte_identical(tmp_path, slow_server):
    """SIGKILL mid-run, repeats spread over the whole file: the resumed run starts with an empty
    cache (frames first seen before the kill are classified again), answers the later repeats
    from it, and every output is byte-identical to an uninterrupted --no-dedup run."""
    base = write_coding_fasta(tmp_path / "base.fa", records=150, length=150, seed=34)
    fasta = _spread_repeats(tmp_path / "reads.fa", base, fraction=0.5)
    clf = write_toy_classifier(tmp_path / "clf.safetensors")
    args = [str(fasta), "--chunk-size", "150", "--classifier", str(clf), "--server",
            slow_server.grpc_url, "--window", "24", "--batch-size", "8", "--no-report"]
    ref = tmp_path / "ref"
    proc = run_cli("predict", *args, "--no-dedup", "-o", str(ref))
    assert proc.returncode == 0, proc.stderr
    total = json.loads((ref / "run.json").read_text())["counts"]["windows"]

    out = tmp_path / "out"
    run = start_predict([*args, "-o", str(out)])
    try:
        wait_for_window(run, out, windows=3)
        run.send_signal(signal.SIGKILL)
    finally:
        stderr_of(run, timeout=60)
    assert run.returncode == -signal.SIGKILL
    killed_at = windows_done(out)
    assert 3 <= killed_at < total  # really mid-run

    resumed = run_cli("predict", *args, "-o", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from window" in resumed.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["resumed"]["windows_reused"] == killed_at
    dedup = record["dedup"]
    answers = dedup["answers"]
    assert dedup["frames"] < record["counts"]["frames"]  # only the resumed windows ran here
    assert answers["reused"] > 0 and answers["evictions"] == 0  # repeats answered after resume
    assert answers["entries"] + answers["reused"] == dedup["frames"]  # each frame once or reused
    assert outputs_of(out) == outputs_of(ref)
