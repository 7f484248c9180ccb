"""`Dispatcher`: every decision of a run's requests over many servers, with no I/O.

Events go in with the current time (`handle(now, event)`), actions come out; the driver performs
them (the gRPC client, a simulator, a replay). Randomness (backoff jitter) comes from the
`random.Random` it is given, so a seed and the events replay a run's decisions exactly.

What it decides: the endpoint with the most free slots gets each queued request (capacity per
model from the endpoint's own settings; ties rotate); a "queue full" answer backs that endpoint off
for that model, never failing the run; a failed call marks the endpoint down and re-sends its
outstanding requests at once; an endpoint holding requests that misses `liveness_failures`
liveness checks is frozen (down); a request overdue against this run's latencies while its server
returns nothing else is hedged to another endpoint (first answer wins, the copies are cancelled);
a down or newly listed endpoint is admitted once it answers with the pinned identity, else refused
for the rest of the run; an endpoint no longer listed gets no request and its outstanding ones
are re-sent (not counted as failed attempts); with no endpoint up for `retry_deadline_s` the run
fails (exit class "unavailable").
"""

from __future__ import annotations

import heapq
import itertools
import random
from bisect import bisect_left, insort
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from orchestrator.embed.contract import MODELS
from orchestrator.embed.dispatch.events import (
    BUSY,
    ERROR,
    FAILED,
    MALFORMED,
    REJECTED,
    UNAVAILABLE,
    Action,
    Cancel,
    CheckLive,
    Close,
    Connect,
    Deliver,
    Event,
    Fail,
    Finished,
    Identity,
    Listed,
    Liveness,
    Log,
    Marked,
    Reply,
    RunSetup,
    Send,
    Start,
    Submit,
    Tick,
    Unreachable,
)
from orchestrator.embed.dispatch.identity import ModelSettings, model_differences
from orchestrator.embed.dispatch.policy import Policy

UP, DOWN, REFUSED, GONE = "up", "down", "refused", "gone"
# choice "two_choices": random draws before it scans for the endpoints that can take a request
TWO_CHOICES_DRAWS = 8
# a slow-start step is due just after the instant the float arithmetic puts it at
RAMP_STEP_MARGIN_S = 1e-9


@dataclass
class EndpointState:
    """One endpoint as the decisions see it (`Dispatcher.endpoints[url]`); times are the
    driver's clock. `epoch` grows whenever its channel is replaced: older answers are stale."""

    url: str
    state: str = DOWN
    epoch: int = 0
    settings: dict[str, ModelSettings] = field(default_factory=dict)
    in_flight: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODELS, 0))
    backoff_until: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MODELS, 0.0))
    busy_streak: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODELS, 0))
    last_answer: dict[str, float] = field(default_factory=lambda: dict.fromkeys(MODELS, 0.0))
    liveness_failures: int = 0
    liveness_due: float = 0.0  # next liveness check (while up and holding requests)
    liveness_asked: float | None = None  # a check is out since then
    first_miss: float = 0.0
    down_since: float | None = None
    last_error: str = ""
    refused: str = ""
    requests: int = 0
    rows: int = 0
    failures: int = 0
    unavailable_seconds: float = 0.0
    rejections: int = 0  # "queue full" answers (load shedding): busy, not down
    hedged: int = 0  # requests past their deadline here, re-sent elsewhere
    frozen: int = 0  # times it held requests but answered no liveness check
    down: int = 0  # times it was taken out of rotation (failed call, frozen)
    # requests per model it may hold: max_in_flight, less while slow-starting since admitted_at
    capacity: dict[str, int] = field(default_factory=dict)
    admitted_at: float = 0.0

    def free_slots(self, model: str) -> int:
        return self.capacity.get(model, self.settings[model].max_in_flight) - self.in_flight[model]

    def info(self, now: float) -> dict[str, Any]:
        """Per-endpoint record for run.json; a current outage counts up to `now`."""
        unavailable = self.unavailable_seconds
        if self.down_since is not None:
            unavailable += now - self.down_since
        return {
            "url": self.url, "state": self.state, "requests": self.requests, "rows": self.rows,
            "failures": self.failures, "unavailable_seconds": round(unavailable, 3),
            "rejections": self.rejections, "hedged": self.hedged, "frozen": self.frozen,
            "down": self.down,
            "max_in_flight": {m: s.max_in_flight for m, s in self.settings.items()},
            "instances": {m: s.instances for m, s in self.settings.items()},
            # what it serves (for a refused endpoint: what it was refused for)
            "models": {m: s.identity() for m, s in self.settings.items()},
            **({"last_error": self.last_error} if self.last_error else {}),
            **({"refused": self.refused} if self.refused else {}),
        }


