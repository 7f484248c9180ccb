"""Per-sequence calls and viral regions from the chunk maxima: the answers users ask for.

Calls follow the contig-calling step of the Broad Institute's viral-ngs / viral-pipelines
(`classify_virnucpro_contigs` in `tasks_metagenomics.wdl`), which consumes the original tool's
highest-score file. Per chunk: delta = max_score_1 - max_score_0, weight |delta|^0.5; per sequence
the weighted mean delta decides the call (viral above +min_weighted_delta, non-viral below its
negative, ambiguous between). Chunks are confident viral (max_score_1 > 0.8 and max_score_0 < 0.3),
confident non-viral (the mirror) or ambiguous (both > 0.7); the viral (non-viral) proportion is
confident chunks over the non-ambiguous ones. Tier: high when |weighted delta| > 0.6, else
moderate, if at least one confident chunk and the proportion >= min_viral_prop; low otherwise;
ambiguous calls are "review"; with fewer than min_chunks chunks high/moderate drop to low and low
to review. Scores are taken as printed in the highest-score file (as that step reads them), so a
threshold edge decides the same way here and there.

Regions scan a long sequence for runs of viral chunks (delta > min_weighted_delta), bridging gaps
of up to `region_max_gap` other chunks: a prophage in a bacterial contig becomes one region.
Coordinates come from the chunking arithmetic (`orchestrator.chunk.chunking.chunk_bounds`), which spreads the
overlap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from orchestrator.errors import InputError

CALL_VIRAL = "viral"
CALL_NONVIRAL = "non-viral"
CALL_AMBIGUOUS = "ambiguous"
CALL_NO_FRAMES = "no-frames"
TIERS = ("high", "moderate", "low", "review")


@dataclass(frozen=True)
class CallSettings:
    """Every threshold of the calls and the region scan (all options of `predict`)."""

    min_weighted_delta: float = 0.3
    high_confidence_delta: float = 0.6
    min_confident_score: float = 0.8
    max_opposing_score: float = 0.3
    min_ambiguous_score: float = 0.7
    min_viral_prop: float = 0.1
    min_nonviral_prop: float = 0.1
    min_chunks: int = 5
    region_max_gap: int = 1
    region_min_length: int = 1000

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def validate(self) -> None:
        """Refuse thresholds no call could use (InputError, exit 2), before any file is touched;
        `predict` and `call` check the same way."""
        for name in ("min_weighted_delta", "high_confidence_delta", "min_confident_score",
                     "max_opposing_score", "min_ambiguous_score", "min_viral_prop",
                     "min_nonviral_prop"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                raise InputError(f"--{name.replace('_', '-')} must be between 0 and 1, got {value}")
        for name in ("min_chunks", "region_max_gap", "region_min_length"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')} must be 0 or more, "
                                 f"got {getattr(self, name)}")


@dataclass(frozen=True)
class ChunkScore:
    """A scored chunk: 1-based `index`, 0-based half-open [start, end), its two maxima."""

    index: int
    start: int
    end: int
    max0: float
    max1: float

    @property
    def delta(self) -> float:
        return self.max1 - self.max0


@dataclass(frozen=True)
class SequenceCall:
    call: str
    confidence: str | None  # None for no-frames
    weighted_delta: float | None
    n_chunks: int
    n_confident_viral: int
    n_confident_nonviral: int
    n_ambiguous: int
    viral_proportion: float | None
    nonviral_proportion: float | None


@dataclass(frozen=True)
class Region:
    """A run of viral chunks: 0-based half-open [start, end) on the sequence."""

    start: int
    end: int
    n_chunks: int  # scored chunks inside, bridged ones included
    n_viral_chunks: int
    mean_score: float  # mean max_score_1 of the scored chunks inside
    max_score: float


def scored_chunks(maxima: dict[int, tuple[float, float]], bounds: Sequence[tuple[int, int]]
                  ) -> list[ChunkScore]:
    """ChunkScores in sequence order from {chunk number (1-based): (max0, max1)} and the
    record's `chunk_bounds`."""
    return [ChunkScore(k, *bounds[k - 1], *maxima[k]) for k in sorted(maxima)]


