"""Embed each distinct string once per run: a deduplicating wrapper around any embedding backend.

Read sets repeat themselves (sequencing duplicates, amplicons, a read and its reverse complement,
whose six frames are the same six proteins and nucleotide slices), and every string sent costs GPU
time on a shared cluster. Per window and per model, each string is reduced to a 16-byte digest
(the table keeps digests, never the strings; with no table, as behind predict's answer cache, the
strings the windows hold are the keys) and resolved, in this order, from

1. an earlier row of the same window,
2. the table: a bounded least-recently-used store of vectors from earlier windows,
3. a window still in flight (the look-ahead): the vector is taken from that window's answer,
4. the servers: only these strings are sent.

The two models are deduplicated separately (two frames may share a protein but not their
nucleotide slice). The models are row-independent (padding invariance), so a vector does not
depend on what it was batched with and the outputs equal those of a run without deduplication.
Nothing here enters the resume fingerprint: a resumed run starts with an empty table and may
embed a string again, which changes no output.
"""

from __future__ import annotations

from collections import OrderedDict
from hashlib import blake2b as _blake2b
from typing import Any

import numpy as np

from orchestrator.embed.contract import (
    DNA_MODEL,
    MODELS,
    PROTEIN_MODEL,
    Embedded,
    EmbeddingBackend,
    EmbeddingTicketLike,
)

DIGEST_BYTES = 16
# Python's bookkeeping per table entry besides the vector: the digest (a 49-byte bytes object),
# its OrderedDict node and hash slot, the slot number. Measured ~150 B; rounded up.
ENTRY_OVERHEAD_BYTES = 192
# Table rows are allocated in blocks as the table fills, so a small run never holds the bound.
GROW_ROWS = 4096


def table_capacity(memory_bytes: int, widths: tuple[int, int]) -> int:
    """Entries per model such that both tables together stay within `memory_bytes`.

    Both models get the same number of entries: every frame has one string of each.
    """
    per_entry = sum(4 * w for w in widths) + len(widths) * ENTRY_OVERHEAD_BYTES
    return max(0, int(memory_bytes) // per_entry)


class VectorTable:
    """digest -> float32 vector, least recently used first out, at most `capacity` entries."""

    def __init__(self, width: int, capacity: int) -> None:
        self.width = width
        self.capacity = capacity
        self.vectors = np.empty((0, width), dtype=np.float32)
        self.slots: OrderedDict[bytes, int] = OrderedDict()
        self.used = 0  # rows of `vectors` ever handed out; evicted rows are reused after that
        self.evictions = 0

    def __len__(self) -> int:
        return len(self.slots)

    def put_many(self, keys: list[bytes], vectors: np.ndarray) -> None:
        """Insert rows whose keys are not in the table, evicting the least recently used ones.

        Keys are a window's misses: never in the table when the window was planned, and no other
        window sends them while it is in flight, so all of them are new here.
        """
        if not self.capacity or not keys:
            return
        if len(keys) > self.capacity:  # only the last `capacity` could stay anyway
            keys, vectors = keys[-self.capacity:], vectors[-self.capacity:]
        fresh = min(len(keys), self.capacity - self.used)  # never-used rows first
        slots = list(range(self.used, self.used + fresh))
        self.used += fresh
        evict = len(keys) - fresh
        if evict:
            pop = self.slots.popitem
            slots += [pop(last=False)[1] for _ in range(evict)]
            self.evictions += evict
        self.slots.update(zip(keys, slots, strict=True))
        self._reserve(self.used)
        self.vectors[slots] = vectors

    def _reserve(self, rows: int) -> None:
        if rows <= len(self.vectors):
            return
        size = min(self.capacity, max(rows, 2 * len(self.vectors), GROW_ROWS))
        grown = np.empty((size, self.width), dtype=np.float32)
        grown[: len(self.vectors)] = self.vectors
        self.vectors = grown

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes) + len(self.slots) * ENTRY_OVERHEAD_BYTES


class _Plan:
    """One model's rows of one window: unique strings, where each comes from, and the row map.

    `inverse[i]` is the unique string of row i. A unique string is a table hit (its vector copied
    into `unique` at once), an answer of a window still in flight (`from_flight`), or one of this
    window's misses (`misses`, sent in that order).
    """

    def __init__(self, width: int) -> None:
        self.inverse: np.ndarray | None = None  # None: every row is its own miss, in order
        self.unique = np.empty((0, width), dtype=np.float32)
        self.from_flight: list[tuple[int, DedupTicket, int]] = []  # (unique, window, miss row)
        self.send: list[str] = []  # the strings of `misses`
        self.misses: list[int] = []  # unique indices sent to the servers, in send order
        self.miss_keys: list[bytes] | list[str] = []


