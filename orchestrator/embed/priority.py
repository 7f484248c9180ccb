"""Request priorities on shared servers: the names users give and Triton's levels.

Every shipped config declares `priority_levels: 3` and `default_priority_level: 2`, so a client
that sends no priority is normal. Interactive and small jobs go high, bulk re-analysis low; a
priority orders the servers' queues and never pre-empts a batch already running. Kept free of
numpy and gRPC imports: the CLI reads the names from here at start-up.
"""

from __future__ import annotations

import os

from orchestrator.errors import InputError

PRIORITY_ENV = "VIRNUCPRO_PRIORITY"
PRIORITIES = {"high": 1, "normal": 2, "low": 3}  # Triton: level 1 is served first
DEFAULT_PRIORITY = "normal"


def resolve_priority(value: str | None) -> str:
    """--priority, else $VIRNUCPRO_PRIORITY, else normal; anything else is an InputError (exit 2)."""
    source = "--priority"
    if value is None:
        value = os.environ.get(PRIORITY_ENV) or DEFAULT_PRIORITY
        source = PRIORITY_ENV
    if value not in PRIORITIES:
        raise InputError(f"{source} {value!r} is not one of {', '.join(PRIORITIES)}")
    return value
