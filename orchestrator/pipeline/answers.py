"""predict's answer cache: each distinct frame is embedded and classified once per run.

The classifier runs in the client and its answer for a frame depends only on the frame's
nucleotide slice and protein, so a predict run needs per distinct frame its two scores (8 bytes),
not its 3,328 floats. Each frame is reduced to a 16-byte digest of (nucleotide slice, protein);
a frame whose digest is in the cache takes the stored scores and costs no server request and no
classifier work, wherever in the sample it was seen first. The remaining frames of a window are
classified once per distinct frame (the vectors still come through the per-model string dedup
within the window and across the look-ahead), and their scores enter the cache.

The stored scores are the bytes a fresh computation gives: the classifier's output for a row does
not depend on the rows it is computed with (see `Classifier.predict_proba`; tested bitwise by
tests/test_answers.py), so outputs equal those of `--no-dedup`.

The cache is two open-addressing hash tables in numpy (digests and scores, no Python object per
entry): the current generation takes new entries and grows as it fills; when it is full at its
bound it becomes the old generation and the oldest one is dropped (the evictions). A hit in the
old generation is copied into the current one, so frames in use survive a turnover. Nothing here
enters the resume fingerprint: a resumed run starts empty and may classify a frame again, which
changes no output.
"""

from __future__ import annotations

from collections.abc import Callable
from hashlib import blake2b as _blake2b
from typing import Any

import numpy as np

from orchestrator.embed.contract import Embedded, EmbeddingBackend, EmbeddingTicketLike
from orchestrator.pipeline.options import (
    ANSWER_GENERATIONS,
    ANSWER_MAX_LOAD,
    ANSWER_SLOT_BYTES,
    answer_capacity,
)

# Slots of a fresh generation (393 KB); it doubles as it fills, up to the bound.
FIRST_SLOTS = 1 << 14
# Slots moved at a time when a generation doubles (temporaries stay small beside the tables).
REHASH_BLOCK_SLOTS = 1 << 16

Classify = Callable[[np.ndarray, np.ndarray], np.ndarray]


def frame_keys(nucleotides: list[str], proteins: list[str]) -> np.ndarray:
    """[n, 2] uint64: a 128-bit digest per frame (nucleotide slice, newline, protein).

    The low bit of the first word is set so that no key is the empty slot's (0, 0).
    """
    blob = b"".join(_blake2b(f"{nt}\n{prot}".encode(), digest_size=16).digest()
                    for nt, prot in zip(nucleotides, proteins, strict=True))
    keys = np.frombuffer(blob, dtype=np.uint64).reshape(-1, 2).copy()
    keys[:, 0] |= np.uint64(1)
    return keys


_KEY = np.dtype((np.void, 16))


def unique_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(keys, axis=0, return_index=True, return_inverse=True) for [n, 2] uint64 keys,
    sorting them as 16-byte values (a quarter of the cost of the axis=0 form)."""
    flat = np.ascontiguousarray(keys).view(_KEY).reshape(-1)
    unique, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
    return unique.view(np.uint64).reshape(-1, 2), first, inverse.reshape(-1)


class _Generation:
    """One open-addressing table (linear probing): keys [slots, 2] uint64, scores [slots, 2]."""

    def __init__(self, slots: int) -> None:
        self.keys = np.zeros((slots, 2), dtype=np.uint64)
        self.values = np.zeros((slots, 2), dtype=np.float32)
        self.count = 0

    @property
    def slots(self) -> int:
        return len(self.keys)

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.values.nbytes)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Slot of each key, -1 where absent (all keys probed together, one step at a time)."""
        slots = np.full(len(keys), -1, dtype=np.int64)
        active = np.arange(len(keys))
        pos = (keys[:, 1] % np.uint64(self.slots)).astype(np.int64)
        while active.size:
            held = self.keys[pos]
            hit = (held == keys[active]).all(axis=1)
            empty = (held == 0).all(axis=1)
            slots[active[hit]] = pos[hit]
            more = ~(hit | empty)
            active, pos = active[more], (pos[more] + 1) % self.slots
        return slots

    def insert(self, keys: np.ndarray, values: np.ndarray) -> None:
        """Add keys that are absent and distinct; the caller keeps the load under the bound."""
        active = np.arange(len(keys))
        pos = (keys[:, 1] % np.uint64(self.slots)).astype(np.int64)
        while active.size:
            empty = (self.keys[pos] == 0).all(axis=1)
            # of the keys that found an empty slot, the first one per slot takes it
            taken, first = np.unique(pos[empty], return_index=True)
            winners = active[empty][first]
            self.keys[taken] = keys[winners]
            self.values[taken] = values[winners]
            won = np.zeros(len(active), dtype=bool)
            won[np.flatnonzero(empty)[first]] = True
            pos = np.where(empty, pos, (pos + 1) % self.slots)[~won]
            active = active[~won]
        self.count += len(keys)


