"""Read sets of many records in bounded memory: the duplicate-ID check, external sorts and merges.

The memory figures themselves (peak RSS per read, with and without dedup) are measured by
bench/bench_reads.py; these tests check that the bounded paths give the same answers as the
in-memory ones and that a duplicate ID among 10^6 records is still refused before any model call.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from predict_fixtures import run_cli, write_toy_classifier

import orchestrator.write.external as external
from orchestrator.embed.triton.server import free_port
from orchestrator.read.duplicates import HashCounter
from orchestrator.write.formats import natural_sort_key
from orchestrator.write.lock import LOCK_NAME

MILLION = 10**6


def _write_ids(path: Path, ids: list[str]) -> Path:
    with open(path, "w") as fh:
        fh.writelines(f">{rid}\nACGT\n" for rid in ids)
    return path


@pytest.mark.server
@pytest.mark.slow
def test_duplicate_ids_among_a_million_records_are_named_before_any_model_call(tmp_path: Path) -> None:
    """Duplicates first and last, second and second to last, and in the middle of 10^6 records
    (beyond the in-memory bound, so the spilled buckets find them): exit 2 naming each with its
    places, in input order. The --server port has nothing listening, so a run that asked a
    server anything would exit 3 (servers unavailable) instead; and nothing but the output
    folder's lock is left."""
    ids = [f"r{i:07d}" for i in range(MILLION)]
    middle = MILLION // 2
    pairs = {"dupA": (0, MILLION - 1), "dupC": (1, MILLION - 2), "dupB": (middle, middle + 1)}
    for rid, places in pairs.items():
        for i in places:
            ids[i] = rid
    fasta = _write_ids(tmp_path / "reads.fa", ids)
    clf = write_toy_classifier(tmp_path / "clf.safetensors")
    out = tmp_path / "out"
    proc = run_cli("predict", str(fasta), "-o", str(out), "--chunk-size", "300", "--classifier",
                   str(clf), "--server", f"127.0.0.1:{free_port()}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    named = ", ".join(f"{rid} ({fasta}:{2 * a + 1}, {fasta}:{2 * b + 1})"
                      for rid, (a, b) in sorted(pairs.items(), key=lambda item: item[1][0]))
    assert f"duplicate record IDs: {named}; record IDs must be unique" in proc.stderr
    written = [p for p in out.rglob("*") if p.is_file() and p.name != LOCK_NAME]
    assert not written, written  # no results, no checkpoint, no spilled hashes left


def test_spilled_hash_buckets_find_the_same_repeats_as_one_sorted_array(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    values = rng.integers(-2**63, 2**63 - 1, size=20_000, dtype=np.int64)
    repeats = values[[0, 7, 10_000, 19_999]]
    values = np.concatenate([values, repeats, repeats[:1]])
    rng.shuffle(values)
    found = []
    for bound in (1_000, 10**6):  # spilled 20 times; held in memory
        counter = HashCounter(tmp_path / "spill", bound)
        for v in values.tolist():
            counter.add(v)
        found.append(counter.repeated().tolist())
        counter.close()
    assert found[0] == found[1] == sorted(repeats.tolist())
    assert not list((tmp_path / "spill").iterdir())


def test_external_sort_and_merge_give_the_stable_in_memory_order(tmp_path: Path, monkeypatch) -> None:
    """Runs of 7 lines merged 3 at a time (levels of temporary files): the same lines as one
    stable sort, equal keys in input order; no temporary file left."""
    monkeypatch.setattr(external, "SORT_RUN_LINES", 7)
    monkeypatch.setattr(external, "MERGE_FAN_IN", 3)
    rnd = random.Random(3)
    lines = [f"x{rnd.randint(0, 40)}\t{i}\n" for i in range(500)]

    def key(line: str) -> list[int | str]:
        return natural_sort_key(line.split("\t", 1)[0])

    sorter = external.ExternalSort(key, tmp_path / "tmp")
    for line in lines:
        sorter.add(line)
    assert list(sorter.sorted_lines()) == sorted(lines, key=key)
    sorter.close()
    parts = []
    for k in range(10):  # sorted parts, as the checkpoint's windows are
        part = tmp_path / f"part{k}"
        part.write_text("".join(sorted(lines[50 * k:50 * (k + 1)], key=key)))
        parts.append(part)
    assert list(external.merge_sorted(parts, key, tmp_path / "tmp")) == sorted(lines, key=key)
    assert not list((tmp_path / "tmp").iterdir())
