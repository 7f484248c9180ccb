"""Request validation shared by the Triton models and the in-process backend (no torch needed).

Accepted: printable ASCII without spaces (0x21-0x7E), non-empty, at most MAX_LENGTH[kind]
characters. Letters outside the model's vocabulary are still accepted (they become the unknown
token, as in the original tool); anything that could silently change tokenisation (whitespace,
control bytes, non-ASCII) is refused.

Maximum lengths (VirNucPro frames are <= 500 nt / 167 aa, so these only stop abuse):
- dnabert_s: 4,096 nt. ALiBi has no hard limit, but the additive attention bias is
  heads x tokens^2 floats, and a run of unknown letters (N) costs one token per letter: at
  4,097 tokens that is ~0.8 GB in fp32, at 10,000 it would be ~4.8 GB for one request.
- esm2: 1,022 aa, i.e. 1,024 tokens with <cls>/<eos>: the longest context ESM-2 was trained on.
  (The reference pools residues 1..min(1024, n); with this limit that is always all residues.)
"""

from __future__ import annotations

MAX_LENGTH: dict[str, int] = {"dnabert_s": 4_096, "esm2": 1_022}


def check_sequence(kind: str, seq: str | bytes) -> str | None:
    """Return why `seq` cannot be embedded by model `kind`, or None when it is fine."""
    if kind not in MAX_LENGTH:
        raise ValueError(f"unknown encoder kind {kind!r}; expected one of {sorted(MAX_LENGTH)}")
    if isinstance(seq, (bytes, bytearray)):
        try:
            seq = bytes(seq).decode("ascii")
        except UnicodeDecodeError:
            return "not ASCII text (undecodable bytes)"
    if not isinstance(seq, str):
        return f"expected a string, got {type(seq).__name__}"
    if not seq:
        return "empty sequence"
    if not seq.isascii():
        return "contains non-ASCII characters"
    if not seq.isprintable() or " " in seq:
        return "contains whitespace or control characters"
    limit = MAX_LENGTH[kind]
    if len(seq) > limit:
        return f"length {len(seq)} exceeds the {kind} maximum of {limit}"
    return None

