"""Errors raised by the encoders: bad weight files and bad sequences (both exit 2 in the CLI)."""

from __future__ import annotations

from orchestrator.errors import InputError


class WeightsError(InputError):
    """A weight folder or file that is missing, unreadable, or does not match the architecture."""


class SequenceError(InputError):
    """A sequence the encoder refuses (empty, non-ASCII, too long); names the offending index."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"sequence {index}: {message}")
        self.index = index
        self.reason = message
