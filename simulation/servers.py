"""A simulated Triton server: per model a dynamic batcher in front of its instances.

What it models of Triton: strict priority levels (level 1 first), FIFO within a level; a level's
`max_queue_size` answered at once as "queue full"; the batcher launching a batch when an instance is
free and either `max_batch` rows wait or the oldest request has waited `queue_delay_ms`; whole
requests per batch (never split); without batching one request is one execution. Faults change
how it answers: killed (calls fail at once, probes fail), frozen (nothing answers, nothing fails),
a stuck model (its batches never finish), restarted with other weights (answers with an identity
the clients refuse).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import simpy

from orchestrator.embed.contract import DNA_MODEL, MODELS
from simulation.scenario import Server

# Service curve of one NVIDIA H200 (docs/performance.md, "GPU", 2026-12-04): tokens per second of
# busy time per model, and a fixed cost per executed batch (launch, Python backend hand-over).
H200_TOKENS_PER_S = {"esm2": 76_000.0, DNA_MODEL: 380_000.0}
H200_BATCH_OVERHEAD_S = 0.004
# DNABERT-S reads nucleotides (about 3 per amino acid, BPE tokens of ~5 bp): its tokens per frame
# relative to ESM-2's.
DNA_TOKENS_PER_PROTEIN_TOKEN = 0.6

OK, FAILED, BUSY = "ok", "failed", "busy"


@dataclass
class Call:
    """One request as a server sees it; `reply(status)` is called once, at the client."""

    request: Any
    model: str
    rows: int
    tokens: int
    level: int
    reply: Callable[[str], None]
    queued_at: float = 0.0
    answered: bool = False
    cancelled: bool = False


class SimServer:
    """One server of the scenario; `listed` says whether discovery lists it."""

    def __init__(self, env: simpy.Environment, spec: Server, levels: int, busy_log: Callable[
            [int, str, float, float], None] | None = None) -> None:
        self.env = env
        self.spec = spec
        self.state = "up"  # up, dead, frozen
        self.stuck: set[str] = set()
        self.weights = "v1"
        self.listed = True
        self.busy_s = dict.fromkeys(MODELS, 0.0)
        self.queue_full = 0
        self.executed_rows = dict.fromkeys(MODELS, 0)
        self.calls_by_weights: dict[str, int] = {}  # requests that reached each life of it
        self._busy_log = busy_log
        self.on_queue_full: Callable[[], None] | None = None
        self._queues = {m: [deque() for _ in range(levels)] for m in MODELS}
        self._free = dict.fromkeys(MODELS, spec.instances)
        self._wake = {m: env.event() for m in MODELS}
        self._running: dict[str, list[list[Call]]] = {m: [] for m in MODELS}
        self._held: list[tuple[Call, str]] = []  # answers a frozen server owes
        self._epoch = 0  # bumped by kill/restart: batches of an older life never answer
        for m in MODELS:
            env.process(self._batcher(m))

    # -- the client's side ------------------------------------------------------------------------
    def call(self, call: Call) -> None:
        """A request arrives (after the network delay the caller applied)."""
        self.calls_by_weights[self.weights] = self.calls_by_weights.get(self.weights, 0) + 1
        if self.state == "dead":
            self._answer(call, FAILED)
            return
        if self.state == "frozen":
            self._held.append((call, "arrive"))
            return
        queue = self._queues[call.model][call.level]
        if self.spec.max_queue and len(queue) >= self.spec.max_queue:
            self.queue_full += 1
            if self.on_queue_full is not None:
                self.on_queue_full()
            self._answer(call, BUSY)
            return
        call.queued_at = self.env.now
        queue.append(call)
        self._poke(call.model)

    def cancel(self, call: Call) -> None:
        """Triton drops a cancelled request still in its queue; a running one finishes."""
        call.cancelled = True

    def answers_probe(self) -> bool | None:
        """Liveness: True (live), False (refused: dead), None (no answer: frozen)."""
        return {"up": True, "dead": False}.get(self.state)

    # -- faults ------------------------------------------------------------------------------------
    def kill(self) -> None:
        self.state = "dead"
        self._epoch += 1
        for m in MODELS:
            for batch in self._running[m]:
                for c in batch:
                    self._answer(c, FAILED)
            self._running[m] = []
            self._free[m] = self.spec.instances
            for q in self._queues[m]:
                while q:
                    self._answer(q.popleft(), FAILED)
        for call, _ in self._held:
            self._answer(call, FAILED)
        self._held = []
        self.stuck = set()

    def freeze(self) -> None:
        if self.state == "up":
            self.state = "frozen"

    def thaw(self) -> None:
        if self.state != "frozen":
            return
        self.state = "up"
        held, self._held = self._held, []
        for call, what in held:
            if what == "arrive":
                self.call(call)
            else:
                self._answer(call, what)
        for m in MODELS:
            self._poke(m)

    def restart(self, weights: str = "v1") -> None:
        self.kill()
        self.state = "up"
        self.weights = weights

    def stick(self, model: str) -> None:
        self.stuck.add(model)

    def unstick(self) -> None:
        self.kill()  # a stuck model comes back by a restart of the server
        self.state = "up"

    # -- inside -------------------------------------------------------------------------------------
    def _answer(self, call: Call, status: str) -> None:
        if call.answered:
            return
        if self.state == "frozen" and status != FAILED:
            self._held.append((call, status))
            return
        call.answered = True
        call.reply(status)

    def _poke(self, model: str) -> None:
        if not self._wake[model].triggered:
            self._wake[model].succeed()

    def _waiting(self, model: str) -> tuple[int, float | None]:
        rows, oldest = 0, None
        for q in self._queues[model]:
            while q and q[0].cancelled:
                self._answer(q.popleft(), FAILED)
            for c in q:
                rows += c.rows
                if rows >= self.spec.max_batch:
                    break
            if q and (oldest is None or q[0].queued_at < oldest):
                oldest = q[0].queued_at
        return rows, oldest

    def _take_batch(self, model: str) -> list[Call]:
        batch: list[Call] = []
        rows = 0
        for q in self._queues[model]:
            while q:
                c = q[0]
                if c.cancelled:
                    q.popleft()
                    self._answer(c, FAILED)
                    continue
                if batch and (not self.spec.batching or rows + c.rows > self.spec.max_batch):
                    return batch
                batch.append(q.popleft())
                rows += c.rows
        return batch

    def _batcher(self, model: str):
        env = self.env
        delay = self.spec.queue_delay_ms / 1000.0
        while True:
            rows, oldest = self._waiting(model)
            if self.state != "up" or not self._free[model] or oldest is None:
                self._wake[model] = env.event()
                yield self._wake[model]
                continue
            if self.spec.batching and rows < self.spec.max_batch and env.now < oldest + delay:
                self._wake[model] = env.event()
                yield self._wake[model] | env.timeout(oldest + delay - env.now)
                continue
            batch = self._take_batch(model)
            if batch:
                self._free[model] -= 1
                env.process(self._execute(model, batch, self._epoch))

    def service_s(self, model: str, batch: list[Call]) -> float:
        """Time one execution of `batch` takes on this server."""
        if self.spec.request_ms is not None:
            return (self.spec.request_ms + self.spec.overhead_ms) / 1000.0
        tokens = sum(c.tokens for c in batch)
        if model == DNA_MODEL:
            tokens *= DNA_TOKENS_PER_PROTEIN_TOKEN
        return H200_BATCH_OVERHEAD_S + self.spec.overhead_ms / 1000.0 + tokens / H200_TOKENS_PER_S[model]

    def _execute(self, model: str, batch: list[Call], epoch: int):
        self._running[model].append(batch)
        start = self.env.now
        if model in self.stuck:
            return  # never finishes; a kill or restart answers its calls
        yield self.env.timeout(self.service_s(model, batch))
        if epoch != self._epoch:
            return
        self._running[model].remove(batch)
        self.busy_s[model] += self.env.now - start
        if self._busy_log is not None:
            self._busy_log(self.spec.index, model, start, self.env.now)
        self.executed_rows[model] += sum(c.rows for c in batch)
        self._free[model] += 1
        for c in batch:
            self._answer(c, OK)
        self._poke(model)