def call_sequence(chunks: Sequence[ChunkScore], s: CallSettings) -> SequenceCall:
    if not chunks:
        return SequenceCall(CALL_NO_FRAMES, None, None, 0, 0, 0, 0, None, None)
    deltas = [c.delta for c in chunks]
    weights = [abs(d) ** 0.5 for d in deltas]
    total = sum(weights)
    weighted = (sum(d * w for d, w in zip(deltas, weights, strict=True)) / total if total > 0
                else sum(deltas) / len(deltas))
    n_viral = sum(1 for c in chunks
                  if c.max1 > s.min_confident_score and c.max0 < s.max_opposing_score)
    n_nonviral = sum(1 for c in chunks
                     if c.max0 > s.min_confident_score and c.max1 < s.max_opposing_score)
    n_ambiguous = sum(1 for c in chunks
                      if c.max1 > s.min_ambiguous_score and c.max0 > s.min_ambiguous_score)
    effective = len(chunks) - n_ambiguous
    viral_prop = n_viral / effective if effective > 0 else 0.0
    nonviral_prop = n_nonviral / effective if effective > 0 else 0.0
    if weighted > s.min_weighted_delta:
        call = CALL_VIRAL
        confident = n_viral >= 1 and viral_prop >= s.min_viral_prop
        tier = ("high" if weighted > s.high_confidence_delta else "moderate") if confident else "low"
    elif weighted < -s.min_weighted_delta:
        call = CALL_NONVIRAL
        confident = n_nonviral >= 1 and nonviral_prop >= s.min_nonviral_prop
        tier = ("high" if weighted < -s.high_confidence_delta else "moderate") if confident else "low"
    else:
        call, tier = CALL_AMBIGUOUS, "review"
    if len(chunks) < s.min_chunks:
        tier = {"high": "low", "moderate": "low", "low": "review"}.get(tier, tier)
    return SequenceCall(call, tier, weighted, len(chunks), n_viral, n_nonviral, n_ambiguous,
                        viral_prop, nonviral_prop)


def find_regions(chunks: Sequence[ChunkScore], s: CallSettings) -> list[Region]:
    """Runs of viral chunks with gaps of <= region_max_gap chunks (by number) bridged.

    Chunks without a kept frame are absent from `chunks`; they count as gap chunks.
    """
    viral = [i for i, c in enumerate(chunks) if c.delta > s.min_weighted_delta]
    runs: list[tuple[int, int]] = []  # positions in `chunks` of the first and last viral chunk
    for i in viral:
        if runs and chunks[i].index - chunks[runs[-1][1]].index - 1 <= s.region_max_gap:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    regions = []
    for first, last in runs:
        inside = chunks[first:last + 1]
        start, end = chunks[first].start, chunks[last].end
        if end - start < s.region_min_length:
            continue
        scores = [c.max1 for c in inside]
        regions.append(Region(start, end, len(inside),
                              sum(1 for c in inside if c.delta > s.min_weighted_delta),
                              sum(scores) / len(scores), max(scores)))
    return regions


def track_intervals(chunks: Sequence[ChunkScore], bounds: Sequence[tuple[int, int]]
                    ) -> list[tuple[int, int]]:
    """Non-overlapping [start, end) per scored chunk for a genome track (`bounds`: the record's
    `chunk_bounds`).

    Neighbouring chunks overlap (the chunking spreads the overlap); each overlap is split at its
    midpoint so that every base is drawn once, as bedGraph requires.
    """
    if not bounds:
        return []
    cuts = [0] + [(bounds[k + 1][0] + bounds[k][1]) // 2 for k in range(len(bounds) - 1)]
    cuts.append(bounds[-1][1])
    return [(cuts[c.index - 1], cuts[c.index]) for c in chunks]
