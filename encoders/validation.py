"""Request validation shared by the Triton models and the in-process backend (plain Python, no torch).

A sequence is accepted when it is a non-empty str (or ASCII bytes) of at most MAX_LENGTH[kind]
characters, every one of them in ALLOWED[kind]:

- dnabert_s: letters `A-Z` and `a-z`, plus the gap and stop symbols `-`, `.` and `*` found in
  sequence files (ALLOWED_DNA). N, U and the IUPAC codes are letters, so they pass and are
  tokenised as in the original tool (upper-cased, then BPE; what is not in the vocabulary becomes
  [UNK]); `-`, `.` and `*` are kept because the original tool embeds them too (its tokenizer
  handles them exactly as ours does), so gapped input gets the original's answer. Everything else is
  refused: digits, `[`, `]`, `#`, `<`, `>`, other punctuation, whitespace, control bytes,
  non-ASCII. The DNABERT-S tokenizer would read the text `[PAD]`, `[CLS]`, `[SEP]`, `[MASK]` or
  `[UNK]` as that special token (and `[PAD]` was then masked out as padding); digits mean a
  GenBank-style numbered sequence, not DNA.
- esm2: letters `A-Z` and `a-z`, plus fair-esm's gap tokens `.` and `-` (ALLOWED_PROTEIN).
  Everything else is refused: `*`, digits, `<`, `>`, `#`, `[`, whitespace, control bytes,
  non-ASCII. Each accepted character is one token: the 25 upper-case letters of fair-esm's
  vocabulary (all but `J`: the 20 standard amino acids plus X B U Z O) and `.` `-` map to their
  residue tokens; `J` and lower-case letters map to `<unk>` (one token each, neighbours unchanged).
  What the original tool did instead: `units.extract_esm` tokenised with fair-esm's
  `BatchConverter` (`alphabet.get_batch_converter()`), i.e.
  `Alphabet.encode` = `[tok_to_idx[tok] for tok in tokenize(text)]` (fair-esm 2.0.0,
  esm/data.py). That raises KeyError on any character outside the vocabulary (lower case, `J`,
  `*`, digits, ...: the run crashes, nothing becomes `<unk>`), reads the text `<mask>`, `<pad>`,
  `<cls>`, `<eos>` or `<unk>` as that special token, and drops whitespace. Here the characters
  that could form a special token or change the token count are refused with a SequenceError
  naming the character and its position (over Triton: an INVALID_ARG error for that request
  alone), while `J` and lower case give `<unk>` instead of a crash, so a client's lower-case
  protein is embedded rather than refused. VirNucPro's own proteins never reach this case: the
  orchestrator translates with the standard code, skips any codon that is not ACGT (no `X`) and
  keeps only stop-free frames, so its proteins hold only the 20 standard upper-case letters, all
  in fair-esm's vocabulary.

The FASTA reader accepts any printable ASCII, and the orchestrator sends a kept frame's nucleotide
slice of the upper-cased input as it is; so it refuses a record holding a character outside
ALLOWED_DNA up front (`first_disallowed("dnabert_s", record.seq)`), naming file, line and position,
instead of letting the server refuse one request mid-run.

Maximum lengths (VirNucPro frames are <= 500 nt / 166 aa, so these only stop abuse):
- dnabert_s: 4,096 nt. ALiBi has no hard limit, but the additive attention bias is
  heads x tokens^2 floats, and a run of unknown letters (N) costs one token per letter: at
  4,097 tokens that is ~0.8 GB in fp32, at 10,000 it would be ~4.8 GB for one request.
- esm2: 1,022 aa, i.e. 1,024 tokens with <cls>/<eos>: the longest context ESM-2 was trained on.
  A longer protein is refused. The original tool would have embedded it: its `units.extract_esm`
  builds `alphabet.get_batch_converter()` without truncation_seq_length, runs all n + 2 tokens
  through the model (positions beyond the trained context) and averages residues 1..min(1024, n)
  only, so its result would differ from any truncation we could choose; refusing is the honest
  answer. VirNucPro frames never exceed 166 aa.

Positions in messages are 1-based; `first_disallowed` returns a 0-based index.
"""