class DedupTicket:
    """A window's vectors: its own misses from the servers plus rows reused from elsewhere."""

    def __init__(self, owner: DeduplicatingBackend, plans: dict[str, _Plan],
                 inner: EmbeddingTicketLike | None, n: int) -> None:
        self.owner = owner
        self.plans = plans
        self.inner = inner
        self.n = n
        self.missed: dict[str, np.ndarray] | None = None  # this window's misses' vectors
        # digest -> row among this window's misses, per model: later windows take from it
        self.miss_rows = {m: dict(zip(p.miss_keys, range(len(p.miss_keys)), strict=True))
                          for m, p in plans.items()}
        self._result: Embedded | None = None

    def done(self) -> bool:
        if self._result is not None:
            return True
        if self.inner is not None and not self.inner.done():
            return False
        return all(t.done() for p in self.plans.values() for _, t, _ in p.from_flight)

    def miss_vectors(self) -> dict[str, np.ndarray]:
        """This window's answers from the servers (waits for them); enters them into the table."""
        if self.missed is None:
            if self.inner is not None:
                dna, prot = self.inner.result()
            else:  # nothing was sent: every row reused, or a window without frames
                dna, prot = (np.empty((0, w), dtype=np.float32) for w in self.owner.widths)
            self.missed = {DNA_MODEL: dna, PROTEIN_MODEL: prot}
            self.owner._collected(self)
        return self.missed

    def result(self) -> Embedded:
        if self._result is None:
            missed = self.miss_vectors()
            out = []
            for model in MODELS:
                plan = self.plans[model]
                got = missed[model]
                if plan.inverse is None:  # nothing reused: as sent
                    out.append(got)
                    continue
                if plan.misses:
                    plan.unique[plan.misses] = got
                for u, ticket, row in plan.from_flight:
                    plan.unique[u] = ticket.miss_vectors()[model][row]
                out.append(plan.unique[plan.inverse])
            self._result = (out[0], out[1])
            self.plans = {}  # drop the references to earlier windows
        return self._result