@dataclass
class RequestState:
    """One request: `copies` sends still outstanding (more than one once hedged), `stuck` of them
    overdue (hedged), `queued` while waiting, `done` once answered (later answers are ignored),
    `avoid`: endpoints where it is overdue. `attempts` counts failed sends (membership changes
    do not count)."""

    id: int
    window: int
    model: str
    rows: int
    attempts: int = 0
    copies: int = 0
    stuck: int = 0
    queued: bool = False
    done: bool = False
    avoid: set[str] = field(default_factory=set)
    sent: bool = False  # sent at least once (its first send paid into the retry budget)
    not_before: float = 0.0  # shed with the retry budget empty: waits for that backoff

    def __lt__(self, other: RequestState) -> bool:
        return self.id < other.id

    def orphaned(self) -> bool:
        """Unanswered, not queued, and no copy on its way but overdue ones: send it again."""
        return not self.done and not self.queued and self.copies == self.stuck


class Dispatcher:
    """The decisions of one client's run; see the module docstring. Inspect `endpoints`,
    `pending`, `latencies`, `stats` and `failure`; `wake_at()` says when time alone changes
    something."""

    def __init__(self, setup: RunSetup, policy: Policy | None = None,
                 rng: random.Random | None = None) -> None:
        self.setup = setup
        self.policy = policy or Policy()
        self.rng = rng or random.Random(0)
        self.endpoints: dict[str, EndpointState] = {}
        self.pending: dict[str, list[RequestState]] = {m: [] for m in MODELS}
        self.outstanding: dict[int, tuple[EndpointState, RequestState, float]] = {}
        self.overdue: set[int] = set()  # tokens already hedged
        self.latencies: dict[str, deque[float]] = {
            m: deque(maxlen=self.policy.latency_samples) for m in MODELS}
        self.windows: dict[int, int] = {}  # window -> requests not yet delivered
        self.stats = {m: {"requests": 0, "retries": 0, "seconds": 0.0, "frames": 0,
                          "rejections": 0, "hedged": 0} for m in MODELS}
        self.failure: Fail | None = None
        self.now = 0.0  # the time of the last event
        self.outage_since: float | None = None
        self._next_hedge_check = 0.0
        self._next_liveness = float("inf")  # the earliest liveness_due of an up endpoint
        # (due, index) of endpoints' liveness checks and, per model, (until, index) of their
        # backoffs: heaps whose stale entries are dropped when they reach the top, so no event
        # scans all endpoints.
        self._liveness_heap: list[tuple[float, int]] = []
        self._backoff_heap: dict[str, list[tuple[float, int]]] = {m: [] for m in MODELS}
        # Least-loaded choice in O(log n): per model, free slots -> indices (order of arrival)
        # of the up endpoints with that many free slots.
        self._order: list[EndpointState] = []
        self._index: dict[str, int] = {}
        self._free: dict[str, dict[int, list[int]]] = {m: {} for m in MODELS}
        self._n_up = 0
        self._ramping: set[int] = set()  # indices of slow-starting endpoints
        self._releases: list[float] = []  # heap of queued requests' not_before times
        self.retry_tokens = self.policy.retry_budget_min
        self._tokens = itertools.count()
        self._rotation = itertools.count()
        self._out: list[Action] = []
        self._handlers: dict[type, Any] = {
            Start: self._start, Submit: self._submit, Reply: self._reply,
            Liveness: self._liveness, Identity: self._identity, Unreachable: self._unreachable,
            Listed: self._listed, Tick: lambda now, event: None}

    # -- the one entry point -----------------------------------------------------------------
    def handle(self, now: float, event: Event) -> list[Action]:
        """Apply `event` at time `now`, then take every decision that is due; the actions, in
        order. After a Fail nothing more happens."""
        if self.failure is not None:
            return []
        self._out = out = []
        self.now = now
        try:
            self._handlers[type(event)](now, event)
            self._check_deadline(now)
            self._hedge_overdue(now)
            self._ramp(now)
            self._send_pending(now)
            self._check_liveness(now)
        except _RunFailed:
            pass
        return out

    def wake_at(self) -> float | None:
        """The earliest time at which a Tick may change something (None: only events will)."""
        times = [t for m in MODELS if self.pending[m]
                 for t in [self._next_backoff_end(m)] if t is not None]
        if any(self.pending.values()):
            times.append(self._next_ramp_step())
            while self._releases and self._releases[0] <= self.now:
                heapq.heappop(self._releases)
            times.extend(self._releases[:1])
        if self.outstanding:  # the next liveness check and the next hedge check
            times.append(self._next_liveness)
            times.append(max(self._next_hedge_check, self.now + self.policy.hedge_check_s))
        if self.outage_since is not None and not self._n_up:
            times.append(self.outage_since + self.policy.retry_deadline_s)
        return min((t for t in times if t is not None and t > self.now), default=None)

    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _fail(self, exit_class: str, message: str) -> None:
        self.failure = Fail(exit_class, message)
        self._emit(self.failure)
        raise _RunFailed

    def _next_backoff_end(self, model: str) -> float | None:
        """The earliest future end of an up endpoint's backoff for `model`."""
        heap = self._backoff_heap[model]
        while heap:
            until, index = heap[0]
            ep = self._order[index]
            if until > self.now and ep.state == UP and ep.backoff_until[model] == until:
                return until
            heapq.heappop(heap)  # passed, superseded, or out of rotation (re-pushed on return)
        return None

    def _set_liveness_due(self, ep: EndpointState, due: float) -> None:
        ep.liveness_due = due
        heapq.heappush(self._liveness_heap, (due, self._index[ep.url]))
        self._next_liveness = min(self._next_liveness, due)

    def _up_avoided(self, job: RequestState, but: EndpointState | None = None) -> int:
        """How many up endpoints (other than `but`) `job` avoids."""
        return sum(1 for url in job.avoid
                   if self.endpoints[url].state == UP and self.endpoints[url] is not but)

    def _new(self, url: str, **fields: Any) -> EndpointState:
        ep = self.endpoints[url] = EndpointState(url, **fields)
        self._index[url] = len(self._order)
        self._order.append(ep)
        return ep

    def _set_up(self, ep: EndpointState, up: bool) -> None:
        """Into rotation (its free slots join the choice) or out of it."""
        index = self._index[ep.url]
        for model, buckets in self._free.items():
            if up:
                insort(buckets.setdefault(ep.free_slots(model), []), index)
                if ep.backoff_until[model] > self.now:
                    heapq.heappush(self._backoff_heap[model], (ep.backoff_until[model], index))
            else:
                lst = buckets[ep.free_slots(model)]
                del lst[bisect_left(lst, index)]
        self._n_up += 1 if up else -1

    def _add_in_flight(self, ep: EndpointState, model: str, delta: int) -> None:
        if ep.state == UP:
            buckets, index = self._free[model], self._index[ep.url]
            lst = buckets[ep.free_slots(model)]
            del lst[bisect_left(lst, index)]
            ep.in_flight[model] += delta
            insort(buckets.setdefault(ep.free_slots(model), []), index)
        else:
            ep.in_flight[model] += delta

    # -- start and work --------------------------------------------------------------------------
    def _start(self, now: float, event: Start) -> None:
        for item in event.endpoints:
            ep = self._new(item.url, last_error=item.error)
            if not item.listed:
                ep.state = GONE
            elif item.settings is not None:
                self._check_identity(now, ep, item.settings, again=False)
        usable = self._n_up
        for ep in self.endpoints.values():
            if ep.state == DOWN:
                ep.down_since = now
                self._emit(Log("warning", f"warning: Triton at {ep.url} is unavailable at start "
                               f"({ep.last_error}); running on {usable} of {len(self.endpoints)} "
                               "endpoints, it joins when it answers"))
                self._emit(Connect(ep.url, ep.epoch))

    def _submit(self, now: float, event: Submit) -> None:
        if not event.requests:
            self._emit(Finished(event.window))
            return
        self.windows[event.window] = len(event.requests)
        for r in event.requests:
            heapq.heappush(self.pending[r.model],
                           RequestState(r.id, event.window, r.model, r.rows, queued=True))

    def _send_pending(self, now: float) -> None:
        """Each queued request to the endpoint with the most free slots; ties rotate, so equal
        endpoints share the work evenly even when there is more capacity than work."""
        if not self._n_up:
            return
        n = len(self._order)
        for model in MODELS:
            heap = self.pending[model]
            waiting = []
            while heap:
                job = heap[0]
                if job.done:  # a hedge whose original answered meanwhile
                    heapq.heappop(heap).queued = False
                    continue
                if job.not_before > now:  # shed with no retry budget: waits for the backoff
                    waiting.append(heapq.heappop(heap))
                    continue
                if job.avoid and self._up_avoided(job) == self._n_up:
                    job.avoid.clear()  # nowhere else to go any more
                ep = self._choose(now, model, job, next(self._rotation) % n)
                if ep is None:
                    break
                heapq.heappop(heap).queued = False
                self._send(now, ep, job)
            for job in waiting:
                heapq.heappush(heap, job)

    def _choose(self, now: float, model: str, job: RequestState, start: int
                ) -> EndpointState | None:
        """The up endpoint with the most free slots of `model`, not backing off and not one where
        `job` is overdue; among equals the first from index `start` on (cyclically). With
        choice "two_choices": the better of two such endpoints drawn at random."""
        if self.policy.choice == "two_choices":
            return self._two_choices(now, model, job)
        buckets = self._free[model]
        for free in sorted((f for f, lst in buckets.items() if f > 0 and lst), reverse=True):
            lst = buckets[free]
            k = bisect_left(lst, start)
            for i in itertools.chain(range(k, len(lst)), range(k)):
                ep = self._order[lst[i]]
                if ep.backoff_until[model] <= now and ep.url not in job.avoid:
                    return ep
        return None

    def _two_choices(self, now: float, model: str, job: RequestState) -> EndpointState | None:
        """Two distinct random endpoints that could take `job` now (up, free slots, not backing
        off, not avoided); the one with more free slots, the first drawn on a tie. A few draws
        over the free-slot buckets, a scan only when most endpoints cannot take it."""
        groups = [lst for free, lst in self._free[model].items() if free > 0 and lst]
        total = sum(len(lst) for lst in groups)

        def can_take(ep: EndpointState) -> bool:
            return ep.backoff_until[model] <= now and ep.url not in job.avoid

        drawn: list[EndpointState] = []
        for _ in range(TWO_CHOICES_DRAWS):
            if not total or len(drawn) == 2:
                break
            k = self.rng.randrange(total)
            for lst in groups:
                if k < len(lst):
                    ep = self._order[lst[k]]
                    break
                k -= len(lst)
            if can_take(ep) and ep not in drawn:
                drawn.append(ep)
        if len(drawn) < 2:
            able = [self._order[i] for lst in groups for i in lst if can_take(self._order[i])]
            if len(able) <= 2:
                drawn = able
            else:
                drawn = self.rng.sample(able, 2)
        if not drawn:
            return None
        return max(drawn, key=lambda e: e.free_slots(model))

    def _send(self, now: float, ep: EndpointState, job: RequestState) -> None:
        if not job.sent:
            job.sent = True
            p = self.policy
            self.retry_tokens = min(p.retry_budget_min, self.retry_tokens + p.retry_budget_ratio)
        token = next(self._tokens)
        self._add_in_flight(ep, job.model, 1)
        job.copies += 1
        self.outstanding[token] = (ep, job, now)
        self._emit(Send(token, job.id, ep.url, job.model, self.setup.versions[job.model],
                        self.setup.priority))

    def _requeue(self, job: RequestState, failed: bool) -> None:
        """Back to the queue (in submission order); `failed` counts it as a failed attempt."""
        job.attempts += failed
        job.queued = True
        self.stats[job.model]["retries"] += 1
        heapq.heappush(self.pending[job.model], job)

    # -- answers ---------------------------------------------------------------------------------
    def _reply(self, now: float, event: Reply) -> None:
        entry = self.outstanding.pop(event.token, None)
        if entry is None:
            return  # its endpoint was marked down or left, and the request already re-sent
        ep, job, sent = entry
        self._forget(event.token, ep, job)
        if event.outcome in (BUSY, FAILED, REJECTED):
            self._failed(now, ep, job, event)
            return
        ep.last_answer[job.model] = now
        ep.busy_streak[job.model] = 0
        if job.done:
            return  # the other copy of a hedged request answered first
        if event.outcome == MALFORMED:
            self._fail(ERROR, event.detail)
        job.done = True
        if job.avoid:
            self._cancel_copies(job)
        self.latencies[job.model].append(now - sent)
        self._emit(Deliver(event.token, job.id))
        self.windows[job.window] -= 1
        if self.windows[job.window] == 0:
            del self.windows[job.window]
            self._emit(Finished(job.window))
        self.outage_since = None
        ep.requests += 1
        ep.rows += job.rows
        stats = self.stats[job.model]
        stats["requests"] += 1
        stats["frames"] += job.rows
        stats["seconds"] += now - sent

    def _cancel_copies(self, job: RequestState) -> None:
        """The first answer of a hedged request won: cancel its copies still waiting on healthy
        endpoints (their slots free up). Copies on the endpoint where it was overdue stay counted
        there until they return, so a stuck server is not handed more work meanwhile."""
        for token, (_, other, _) in self.outstanding.items():
            if other is job and token not in self.overdue:
                self._emit(Cancel(token))

    def _failed(self, now: float, ep: EndpointState, job: RequestState, event: Reply) -> None:
        if job.done:
            return  # a copy of an answered request: cancelled, or lost with its server
        if event.outcome == REJECTED:
            self._fail(ERROR, f"model {job.model} at {ep.url} rejected a request: {event.detail}")
        if event.outcome == BUSY:
            self._busy(now, ep, job, event.detail)
            return
        ep.failures += 1
        if job.orphaned():  # else a hedged copy is still on its way
            self._requeue(job, failed=True)
        if job.attempts > self.policy.max_attempts:
            self._fail(UNAVAILABLE, f"a request to {job.model} failed {job.attempts} times "
                                    f"(last at {ep.url}: {event.detail})")
        self._mark_down(now, ep, f"model {job.model}: {event.detail}")

    def _busy(self, now: float, ep: EndpointState, job: RequestState, detail: str) -> None:
        """Load shedding: the endpoint stays up, takes no request of this model for a jittered
        backoff (doubling per consecutive rejection), and the request goes back to the queue;
        never counted as a failed attempt, however long the shedding lasts."""
        p = self.policy
        ep.rejections += 1
        self.stats[job.model]["rejections"] += 1
        streak = ep.busy_streak[job.model] = ep.busy_streak[job.model] + 1
        delay = min(p.backoff_max_s, p.backoff_min_s * 2 ** min(streak - 1, 16))
        until = now + delay * self.rng.uniform(0.5, 1.0)
        if until > ep.backoff_until[job.model]:
            ep.backoff_until[job.model] = until
            heapq.heappush(self._backoff_heap[job.model], (until, self._index[ep.url]))
        if job.orphaned():
            if not self._spend_retry_token():
                job.not_before = ep.backoff_until[job.model]
                heapq.heappush(self._releases, job.not_before)
            job.queued = True
            heapq.heappush(self.pending[job.model], job)
        if ep.rejections == 1:
            self._emit(Log("warning", f"warning: Triton at {ep.url} sheds load ({detail}); "
                           "backing off and retrying there and elsewhere (rejections are counted "
                           "in run.json)"))

    # -- endpoints out of rotation -------------------------------------------------------------
    def _mark_down(self, now: float, ep: EndpointState, reason: str, failed: int = 1) -> None:
        """Take `ep` out of rotation: its outstanding requests go back to the queue now (the
        other endpoints take them), its channel is replaced and probed for its return. Only up
        endpoints hold requests or are asked "live?", so `ep` is up."""
        self._set_up(ep, False)
        ep.state = DOWN
        ep.down_since = now
        ep.last_error = reason
        ep.down += 1
        moved = self._take_back(now, ep, failed=True)
        ep.epoch += 1
        self._emit(Marked(ep.url, DOWN, reason))
        self._emit(Log("warning", f"Triton at {ep.url} failed ({reason}); {moved + failed} "
                       f"outstanding requests re-sent to {self._n_up} other endpoint(s); "
                       f"retrying it for up to {self.policy.retry_deadline_s:.0f} s"))
        self._emit(Connect(ep.url, ep.epoch))

    def _take_back(self, now: float, ep: EndpointState, failed: bool) -> int:
        """`ep`'s outstanding requests back to the queue (for the other endpoints); the outage
        clock starts (the next answer from anywhere stops it). Returns how many."""
        moved = [t for t, (e, _, _) in self.outstanding.items() if e is ep]
        for token in moved:
            job = self.outstanding.pop(token)[1]
            self._forget(token, ep, job)
            if job.orphaned():
                self._requeue(job, failed)
        if self.outage_since is None:
            self.outage_since = now
        return len(moved)

    def _forget(self, token: int, ep: EndpointState, job: RequestState) -> None:
        """`token` (a copy of `job` on `ep`) is no longer outstanding."""
        self._add_in_flight(ep, job.model, -1)
        job.copies -= 1
        if token in self.overdue:
            self.overdue.discard(token)
            job.stuck -= 1

    def _listed(self, now: float, event: Listed) -> None:
        """New addresses are probed and admitted after the identity check; addresses that are
        gone get no new request, their outstanding ones are re-sent elsewhere. A refused
        endpoint stays refused."""
        listed = set(event.addresses)
        for url in event.addresses:
            ep = self.endpoints.get(url)
            if ep is None:
                ep = self._new(url)
            elif ep.state != GONE:
                continue
            ep.state = DOWN
            ep.down_since = now
            ep.epoch += 1
            self._emit(Marked(url, DOWN, f"listed by {self.setup.sources}"))
            self._emit(Log("info", f"Triton at {url} listed by {self.setup.sources}; admitted "
                           "once it answers and serves this run's models"))
            self._emit(Connect(url, ep.epoch))
        for ep in self.endpoints.values():
            if ep.url in listed or ep.state in (GONE, REFUSED):
                continue
            was_up = ep.state == UP
            if was_up:
                self._set_up(ep, False)
            ep.state = GONE
            ep.epoch += 1
            if ep.down_since is not None:
                ep.unavailable_seconds += now - ep.down_since
                ep.down_since = None
            # leaving the list is not the requests' fault: no failed attempt
            moved = self._take_back(now, ep, failed=False) if was_up else 0
            self._emit(Marked(ep.url, GONE, f"no longer listed by {self.setup.sources}"))
            self._emit(Close(ep.url))
            self._emit(Log("warning", f"Triton at {ep.url} is no longer listed by "
                           f"{self.setup.sources}; {moved} outstanding requests re-sent to "
                           f"{self._n_up} other endpoint(s)"))

    def _unreachable(self, now: float, event: Unreachable) -> None:
        ep = self.endpoints.get(event.url)
        if ep is not None and ep.epoch == event.epoch and ep.state == DOWN:
            ep.last_error = event.error

    def _identity(self, now: float, event: Identity) -> None:
        ep = self.endpoints.get(event.url)
        if ep is None or ep.epoch != event.epoch or ep.state != DOWN:
            return  # stale: replaced, refused or gone meanwhile
        self._check_identity(now, ep, event.settings, again=True)

    def _check_identity(self, now: float, ep: EndpointState, settings: dict[str, ModelSettings],
                        again: bool) -> None:
        """Admit `ep` if it serves the pinned models with room for this run's requests, else
        refuse it for the rest of the run."""
        batch = self.setup.batch_size
        diffs = model_differences(self.setup.reference, settings)
        diffs += [f"{m} max_batch_size {settings[m].max_batch_size} is below this run's "
                  f"requests of {batch[m]}" for m in MODELS
                  if settings[m].max_batch_size < batch[m]]
        ep.settings = settings
        if ep.down_since is not None:
            ep.unavailable_seconds += now - ep.down_since
            ep.down_since = None
        if diffs:
            ep.state = REFUSED
            ep.refused = ep.last_error = "; ".join(diffs)
            self._emit(Marked(ep.url, REFUSED, ep.refused))
            self._emit(Close(ep.url))
            self._emit(Log("warning", f"warning: Triton at {ep.url} refused for the rest of this "
                           "run: it serves other models than the run pinned "
                           f"({ep.refused}); no request of this run goes there"))
            return
        ep.state = UP
        ep.admitted_at = now
        ep.capacity = {m: s.max_in_flight for m, s in settings.items()}
        if again and self.policy.slow_start_s > 0:
            ep.capacity = dict.fromkeys(settings, 1)
            self._ramping.add(self._index[ep.url])
        self._set_up(ep, True)
        ep.liveness_failures = 0
        ep.liveness_asked = None
        self._set_liveness_due(ep, now + self.policy.liveness_interval_s)
        if again:
            self._emit(Marked(ep.url, UP, "answers again"))
            self._emit(Log("info", f"Triton at {ep.url} answers again; re-admitted"))

    def _spend_retry_token(self) -> bool:
        """Take one token for a re-send or a hedge; False: the budget is spent."""
        if not self.policy.retry_budget_ratio:
            return True
        if self.retry_tokens < 1:
            return False
        self.retry_tokens -= 1
        return True

    def _ramp_capacity(self, ep: EndpointState, model: str, now: float) -> int:
        """Slow start: 1 request at admission, linearly up to max_in_flight after slow_start_s."""
        full = ep.settings[model].max_in_flight
        elapsed = now - ep.admitted_at
        if elapsed >= self.policy.slow_start_s or full <= 1:
            return full
        return min(full, 1 + int((full - 1) * elapsed / self.policy.slow_start_s))

    def _ramp(self, now: float) -> None:
        """Raise the slow-starting endpoints' capacities to what their time since admission
        allows (their free slots move between the choice's buckets)."""
        for index in sorted(self._ramping):
            ep = self._order[index]
            if ep.state != UP:
                self._ramping.discard(index)
                continue
            capacity = {m: self._ramp_capacity(ep, m, now) for m in ep.capacity}
            if capacity != ep.capacity:
                self._set_up(ep, False)
                ep.capacity = capacity
                self._set_up(ep, True)
            if all(c == ep.settings[m].max_in_flight for m, c in capacity.items()):
                self._ramping.discard(index)

    def _next_ramp_step(self) -> float | None:
        """When a slow-starting endpoint's capacity next grows."""
        steps = [ep.admitted_at + ep.capacity[m] * self.policy.slow_start_s
                 / (ep.settings[m].max_in_flight - 1) + RAMP_STEP_MARGIN_S
                 for ep in map(self._order.__getitem__, self._ramping) if ep.state == UP
                 for m in ep.capacity
                 if ep.capacity[m] < ep.settings[m].max_in_flight]
        return min(steps, default=None)

    # -- frozen servers and stuck models ---------------------------------------------------------
    def _check_liveness(self, now: float) -> None:
        """While an up endpoint holds requests, ask "live?" every liveness_interval_s; a frozen
        process (SIGSTOP, a hung node) answers nothing, a busy one answers at once."""
        if now < self._next_liveness:
            return
        heap = self._liveness_heap
        due: set[int] = set()
        while heap and heap[0][0] <= now:
            when, index = heapq.heappop(heap)
            if self._due(self._order[index], when):
                due.add(index)
        self._next_liveness = float("inf")
        for index in sorted(due):  # in order of arrival, as the actions always were
            ep = self._order[index]
            if not any(ep.in_flight.values()):
                ep.liveness_failures = 0
                self._set_liveness_due(ep, now + self.policy.liveness_interval_s)
            else:
                ep.liveness_asked = now
                self._emit(CheckLive(ep.url, ep.epoch, self.policy.liveness_timeout_s))
        while heap and not self._due(self._order[heap[0][1]], heap[0][0]):
            heapq.heappop(heap)
        if heap:
            self._next_liveness = min(self._next_liveness, heap[0][0])

    @staticmethod
    def _due(ep: EndpointState, when: float) -> bool:
        """A liveness entry is current: `ep` is up, not being asked, and due at `when`."""
        return ep.state == UP and ep.liveness_asked is None and ep.liveness_due == when

    def _liveness(self, now: float, event: Liveness) -> None:
        ep = self.endpoints.get(event.url)
        if ep is None or ep.epoch != event.epoch or ep.state != UP or ep.liveness_asked is None:
            return
        asked, ep.liveness_asked = ep.liveness_asked, None
        if event.live:
            ep.liveness_failures = 0
            self._set_liveness_due(ep, now + self.policy.liveness_interval_s)
            return
        if ep.liveness_failures == 0:
            ep.first_miss = asked
        ep.liveness_failures += 1
        self._set_liveness_due(ep, now)  # ask again at once
        if ep.liveness_failures < self.policy.liveness_failures:
            return
        ep.frozen += 1
        held = sum(ep.in_flight.values())
        self._mark_down(now, ep, f"frozen: holds {held} requests but answered no liveness check "
                        f"for {now - ep.first_miss:.1f} s", failed=0)
        ep.down_since = ep.first_miss  # unusable since the first unanswered check

    def deadline(self, model: str) -> float:
        """Seconds after which a request of `model` is overdue, from this run's latencies."""
        p = self.policy
        samples = self.latencies[model]
        if len(samples) < p.hedge_min_samples:
            return p.hedge_default_s
        return max(p.hedge_floor_s, p.hedge_factor * percentile(samples, 99))

    def _hedge_overdue(self, now: float) -> None:
        """Re-send overdue requests to another up endpoint (first answer wins). The original
        stays outstanding on its endpoint, which therefore gets no new work while stuck."""
        if now < self._next_hedge_check or not self.outstanding:
            return
        p = self.policy
        self._next_hedge_check = now + p.hedge_check_s
        if self._n_up < 2:
            return
        deadlines = {m: self.deadline(m) for m in MODELS}
        soonest = min(deadlines.values())
        for token, (ep, job, sent) in self.outstanding.items():
            deadline = deadlines[job.model]
            age = now - sent
            if age < soonest:
                break  # sent in time order: every later copy is younger still
            if (token in self.overdue or job.done or age < deadline
                    or (now - ep.last_answer[job.model] < deadline
                        and age < p.hedge_alone_factor * deadline)):
                continue
            if self._n_up - (ep.state == UP) - self._up_avoided(job, but=ep) <= 0:
                continue
            if not self._spend_retry_token():
                continue  # no budget left for a copy: it waits for its own answer
            self.overdue.add(token)
            job.stuck += 1
            job.avoid.add(ep.url)
            ep.hedged += 1
            self.stats[job.model]["hedged"] += 1
            self._emit(Log("warning", f"warning: a {job.model} request to {ep.url} has had no "
                           f"answer for {age:.1f} s (deadline {deadline:.1f} s from this run's "
                           "latencies) while that server returned nothing else; re-sent to "
                           "another endpoint (hedged)"))
            # its only copy on its way was this one (a queued request has none), so it is not
            # queued yet
            job.queued = True
            heapq.heappush(self.pending[job.model], job)

    def _check_deadline(self, now: float) -> None:
        if self.outage_since is None or self._n_up:
            return
        if now - self.outage_since > self.policy.retry_deadline_s:
            errors = "; ".join(f"{e.url}: {e.last_error}" for e in self.endpoints.values())
            self._fail(UNAVAILABLE, f"no Triton endpoint answered for "
                       f"{self.policy.retry_deadline_s:.0f} s ({errors}); finished windows are "
                       "checkpointed, rerun the same command to resume once a server is back")


class _RunFailed(Exception):
    """Unwinds `handle` after a Fail action."""


def percentile(samples: Any, q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
