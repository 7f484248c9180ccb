"""Regenerate examples/example.fa deterministically (the bundled input of `orchestrator demo`).

Random DNA keeps almost no frame at 500 nt (a stop codon turns up within ~60 codons), so most
records are built from long stop-free reading frames on either strand, mixed with random
intergenic DNA and a few purely random records; that way the demo has frames to classify and also
shows chunks and records without any kept frame. Run: python examples/make_example.py
"""

from __future__ import annotations

import random
from pathlib import Path

SEED = 20250101
OUT = Path(__file__).with_name("example.fa")
STOPS = {"TAA", "TAG", "TGA"}
SENSE = [a + b + c for a in "ACGT" for b in "ACGT" for c in "ACGT" if a + b + c not in STOPS]
COMPLEMENT = str.maketrans("ACGT", "TGCA")


def _orf(rng: random.Random, length: int) -> str:
    """A stretch of `length` nt with no stop codon in frame 0."""
    codons = "".join(rng.choice(SENSE) for _ in range(length // 3 + 1))
    return codons[:length]


def _random_dna(rng: random.Random, length: int, gc: float) -> str:
    weights = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]
    return "".join(rng.choices("ACGT", weights=weights, k=length))


def _record(rng: random.Random, index: int) -> tuple[str, str, str]:
    kind = rng.choice(["orf", "orf", "orf", "mixed", "random"])
    length = rng.randint(250, 2600)
    if kind == "orf":
        seq = _orf(rng, length)
    elif kind == "mixed":
        head = _random_dna(rng, rng.randint(20, 300), rng.uniform(0.35, 0.65))
        seq = (head + _orf(rng, length))[:length]
    else:
        seq = _random_dna(rng, length, rng.uniform(0.35, 0.65))
    if rng.random() < 0.4:
        seq = seq[::-1].translate(COMPLEMENT)
    desc = f" {kind} segment, seed {SEED}" if rng.random() < 0.3 else ""
    return f"example_{index:02d}", desc, seq


def render(records: int = 24) -> str:
    """The whole example FASTA as text, wrapped at 60 columns."""
    rng = random.Random(SEED)
    lines = []
    for i in range(1, records + 1):
        rid, desc, seq = _record(rng, i)
        lines.append(f">{rid}{desc}")
        lines.extend(seq[j : j + 60] for j in range(0, len(seq), 60))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