class AnswerCache:
    """digest of a frame -> its two scores, within `memory_bytes` (both generations together)."""

    def __init__(self, memory_bytes: int) -> None:
        self.memory_bytes = int(memory_bytes)
        self.capacity = answer_capacity(self.memory_bytes)  # entries per generation
        self.max_slots = self.memory_bytes // (ANSWER_GENERATIONS * ANSWER_SLOT_BYTES)
        self.current = _Generation(min(FIRST_SLOTS, self.max_slots))
        self.old: _Generation | None = None
        self.reused = 0  # frames answered from the cache or an earlier unfinished window
        # windows submitted and not yet finished, oldest first: what they sent is not sent again
        self.pending: list[AnswerTicket] = []
        self.evictions = 0
        self.peak_bytes = self.nbytes

    def __len__(self) -> int:
        return self.current.count + (self.old.count if self.old is not None else 0)

    @property
    def nbytes(self) -> int:
        return self.current.nbytes + (self.old.nbytes if self.old is not None else 0)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found [n] bool, scores [n, 2] float32, zero where not found); old hits move up."""
        scores = np.zeros((len(keys), 2), dtype=np.float32)
        slots = self.current.find(keys)
        found = slots >= 0
        scores[found] = self.current.values[slots[found]]
        if self.old is not None and not found.all():
            rest = np.flatnonzero(~found)
            old_slots = self.old.find(keys[rest])
            hit = old_slots >= 0
            if hit.any():
                rows = rest[hit]
                scores[rows] = self.old.values[old_slots[hit]]
                found[rows] = True
                unique, first = np.unique(keys[rows], axis=0, return_index=True)
                self.add(unique, scores[rows[first]])
        return found, scores

    def add(self, keys: np.ndarray, scores: np.ndarray) -> None:
        """Enter distinct keys (those already in the current generation are skipped)."""
        if not len(keys):
            return
        new = self.current.find(keys) < 0
        keys, scores = keys[new], scores[new]
        while len(keys):
            room = int(ANSWER_MAX_LOAD * self.current.slots) - self.current.count
            if room <= 0:
                self._make_room()
                continue
            self.current.insert(keys[:room], scores[:room])
            keys, scores = keys[room:], scores[room:]
        self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def _make_room(self) -> None:
        """Grow the current generation, or at its bound turn it over (the oldest is dropped)."""
        if self.current.slots < self.max_slots:
            grown = _Generation(min(2 * self.current.slots, self.max_slots))
            # both tables are held while the entries move: the cache's true peak
            self.peak_bytes = max(self.peak_bytes, self.nbytes + grown.nbytes)
            for start in range(0, self.current.slots, REHASH_BLOCK_SLOTS):  # no full-size copies
                keys = self.current.keys[start:start + REHASH_BLOCK_SLOTS]
                used = (keys != 0).any(axis=1)
                grown.insert(keys[used], self.current.values[start:start + REHASH_BLOCK_SLOTS][used])
            self.current = grown
            return
        if self.old is not None:
            self.evictions += self.old.count
        self.old = None  # freed before the new generation is allocated
        # at full size at once: growing beside a full old generation would pass the bound
        self.old, self.current = self.current, _Generation(self.max_slots)

    def submit(self, backend: EmbeddingBackend, nucleotides: list[str],
               proteins: list[str]) -> AnswerTicket:
        """Look a window's frames up; send only the distinct frames nothing can answer.

        A frame is answered by the cache, else by a window submitted earlier and not yet
        finished (it is finished first: windows finish in input order), else it is sent.
        """
        keys = frame_keys(nucleotides, proteins)
        found, scores = self.lookup(keys)
        self.reused += int(found.sum())
        missing = np.flatnonzero(~found)
        unique, first, inverse = unique_keys(keys[missing])
        to_send = np.ones(len(unique), dtype=bool)
        from_pending: list[tuple[int, AnswerTicket, int]] = []
        for earlier in self.pending:
            rows = earlier.rows_of(unique)
            for u in np.flatnonzero((rows >= 0) & to_send):
                from_pending.append((int(u), earlier, int(rows[u])))
                to_send[u] = False
        sent = np.flatnonzero(to_send)
        self.reused += len(missing) - len(sent)
        rows = missing[first[sent]]
        inner = (backend.submit([nucleotides[i] for i in rows], [proteins[i] for i in rows])
                 if len(rows) else None)
        ticket = AnswerTicket(self, scores, missing, unique, inverse.reshape(-1), sent,
                              from_pending, inner)
        if len(sent):  # a window that sent nothing has nothing to answer later ones with
            self.pending.append(ticket)
        return ticket

    def finished(self, ticket: AnswerTicket, keys: np.ndarray, scores: np.ndarray) -> None:
        """A window's fresh answers enter the cache and leave the pending ones."""
        self.add(keys, scores)
        self.pending.remove(ticket)

    def info(self) -> dict[str, Any]:
        """For run.json's dedup object."""
        return {"reused": self.reused, "entries": len(self), "bytes": self.nbytes,
                "peak_bytes": self.peak_bytes, "evictions": self.evictions,
                "capacity": self.capacity, "memory_bytes": self.memory_bytes}


