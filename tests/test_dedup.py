"""Deduplication: each distinct string is embedded once per run, outputs unchanged.

`DeduplicatingBackend` dedups strings per model within a window and across the windows in flight,
and keeps a table of vectors where vectors are the output (`embed`, `predict --save-embeddings`);
plain `predict` keeps no vectors: its answer cache (tests/test_answers.py) answers repeats.
Unit tests drive `DeduplicatingBackend` with a fake backend whose windows complete only when asked
(so windows really are in flight together); the end-to-end tests run `predict` and `embed` against
a real tritonserver and read Triton's own statistics (rows each model executed).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from predict_fixtures import (
    outputs_of,
    rows_executed,
    run_cli,
    write_coding_fasta,
    write_toy_classifier,
    write_toy_repository,
)
from tolerances import CONTRACT_TOLERANCE, max_abs_diff

from orchestrator.embed.triton.server import TritonServer
from orchestrator.errors import InputError
from orchestrator.pipeline.dedup import DeduplicatingBackend, table_capacity
from orchestrator.pipeline.options import parse_size

WIDTHS = (8, 16)


def _vector(s: str, width: int) -> np.ndarray:
    rng = np.random.default_rng(abs(hash(s)) % (1 << 32))
    return rng.random(width, dtype=np.float32)


class _Ticket:
    def __init__(self, backend: _FakeBackend, nts: list[str], prots: list[str]) -> None:
        self.backend, self.nts, self.prots = backend, nts, prots
        self.finished = False

    def done(self) -> bool:
        return self.finished

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self.finished = True
        return (np.array([_vector(s, WIDTHS[0]) for s in self.nts], np.float32).reshape(-1, WIDTHS[0]),
                np.array([_vector(s, WIDTHS[1]) for s in self.prots], np.float32).reshape(-1, WIDTHS[1]))


class _FakeBackend:
    """Rows are a pure function of the string; records every string it was sent."""

    widths = WIDTHS

    def __init__(self) -> None:
        self.sent_nt: list[str] = []
        self.sent_prot: list[str] = []

    def submit(self, nts: list[str], prots: list[str]) -> _Ticket:
        self.sent_nt += nts
        self.sent_prot += prots
        return _Ticket(self, list(nts), list(prots))

    def models_info(self) -> list[dict]:
        return []

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def _windows(seed: int, n_windows: int = 12, size: int = 40, pool: int = 60) -> list[tuple[list[str], list[str]]]:
    """Windows drawn from a small pool: repeats within windows, across windows, across models
    (proteins repeat more often than nucleotides, as synonymous codons make them)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_windows):
        idx = rng.integers(0, pool, size=size)
        out.append(([f"NT{i}" for i in idx], [f"P{i // 2}" for i in idx]))
    return out


