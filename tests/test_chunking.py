"""Chunk boundaries against the original's arithmetic, restated from golden/README.md."""

from __future__ import annotations

import pytest

from orchestrator.chunk.chunking import Chunk, chunk_bounds, chunk_sequence
from orchestrator.read.record import Record


def readme_bounds(length: int, size: int) -> list[tuple[int, int]]:
    """golden/README.md "Chunked file": overlaps b = first n-1 of [q+1]*(q+r) + [q]*(n-1-q-r)."""
    n = -(-length // size)
    q, r = divmod(n * size - length, n)
    b = ([q + 1] * (q + r) + [q] * max(0, n - 1 - q - r))[: n - 1]
    starts = [k * size - sum(b[:k]) for k in range(n)]
    return [(s, min(s + size, length)) for s in starts]


@pytest.mark.parametrize("size", [300, 500])
def test_every_length_up_to_3000(size: int) -> None:
    for length in range(1, 3001):
        bounds = chunk_bounds(length, size)
        assert bounds == readme_bounds(length, size), length
        n = -(-length // size)
        assert len(bounds) == n
        assert bounds[0][0] == 0 and bounds[-1][1] == length
        for (s0, e0), (s1, _e1) in zip(bounds, bounds[1:], strict=False):
            assert e0 - s0 == size  # only the last chunk may be short
            assert s0 < s1 <= e0  # moves forward, no gap: every base is covered
        assert 0 < bounds[-1][1] - bounds[-1][0] <= size


@pytest.mark.parametrize(("size", "short_last", "lengths"), [(500, 10737, 19500), (300, 5411, 19700)])
def test_short_last_chunk_frequency_from_readme(size: int, short_last: int, lengths: int) -> None:
    """README: for L from N+1 to 20000 the last chunk is shorter than N this many times."""
    counted = [length for length in range(size + 1, 20001)
               if (lambda b: b[-1][1] - b[-1][0])(chunk_bounds(length, size)) < size]
    assert (len(counted), 20000 - size) == (short_last, lengths)


@pytest.mark.parametrize(("length", "expected"), [
    (501, [(0, 500), (250, 501)]),
    (1001, [(0, 500), (333, 833), (666, 1001)]),
    (999, [(0, 500), (499, 999)]),
    (1499, [(0, 500), (499, 999), (999, 1499)]),
    (1500, [(0, 500), (500, 1000), (1000, 1500)]),
    (500, [(0, 500)]),
    (137, [(0, 137)]),
    (1, [(0, 1)]),
    (0, []),
])
def test_readme_examples(length: int, expected: list[tuple[int, int]]) -> None:
    assert chunk_bounds(length, 500) == expected


def test_10001_gives_21_chunks_stride_476() -> None:
    bounds = chunk_bounds(10001, 500)
    assert len(bounds) == 21
    assert {b[0] - a[0] for a, b in zip(bounds, bounds[1:], strict=False)} == {476}
    assert bounds[-1] == (9520, 10001)


def test_chunk_sequence_ids_and_case() -> None:
    seq = b"acgtN" * 120 + b"ACGT"  # 604 nt
    chunks = chunk_sequence(Record("x", seq), 300)
    assert [c.id for c in chunks] == ["x_chunk_1", "x_chunk_2", "x_chunk_3"]
    assert chunks[0] == Chunk("x_chunk_1", seq[:300], 0, 300)
    assert [(c.start, c.end) for c in chunks] == chunk_bounds(len(seq), 300)
    assert all(c.seq == seq[c.start:c.end] for c in chunks)
    assert chunks[-1].seq == seq[chunk_bounds(604, 300)[-1][0]:]
    assert chunk_sequence(Record("empty", b""), 500) == []