class DeduplicatingBackend:
    """An `EmbeddingBackend` that sends each model only strings it has not embedded in this run.

    `memory_bytes` bounds both tables together (vectors plus bookkeeping); 0 keeps deduplication
    within a window and across the look-ahead only. `enabled=False` passes windows through as
    they are and only counts, so run.json has the same fields either way.
    """

    def __init__(self, inner: EmbeddingBackend, memory_bytes: int, enabled: bool = True) -> None:
        self.inner = inner
        self.widths = inner.widths
        self.enabled = enabled
        self.memory_bytes = int(memory_bytes)
        capacity = table_capacity(self.memory_bytes, self.widths) if enabled else 0
        self.tables = {m: VectorTable(w, capacity) for m, w in zip(MODELS, self.widths, strict=True)}
        # windows sent but not yet collected, oldest first: their strings are not sent again
        self.in_flight: list[DedupTicket] = []
        self.frames = 0
        self.sent = dict.fromkeys(MODELS, 0)
        self.peak_table_bytes = 0

    # -- the EmbeddingBackend interface ---------------------------------------------------------
    def models_info(self) -> list[dict[str, Any]]:
        return self.inner.models_info()

    def stats(self) -> dict[str, dict[str, float]]:
        return self.inner.stats()

    def endpoints_info(self) -> list[dict[str, Any]] | None:
        return getattr(self.inner, "endpoints_info", lambda: None)()

    def close(self) -> None:
        self.inner.close()

    def submit(self, nucleotides: list[str], proteins: list[str]) -> EmbeddingTicketLike:
        n = len(nucleotides)
        self.frames += n
        if not self.enabled:
            self.sent[DNA_MODEL] += n
            self.sent[PROTEIN_MODEL] += len(proteins)
            return self.inner.submit(nucleotides, proteins)
        plans = {DNA_MODEL: self._plan(DNA_MODEL, nucleotides),
                 PROTEIN_MODEL: self._plan(PROTEIN_MODEL, proteins)}
        dna_send, prot_send = plans[DNA_MODEL].send, plans[PROTEIN_MODEL].send
        inner = self.inner.submit(dna_send, prot_send) if dna_send or prot_send else None
        ticket = DedupTicket(self, plans, inner, n)
        self.in_flight.append(ticket)
        for model, plan in plans.items():
            self.sent[model] += len(plan.misses)
            plan.send = []
        return ticket

    def answered_elsewhere(self, frames: int) -> None:
        """Count frames answered without this backend (predict's answer cache) as reused."""
        self.frames += frames

    # -- internals ------------------------------------------------------------------------------
    def _plan(self, model: str, strings: list[str]) -> _Plan:
        """Resolve each row (same window, table, a window in flight, else a miss to send).

        The hot loop of deduplication: a digest and a few dictionary look-ups per string. Where
        the table keeps nothing (predict behind its answer cache) `_plan_strings` does the same
        with the strings as keys.
        """
        table = self.tables[model]
        if not table.capacity:
            return self._plan_strings(model, strings, table.width)
        slots = table.slots
        touch = slots.move_to_end
        flights = [(t, t.miss_rows[model]) for t in self.in_flight]
        plan = _Plan(table.width)
        from_table: list[tuple[int, int]] = []
        from_flight, misses, miss_keys, send = plan.from_flight, plan.misses, plan.miss_keys, plan.send
        index: dict[bytes, int] = {}
        inverse: list[int] = []
        for s in strings:
            key = _blake2b(s.encode(), digest_size=DIGEST_BYTES).digest()
            u = index.get(key)
            if u is None:
                u = index[key] = len(index)
                slot = slots.get(key)
                if slot is not None:
                    touch(key)
                    from_table.append((u, slot))
                else:
                    for ticket, rows in flights:
                        row = rows.get(key)
                        if row is not None:
                            from_flight.append((u, ticket, row))
                            break
                    else:
                        misses.append(u)
                        miss_keys.append(key)
                        send.append(s)
            inverse.append(u)
        if len(misses) < len(strings):
            plan.inverse = np.array(inverse, dtype=np.int64)
            plan.unique = np.empty((len(index), table.width), dtype=np.float32)
            if from_table:
                us, rows_in_table = zip(*from_table, strict=True)
                plan.unique[list(us)] = table.vectors[list(rows_in_table)]
        return plan

    def _plan_strings(self, model: str, strings: list[str], width: int) -> _Plan:
        """`_plan` without a table: same window, else a window in flight, else a miss; keyed by
        the strings themselves (exact, no digest), resolved with C-level dict and set operations."""
        plan = _Plan(width)
        index: dict[str, int] = {}
        inverse = [index.setdefault(s, len(index)) for s in strings]
        taken: dict[str, tuple[DedupTicket, int]] = {}
        for ticket in self.in_flight:  # oldest first, as `_plan` looks them up
            rows = ticket.miss_rows[model]
            for s in index.keys() & rows.keys():
                taken.setdefault(s, (ticket, rows[s]))
        if taken:
            plan.from_flight = [(index[s], ticket, row) for s, (ticket, row) in taken.items()]
            plan.send = [s for s in index if s not in taken]
            plan.misses = [index[s] for s in plan.send]
        else:
            plan.send = list(index)
            plan.misses = list(range(len(index)))
        plan.miss_keys = plan.send  # submit() rebinds plan.send, the list stays
        if len(plan.misses) < len(strings):
            plan.inverse = np.array(inverse, dtype=np.int64)
            plan.unique = np.empty((len(index), width), dtype=np.float32)
        return plan

    def _collected(self, ticket: DedupTicket) -> None:
        """A window's answers arrived: its misses enter the table and it leaves the flight."""
        self.in_flight.remove(ticket)
        for model, plan in ticket.plans.items():
            if plan.miss_keys and ticket.missed is not None:
                self.tables[model].put_many(plan.miss_keys, ticket.missed[model])
            plan.miss_keys = []
        ticket.miss_rows = {}
        self.peak_table_bytes = max(self.peak_table_bytes,
                                    sum(t.nbytes for t in self.tables.values()))

    def info(self) -> dict[str, Any]:
        """For run.json: frames, strings sent per model, hits, hit rate, the table's bound."""
        models = {}
        for model in MODELS:
            sent = self.sent[model]
            models[model] = {"strings": self.frames, "sent": sent, "reused": self.frames - sent,
                             "hit_rate": round(1 - sent / self.frames, 4) if self.frames else 0.0,
                             "evicted": self.tables[model].evictions}
        total = 2 * self.frames
        sent = sum(self.sent.values())
        return {
            "enabled": self.enabled,
            "frames": self.frames,
            "models": models,
            "hit_rate": round(1 - sent / total, 4) if total else 0.0,
            "memory_bytes": self.memory_bytes if self.enabled else 0,
            "table_capacity": self.tables[DNA_MODEL].capacity,
            "peak_table_bytes": self.peak_table_bytes,
        }
