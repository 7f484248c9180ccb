"""Errors raised by the encoders: bad weight files and bad sequences.

`encoders` is the server-side package (Triton model.py files, export, the in-process backend), so it
has its own base class and imports nothing from the `orchestrator` client package. Both CLIs
(`orchestrator`, `python -m export`) catch `EncoderError` next to their own errors and print it as
one line with `exit_code` (2: bad input or bad weights). Plain Python, no torch.
"""

from __future__ import annotations


class EncoderError(Exception):
    """Base class: a problem the user should see as one line; the CLIs exit with `exit_code`."""

    exit_code = 2


class WeightsError(EncoderError):
    """A weight folder or file that is missing, unreadable, or does not match the architecture."""


class SequenceError(EncoderError):
    """A sequence the encoder refuses (empty, a disallowed character, too long); names its index."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(f"sequence {index}: {message}")
        self.index = index
        self.reason = message