class AnswerTicket:
    """A window submitted through the cache: cached scores plus the vectors of the rest."""

    def __init__(self, cache: AnswerCache, scores: np.ndarray, missing: np.ndarray,
                 unique: np.ndarray, inverse: np.ndarray, sent: np.ndarray,
                 from_pending: list[tuple[int, AnswerTicket, int]],
                 inner: EmbeddingTicketLike | None) -> None:
        self.cache = cache
        self.scores = scores  # [n, 2]: the cached rows' scores, the rest filled by answers()
        self.missing = missing  # rows the cache did not answer
        self.unique = unique  # their distinct keys
        self.inverse = inverse  # missing row -> its distinct key
        self.sent = sent  # distinct keys sent, in the order their vectors come back
        self.from_pending = from_pending  # (distinct key, earlier window, its sent row)
        self.inner = inner
        self.fresh: np.ndarray | None = None  # [len(sent), 2] once answered
        # the sent keys by their first word, to find them from later windows without a dict
        sent_keys = unique[sent]
        self.by_first_word = np.argsort(sent_keys[:, 0], kind="stable")
        self.first_words = sent_keys[self.by_first_word, 0]
        self.second_words = sent_keys[self.by_first_word, 1]

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """Each key's row among the keys this window sent, -1 where it sent no such key."""
        if not len(self.first_words):
            return np.full(len(keys), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self.first_words, keys[:, 0]), len(self.first_words) - 1)
        # equal first words of two sent keys are ~2^-64 rare; then the later one is sent again
        match = (self.first_words[pos] == keys[:, 0]) & (self.second_words[pos] == keys[:, 1])
        return np.where(match, self.by_first_word[pos], -1)

    @property
    def frames_sent(self) -> int:
        return len(self.sent)

    def done(self) -> bool:
        return self.inner is None or self.inner.done()

    def result(self) -> AnswerTicket:
        """Wait for the vectors (the run loop hands this to the window's finish)."""
        if self.inner is not None:
            self.vectors: Embedded = self.inner.result()
            self.inner = None
        return self

    def answers(self, classify: Classify) -> np.ndarray:
        """[n, 2] float32 scores of every row: the frames sent classified, the rest reused."""
        if len(self.sent):
            self.fresh = classify(*self.vectors)
            del self.vectors
        else:
            self.fresh = np.empty((0, 2), dtype=np.float32)
        if len(self.unique):
            unique_scores = np.empty((len(self.unique), 2), dtype=np.float32)
            unique_scores[self.sent] = self.fresh
            for u, earlier, row in self.from_pending:
                if earlier.fresh is None:
                    raise RuntimeError("a window was finished before one it reuses answers from")
                unique_scores[u] = earlier.fresh[row]
            self.from_pending = []
            self.scores[self.missing] = unique_scores[self.inverse]
        if len(self.sent):  # only a window that sent frames is pending and has answers to add
            self.cache.finished(self, self.unique[self.sent], self.fresh)
        return self.scores
