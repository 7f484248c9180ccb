"""Scripting a `Dispatcher` in tests: endpoint settings, a started core, and action filters.

No server and no clock: each test chooses the times and the seed.
"""

from __future__ import annotations

import random
from typing import Any

from orchestrator.embed.contract import MODELS
from orchestrator.embed.dispatch import (
    Dispatcher,
    ModelSettings,
    Policy,
    Request,
    RunSetup,
    Start,
    StartEndpoint,
    Submit,
)

DNA, PROTEIN = MODELS
SOURCES = "dns:///cluster:8001"


def settings(capacity: int = 2, max_batch: int = 8, weights: str = "w" * 64,
             version: str = "1") -> dict[str, ModelSettings]:
    """Both models as one endpoint serves them; `capacity` requests in flight per model."""
    return {m: ModelSettings(m, version, 4, max_batch, max(1, capacity // 2), capacity, weights,
                             versions=(version,)) for m in MODELS}


def started(capacities: dict[str, int | None], policy: Policy | None = None, seed: int = 0,
            now: float = 0.0) -> tuple[Dispatcher, list[Any]]:
    """A core started with these endpoints (None: down at start) and Start's actions."""
    setup = RunSetup(settings(), {m: "1" for m in MODELS}, {m: 8 for m in MODELS}, 2, SOURCES)
    core = Dispatcher(setup, policy or Policy(), random.Random(seed))
    endpoints = tuple(StartEndpoint(url, None if cap is None else settings(cap), "" if cap
                                    else "no answer") for url, cap in capacities.items())
    return core, core.handle(now, Start(endpoints))


class Windows:
    """Submits windows with increasing request ids, as the driver does."""

    def __init__(self) -> None:
        self.next_id = 0
        self.next_window = 0

    def submit(self, core: Dispatcher, now: float, models: list[str]) -> list[Any]:
        requests = []
        for model in models:
            requests.append(Request(self.next_id, model, 3))
            self.next_id += 1
        self.next_window += 1
        return core.handle(now, Submit(self.next_window - 1, tuple(requests)))


def of(actions: list[Any], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]