def _run(backend: DeduplicatingBackend, windows, lookahead: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The run loop's pattern: submit up to 1 + lookahead windows, collect the oldest first."""
    results, queue = [], []
    for nts, prots in windows:
        while len(queue) > lookahead:
            results.append(queue.pop(0).result())
        queue.append(backend.submit(nts, prots))
    results += [t.result() for t in queue]
    return results


def _expected(windows):
    return [(np.array([_vector(s, WIDTHS[0]) for s in nts], np.float32),
             np.array([_vector(s, WIDTHS[1]) for s in prots], np.float32)) for nts, prots in windows]


@pytest.mark.parametrize("lookahead", [0, 2, 5])
def test_each_distinct_string_sent_once_across_windows_and_lookahead(lookahead):
    windows = _windows(1)
    fake = _FakeBackend()
    backend = DeduplicatingBackend(fake, memory_bytes=1 << 20)
    got = _run(backend, windows, lookahead)
    for (dna, prot), (want_dna, want_prot) in zip(got, _expected(windows), strict=True):
        assert np.array_equal(dna, want_dna) and np.array_equal(prot, want_prot)
    distinct_nt = {s for nts, _ in windows for s in nts}
    distinct_prot = {s for _, prots in windows for s in prots}
    assert sorted(fake.sent_nt) == sorted(distinct_nt)
    assert sorted(fake.sent_prot) == sorted(distinct_prot)
    info = backend.info()
    assert info["frames"] == sum(len(n) for n, _ in windows)
    assert info["models"]["dnabert_s"]["sent"] == len(distinct_nt)
    assert info["models"]["esm2"]["sent"] == len(distinct_prot)
    assert not backend.in_flight


def test_small_table_stays_correct_and_bounded():
    windows = _windows(2, pool=200)
    fake = _FakeBackend()
    memory = 3 * (4 * sum(WIDTHS) + 2 * 192)  # three entries per model
    backend = DeduplicatingBackend(fake, memory_bytes=memory)
    assert backend.tables["dnabert_s"].capacity == 3
    got = _run(backend, windows, 2)
    for (dna, prot), (want_dna, want_prot) in zip(got, _expected(windows), strict=True):
        assert np.array_equal(dna, want_dna) and np.array_equal(prot, want_prot)
    distinct_nt = {s for nts, _ in windows for s in nts}
    assert len(distinct_nt) < len(fake.sent_nt) < sum(len(n) for n, _ in windows)
    assert len(set(fake.sent_nt)) == len(distinct_nt)
    assert all(len(t) <= 3 and len(t.vectors) <= 3 for t in backend.tables.values())
    assert backend.info()["peak_table_bytes"] <= memory
    assert backend.info()["models"]["dnabert_s"]["evicted"] > 0


def test_zero_memory_dedups_within_windows_and_flight_only():
    windows = [(["A", "A", "B"], ["X", "Y", "X"]), (["A"], ["X"])]
    fake = _FakeBackend()
    backend = DeduplicatingBackend(fake, memory_bytes=0)
    first = backend.submit(*windows[0])
    second = backend.submit(*windows[1])  # A and X are in flight from the first window
    assert fake.sent_nt == ["A", "B"] and fake.sent_prot == ["X", "Y"]
    assert not second.done()
    got = [first.result(), second.result()]
    for (dna, prot), (want_dna, want_prot) in zip(got, _expected(windows), strict=True):
        assert np.array_equal(dna, want_dna) and np.array_equal(prot, want_prot)
    backend.submit(*windows[1]).result()  # nothing in flight, no table: sent again
    assert fake.sent_nt == ["A", "B", "A"]


def test_window_without_frames():
    backend = DeduplicatingBackend(_FakeBackend(), memory_bytes=1 << 20)
    dna, prot = backend.submit([], []).result()
    assert dna.shape == (0, WIDTHS[0]) and prot.shape == (0, WIDTHS[1])


def test_later_window_collected_first_still_correct():
    windows = _windows(3, n_windows=3)
    fake = _FakeBackend()
    backend = DeduplicatingBackend(fake, memory_bytes=1 << 20)
    tickets = [backend.submit(*w) for w in windows]
    got = [t.result() for t in reversed(tickets)][::-1]
    for (dna, prot), (want_dna, want_prot) in zip(got, _expected(windows), strict=True):
        assert np.array_equal(dna, want_dna) and np.array_equal(prot, want_prot)


def test_disabled_passes_through_and_counts():
    windows = _windows(4, n_windows=3)
    fake = _FakeBackend()
    backend = DeduplicatingBackend(fake, memory_bytes=1 << 20, enabled=False)
    _run(backend, windows, 1)
    assert len(fake.sent_nt) == 120
    info = backend.info()
    assert info["enabled"] is False and info["hit_rate"] == 0.0
    assert info["models"]["esm2"]["sent"] == 120


def test_sizes_and_capacity():
    assert parse_size("512M") == 512 << 20
    assert parse_size("2G") == 2 << 30
    assert parse_size("1.5GiB") == 3 << 29
    assert parse_size("4096") == 4096
    assert parse_size("0") == 0
    for bad in ("", "lots", "-1G", "inf", "2X"):
        with pytest.raises(InputError):
            parse_size(bad)
    # the vector table's default bound (embed, --save-embeddings) at the real widths: about 80,000
    # distinct frames
    assert 75_000 < table_capacity(1 << 30, (768, 2560)) < 80_000


# --------------------------------------------------------------------------- end to end, Triton

COMPLEMENT = str.maketrans("ACGT", "TGCA")


def _read_set(path: Path, base: Path, repeats: int, seed: int = 5) -> Path:
    """The base reads plus `repeats` reads that copy a base read or its reverse complement,
    shuffled, with unique IDs."""
    seqs = [line.strip() for line in base.read_text().split(">")[1:]]
    seqs = ["".join(s.splitlines()[1:]) for s in seqs]
    rng = np.random.default_rng(seed)
    reads = list(seqs)
    for k in range(repeats):
        s = seqs[int(rng.integers(0, len(seqs)))]
        reads.append(s if k % 2 else s.translate(COMPLEMENT)[::-1])
    order = rng.permutation(len(reads))
    with open(path, "w") as fh:
        for i in order:
            fh.write(f">read{i:05d}\n{reads[i]}\n")
    return path


def _fasta_sequences(path: Path) -> list[str]:
    return ["".join(block.splitlines()[1:]) for block in path.read_text().split(">")[1:]]


@pytest.fixture(scope="module")
def toy_server(tmp_path_factory):
    """Toy models with a little time per batch, so windows overlap in flight."""
    root = tmp_path_factory.mktemp("dedup_toy")
    with TritonServer(write_toy_repository(root / "repo", delay=0.02)) as server:
        yield server


@pytest.fixture(scope="module")
def reads(tmp_path_factory):
    """150 bp reads, 120 distinct, 120 more that repeat one of them or its reverse complement;
    the distinct strings per model and distinct frames (slice, protein) counted from
    `orchestrator prepare`'s frame files."""
    root = tmp_path_factory.mktemp("dedup_reads")
    base = write_coding_fasta(root / "base.fa", records=120, length=150, seed=21)
    fasta = _read_set(root / "reads.fa", base, repeats=120)
    prep = run_cli("prepare", str(fasta), "-o", str(root / "prep"), "--chunk-size", "150")
    assert prep.returncode == 0, prep.stderr
    nts = _fasta_sequences(root / "prep" / "reads_identified_nucleotide.fa")
    prots = _fasta_sequences(root / "prep" / "reads_identified_protein.faa")
    assert len(nts) == len(prots) > 0
    distinct = {"dnabert_s": len(set(nts)), "esm2": len(set(prots))}
    assert distinct["dnabert_s"] < 0.6 * len(nts)  # the set really repeats itself
    clf = write_toy_classifier(root / "clf.safetensors")
    distinct_frames = len(set(zip(nts, prots, strict=True)))
    return fasta, clf, distinct, len(nts), root, distinct_frames


# The toy esm2 declares a variable output width, so each run asks it once with a one-row probe.
PROBE_ROWS = {"dnabert_s": 0, "esm2": 1}


def _predict(server: TritonServer, fasta: Path, clf: Path, out: Path, *extra: str) -> dict:
    before = rows_executed(server.grpc_url)
    proc = run_cli("predict", str(fasta), "-o", str(out), "--chunk-size", "150", "--classifier",
                   str(clf), "--server", server.grpc_url, "--window", "48", "--batch-size", "8",
                   "--no-report", *extra)
    assert proc.returncode == 0, proc.stderr
    after = rows_executed(server.grpc_url)
    run = json.loads((out / "run.json").read_text())
    run["rows_executed"] = {m: after[m] - before[m] - PROBE_ROWS[m] for m in after}
    return run


@pytest.mark.server
def test_predict_sends_each_distinct_frame_once(tmp_path, toy_server, reads):
    """Plain predict: repeats are answered by the answer cache (scores), not by kept vectors."""
    fasta, clf, distinct, frames, _, distinct_frames = reads
    on = _predict(toy_server, fasta, clf, tmp_path / "on")
    off = _predict(toy_server, fasta, clf, tmp_path / "off", "--no-dedup")
    assert on["rows_executed"] == distinct  # Triton's own count of rows each model ran
    assert off["rows_executed"] == {"dnabert_s": frames, "esm2": frames}
    assert outputs_of(tmp_path / "on") == outputs_of(tmp_path / "off")
    dedup = on["dedup"]
    assert dedup["enabled"] and dedup["frames"] == frames == on["counts"]["frames"]
    assert {m: v["sent"] for m, v in dedup["models"].items()} == distinct
    assert dedup["hit_rate"] == round(1 - sum(distinct.values()) / (2 * frames), 4)
    answers = dedup["answers"]
    assert answers["reused"] == frames - distinct_frames
    assert answers["entries"] == distinct_frames and answers["evictions"] == 0
    assert dedup["table_capacity"] == 0 and dedup["peak_table_bytes"] == 0  # no vectors kept
    assert on["parameters"]["dedup"] is True and off["parameters"]["dedup"] is False
    assert off["dedup"]["enabled"] is False and off["dedup"]["hit_rate"] == 0.0
    assert off["dedup"]["answers"] is None


@pytest.mark.server
def test_answer_cache_smaller_than_the_distinct_frames(tmp_path, toy_server, reads):
    """--dedup-memory 1K: the answer cache holds 15 frames per generation, far fewer than the
    distinct frames: it stays within the bound, evicts, and the outputs do not change."""
    fasta, clf, distinct, frames, root, distinct_frames = reads
    ref = root / "ref_off"
    if not ref.exists():
        _predict(toy_server, fasta, clf, ref, "--no-dedup")
    small = _predict(toy_server, fasta, clf, tmp_path / "small", "--dedup-memory", "1K")
    assert outputs_of(tmp_path / "small") == outputs_of(ref)
    answers = small["dedup"]["answers"]
    assert 0 < answers["capacity"] < distinct_frames / 4
    assert answers["peak_bytes"] <= 1024 and answers["bytes"] <= 1024
    assert answers["evictions"] > 0 and answers["entries"] <= 2 * answers["capacity"]
    assert answers["reused"] > 0
    assert small["dedup"]["table_capacity"] == 0  # no vectors kept
    for model, rows in small["rows_executed"].items():
        assert distinct[model] < rows < frames  # some repeats sent again, still fewer than frames
        assert small["dedup"]["models"][model]["sent"] == rows


def _embed(server: TritonServer, fasta: Path, out: Path, *extra: str) -> dict:
    before = rows_executed(server.grpc_url)
    proc = run_cli("embed", str(fasta), "-o", str(out), "--chunk-size", "150", "--server",
                   server.grpc_url, "--window", "48", "-q", *extra)
    assert proc.returncode == 0, proc.stderr
    after = rows_executed(server.grpc_url)
    record = json.loads(out.with_name(out.name + ".run.json").read_text())
    record["rows_executed"] = {m: after[m] - before[m] - PROBE_ROWS[m] for m in after}
    return record


@pytest.mark.server
def test_embed_file_identical_with_and_without_dedup(tmp_path, toy_server, reads):
    """embed keeps vectors (they are its output): each distinct string is sent once."""
    fasta, _, distinct, frames, _, _ = reads
    on = _embed(toy_server, fasta, tmp_path / "on.h5")
    off = _embed(toy_server, fasta, tmp_path / "off.h5", "--no-dedup")
    assert (tmp_path / "on.h5").read_bytes() == (tmp_path / "off.h5").read_bytes()
    assert {m: v["sent"] for m, v in on["dedup"]["models"].items()} == distinct
    assert on["rows_executed"] == distinct
    assert off["rows_executed"] == {"dnabert_s": frames, "esm2": frames}
    assert on["dedup"]["table_capacity"] >= distinct["dnabert_s"]  # the default holds them all


@pytest.mark.server
def test_vector_table_smaller_than_the_distinct_strings(tmp_path, toy_server, reads):
    """embed with --dedup-memory 4K: the vector table holds a few strings per model, far fewer
    than the distinct ones: it stays within the bound, evicts, and the vectors do not change."""
    fasta, _, distinct, frames, root, _ = reads
    ref = root / "ref_off.h5"
    if not ref.exists():
        _embed(toy_server, fasta, ref, "--no-dedup")
    small = _embed(toy_server, fasta, tmp_path / "small.h5", "--dedup-memory", "4K")
    assert (tmp_path / "small.h5").read_bytes() == ref.read_bytes()
    dedup = small["dedup"]
    assert 0 < dedup["table_capacity"] < distinct["dnabert_s"] / 4
    assert 0 < dedup["peak_table_bytes"] <= 4096
    for model, rows in small["rows_executed"].items():
        assert distinct[model] < rows < frames  # more than once each, still fewer than frames
        assert dedup["models"][model]["sent"] == rows
        assert dedup["models"][model]["evicted"] > 0


@pytest.mark.server
def test_demo_encoders_labels_equal_scores_close(tmp_path, reads, demo_artifacts, triton_server):
    """The real encoder code (demo weights), batched by Triton: the answer cache reuses scores of
    frames whose vectors were computed in other batches than --no-dedup's; a frame's vector does
    not depend on its batch-mates beyond float32 rounding, so no label changes and no score moves
    beyond the contract tolerance (tests/tolerances.py)."""
    fasta = reads[0]
    clf = Path(demo_artifacts) / "classifiers" / "300_model.pth"
    rows = {}
    for name, extra in (("on", []), ("off", ["--no-dedup"])):
        proc = run_cli("predict", str(fasta), "-o", str(tmp_path / name), "--chunk-size", "150",
                       "--classifier", str(clf), "--server", triton_server.grpc_url,
                       "--window", "64", "--no-report", *extra)
        assert proc.returncode == 0, proc.stderr
        lines = (tmp_path / name / "prediction_results.txt").read_text().splitlines()[1:]
        rows[name] = [line.split("\t") for line in lines]
    assert [r[:2] for r in rows["on"]] == [r[:2] for r in rows["off"]]
    on = np.array([[float(x) for x in r[2:]] for r in rows["on"]])
    off = np.array([[float(x) for x in r[2:]] for r in rows["off"]])
    assert max_abs_diff(on, off) <= CONTRACT_TOLERANCE
    run = json.loads((tmp_path / "on" / "run.json").read_text())
    assert run["dedup"]["hit_rate"] > 0.3