from __future__ import annotations

import re
import string

MAX_LENGTH: dict[str, int] = {"dnabert_s": 4_096, "esm2": 1_022}

ALLOWED_DNA = string.ascii_letters + "-.*"  # A-Z a-z, gap and stop symbols
# fair-esm 2.0.0 `proteinseq_toks` are L A G V S E R T I D P K Q N F Y M H W C X B U Z O . -;
# J and lower case are accepted too and become <unk> (see above)
ALLOWED_PROTEIN = string.ascii_letters + ".-"
ALLOWED: dict[str, str] = {"dnabert_s": ALLOWED_DNA, "esm2": ALLOWED_PROTEIN}
ALLOWED_TEXT: dict[str, str] = {
    "dnabert_s": "letters A-Z and a-z, '-', '.' and '*' only",
    "esm2": "letters A-Z and a-z, '.' and '-' only",
}

_DISALLOWED = {"dnabert_s": r"[^A-Za-z.*\-]", "esm2": r"[^A-Za-z.\-]"}
_DISALLOWED_STR = {k: re.compile(p) for k, p in _DISALLOWED.items()}
_DISALLOWED_BYTES = {k: re.compile(p.encode("ascii")) for k, p in _DISALLOWED.items()}
_ALLOWED_BYTES = {k: v.encode("ascii") for k, v in ALLOWED.items()}


def _kind(kind: str) -> str:
    if kind not in MAX_LENGTH:
        raise ValueError(f"unknown encoder kind {kind!r}; expected one of {sorted(MAX_LENGTH)}")
    return kind


def first_disallowed(kind: str, seq: str | bytes) -> tuple[int, str] | None:
    """(0-based index, character) of the first character model `kind` refuses, or None.

    Only the character rule (ALLOWED[kind]); emptiness and length are `check_sequence`'s. For
    bytes the index is a byte offset and the character is `chr(byte)`.
    """
    allowed = _ALLOWED_BYTES[_kind(kind)]
    if isinstance(seq, (bytes, bytearray)):
        if not seq.translate(None, allowed):  # fast path (~1 GB/s): nothing but allowed bytes
            return None
        m = _DISALLOWED_BYTES[kind].search(seq)
        return None if m is None else (m.start(), chr(seq[m.start()]))
    if seq.isascii() and not seq.encode("ascii").translate(None, allowed):
        return None
    m = _DISALLOWED_STR[kind].search(seq)
    return None if m is None else (m.start(), m.group())


def describe_disallowed(kind: str, index: int, char: str) -> str:
    """The one-line reason for a refused character (index 0-based; shown 1-based)."""
    if not char.isascii():
        what = "non-ASCII character"
    elif char.isspace():
        what = "whitespace character"
    elif not char.isprintable():
        what = "control character"
    else:
        what = "character"
    return (f"{what} {char!r} at position {index + 1} (1-based) is not allowed; "
            f"{kind} accepts {ALLOWED_TEXT[kind]}")


def check_sequence(kind: str, seq: str | bytes) -> str | None:
    """Return why `seq` cannot be embedded by model `kind`, or None when it is fine."""
    _kind(kind)
    if isinstance(seq, (bytes, bytearray)):
        try:
            seq = bytes(seq).decode("ascii")
        except UnicodeDecodeError:
            return "not ASCII text (undecodable bytes)"
    if not isinstance(seq, str):
        return f"expected a string, got {type(seq).__name__}"
    if not seq:
        return "empty sequence"
    limit = MAX_LENGTH[kind]
    if len(seq) > limit:
        return f"length {len(seq)} exceeds the {kind} maximum of {limit}"
    bad = first_disallowed(kind, seq)
    if bad is not None:
        return describe_disallowed(kind, *bad)
    return None
