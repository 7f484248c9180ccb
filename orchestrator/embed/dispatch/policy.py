"""The knobs of the dispatch decisions, with the values the client runs with.

One home for every number the decisions use; a simulator passes other values to compare policies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

CHOICES = ("least_loaded", "two_choices")


@dataclass(frozen=True)
class Policy:
    """How `Dispatcher` chooses, backs off, detects frozen servers and hedges (seconds)."""

    # Which endpoint gets a request: "least_loaded" (most free slots; ties rotate) or
    # "two_choices" (two random up endpoints with free slots; the one with more free slots wins).
    choice: str = "least_loaded"
    # Slow start: an endpoint admitted after the run started (new, or back after an outage) takes
    # 1 request per model at first, its full capacity after slow_start_s (linear); 0: at once.
    slow_start_s: float = 0.0
    # Retry budget (a token bucket, as gRPC's retry throttling): every first send of a request adds
    # retry_budget_ratio tokens, the bucket starts with and holds at most retry_budget_min; a
    # re-send after "queue full" and a hedge cost one. Empty: no hedge, and a request shed by an
    # endpoint waits for that endpoint's backoff. 0: no budget (every re-send at once).
    retry_budget_ratio: float = 0.0
    retry_budget_min: float = 10.0
    # No endpoint up and none answered for this long: the run ends (exit 3).
    retry_deadline_s: float = 60.0
    # A request that fails this often while others succeed is the request's fault, not an outage.
    max_attempts: int = 20
    # Load shedding: after a "queue full" answer an endpoint gets no request of that model for a
    # jittered backoff (x uniform 0.5..1) that doubles per consecutive rejection, within these.
    backoff_min_s: float = 0.05
    backoff_max_s: float = 2.0
    # Frozen server: while it holds requests it is asked "live?" every liveness_interval_s (at once
    # again after a miss); liveness_failures consecutive misses within liveness_timeout_s mark it
    # down. A busy server still answers (the check waits for no model).
    liveness_interval_s: float = 1.0
    liveness_timeout_s: float = 2.0
    liveness_failures: int = 2
    # Stuck model: a request is overdue after max(hedge_floor_s, hedge_factor x p99) of this run's
    # latencies of that model (send to answer, queueing included), hedge_default_s before
    # hedge_min_samples answers; it is re-sent elsewhere only if its server returned nothing of
    # that model for as long (or it is hedge_alone_factor x overdue: one hung instance among
    # working ones). Checked every hedge_check_s; the last latency_samples answers count.
    hedge_floor_s: float = 10.0
    hedge_factor: float = 5.0
    hedge_default_s: float = 60.0
    hedge_min_samples: int = 4
    hedge_alone_factor: float = 3.0
    hedge_check_s: float = 0.5
    latency_samples: int = 512

    def __post_init__(self) -> None:
        if self.choice not in CHOICES:
            raise ValueError(f"choice {self.choice!r} is not one of {', '.join(CHOICES)}")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
