"""Every column header and row format of a run's tables, in one place.

Byte formats follow REFERENCE.md section 6 (the original VirNucPro's files, which downstream
pipelines parse). Stages ask this module for headers and rows; they never format them themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from orchestrator.classify.calls import (
    CALL_AMBIGUOUS,
    CALL_NO_FRAMES,
    CALL_NONVIRAL,
    CALL_VIRAL,
    TIERS,
    Region,
    SequenceCall,
)
from orchestrator.classify.consensus import chunk_is_virus, frame_is_virus

PREDICTIONS_COLUMNS = ("Sequence_ID", "Prediction", "score1", "score2")
# The original writes only the first two; a common downstream workflow also reads the max scores.
HIGHEST_COLUMNS = ("Modified_ID", "Is_Virus", "max_score_0", "max_score_1")
SUMMARY_COLUMNS = (
    "seq_id",
    "length",
    "n_chunks",
    "n_chunks_scored",
    "n_frames",
    "n_viral_chunks",
    "max_virus_score",
    "mean_virus_score",
    "n_ambiguous_bases",
)
CALLS_COLUMNS = (
    "seq_id",
    "length",
    "call",
    "confidence",
    "weighted_delta",
    "n_chunks",
    "n_confident_viral",
    "n_confident_nonviral",
    "n_ambiguous",
    "viral_proportion",
    "nonviral_proportion",
)
REGIONS_COLUMNS = (
    "seq_id",
    "region_id",
    "start",
    "end",
    "length",
    "n_chunks",
    "n_viral_chunks",
    "mean_virus_score",
    "max_virus_score",
)
PREDICTIONS_HEADER = "\t".join(PREDICTIONS_COLUMNS) + "\n"
HIGHEST_HEADER = "\t".join(HIGHEST_COLUMNS) + "\n"
SUMMARY_HEADER = "\t".join(SUMMARY_COLUMNS) + "\n"
CALLS_HEADER = "\t".join(CALLS_COLUMNS) + "\n"
REGIONS_HEADER = "\t".join(REGIONS_COLUMNS) + "\n"
# UCSC track lines: IGV and the UCSC browser read them; bedtools skips them.
REGIONS_BED_HEADER = ('track name="viral_regions" description="VirNucPro viral regions '
                      '(score = mean virus score x 1000)" useScore=1\n')
BEDGRAPH_HEADER = ('track type=bedGraph name="virus_score" description="VirNucPro chunk virus '
                   'score (max_score_1)" viewLimits=0:1 autoScale=off\n')

LABEL_VIRUS = "virus"
LABEL_OTHERS = "others"
NA = "NA"

# --------------------------------------------------------------------------- frames and chunks


def format_score(x: float | np.floating) -> str:
    """Shortest repr that round-trips the float32 value, exactly as str(numpy.float32(x))."""
    return str(np.float32(x))


def format_scores(values: Sequence[float] | np.ndarray) -> list[str]:
    """format_score for many values (~2M values/s: str of numpy float32 scalars, no Python floats)."""
    return list(map(str, np.asarray(values, dtype=np.float32).ravel()))


def _as_probs(probs: np.ndarray, n: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float32)
    if p.ndim != 2 or p.shape != (n, 2):
        raise ValueError(f"probabilities must have shape ({n}, 2), got {p.shape}")
    return p


def prediction_rows(frame_ids: Sequence[str], probs: np.ndarray) -> str:
    """prediction_results.txt rows `id\\tvirus|others\\tp0\\tp1\\n`; virus iff p1 > p0 (tie: others)."""
    p = _as_probs(probs, len(frame_ids))
    s0 = format_scores(p[:, 0])
    s1 = format_scores(p[:, 1])
    virus = frame_is_virus(p).tolist()
    return "".join(
        f"{fid}\t{LABEL_VIRUS if v else LABEL_OTHERS}\t{a}\t{b}\n"
        for fid, v, a, b in zip(frame_ids, virus, s0, s1, strict=True)
    )



def format_chunk_table_rows(seq_id: str, highest_rows: Sequence[str]) -> str:
    """Chunk maxima table rows `ID\\tk\\tmax_score_0\\tmax_score_1` from one record's
    highestscore rows (format_highest_rows), so the scores are printed once."""
    prefix = len(seq_id) + len("_chunk_")
    out = []
    for row in highest_rows:
        cid, _virus, scores = row.split("\t", 2)
        out.append(f"{seq_id}\t{cid[prefix:]}\t{scores}")
    return "".join(out)


def format_highest_rows(chunk_ids: Sequence[str], maxima: np.ndarray) -> list[str]:
    """highestscore rows for chunks with maxima [g, 2] float32, in the given order.

    Is_Virus = max_score_1 >= max_score_0, as the original decides it (a tie is True).
    """
    m = _as_probs(maxima, len(chunk_ids))
    virus = chunk_is_virus(m).tolist()
    return [f"{cid}\t{v}\t{a}\t{b}\n" for cid, v, a, b
            in zip(chunk_ids, virus, format_scores(m[:, 0]), format_scores(m[:, 1]), strict=True)]


# --------------------------------------------------------------------------- calls, regions, tracks


def _decimal(x: float | None) -> str:
    if x is None:
        return NA
    text = f"{x:.3f}"
    return "0.000" if text == "-0.000" else text


def format_call_row(seq_id: str, length: int, c: SequenceCall) -> str:
    fields = (seq_id, length, c.call, c.confidence or NA, _decimal(c.weighted_delta), c.n_chunks,
              c.n_confident_viral, c.n_confident_nonviral, c.n_ambiguous,
              _decimal(c.viral_proportion), _decimal(c.nonviral_proportion))
    return "\t".join(map(str, fields)) + "\n"


def format_region_rows(seq_id: str, regions: Sequence[Region]) -> tuple[str, str]:
    """(viral_regions.tsv rows with 1-based inclusive coordinates, BED rows 0-based half-open)."""
    tsv, bed = [], []
    for k, r in enumerate(regions, 1):
        name = f"{seq_id}_region_{k}"
        tsv.append(f"{seq_id}\t{name}\t{r.start + 1}\t{r.end}\t{r.end - r.start}\t{r.n_chunks}\t"
                   f"{r.n_viral_chunks}\t{_decimal(r.mean_score)}\t{format_score(r.max_score)}\n")
        bed.append(f"{seq_id}\t{r.start}\t{r.end}\t{name}\t{round(r.mean_score * 1000)}\t.\n")
    return "".join(tsv), "".join(bed)


def format_bedgraph_rows(seq_id: str, scores: Sequence[str],
                         intervals: Sequence[tuple[int, int]]) -> str:
    """Track rows for scored chunks: their virus scores as printed, over their intervals."""
    return "".join(f"{seq_id}\t{s}\t{e}\t{score}\n"
                   for score, (s, e) in zip(scores, intervals, strict=True))


# --------------------------------------------------------------------------- Broad's contig table

# The output of classify_virnucpro_contigs (Broad viral-pipelines, tasks_metagenomics.wdl), read by
# its classify_reads_by_contig step: same columns, words, rounding and row order.
BROAD_CALLS_COLUMNS = ("ID", "call", "tier", "weighted_delta", "n_chunks", "n_confident_viral",
                       "n_confident_nonviral", "n_ambiguous", "viral_proportion",
                       "nonviral_proportion")
BROAD_CALLS_HEADER = "\t".join(BROAD_CALLS_COLUMNS) + "\n"
BROAD_CALL_WORDS = {CALL_VIRAL: "Viral", CALL_NONVIRAL: "Non-viral", CALL_AMBIGUOUS: "Ambiguous"}
BROAD_TIER_WORDS = {"high": "high_confidence", "moderate": "moderate_confidence",
                    "low": "low_confidence", "review": "review"}
_DIGITS = re.compile(r"(\d+)")


def _broad_number(x: float) -> str:
    """`round(x, 3)` of a numpy float64 (scaled by 1000, rounded half to even, scaled back: numpy's
    way, not Python's), printed as pandas prints a float column: the shortest repr."""
    return repr(float(np.rint(np.float64(x) * 1000.0) / 1000.0))


def _csv_field(text: str) -> str:
    """A field as Python's csv writer (pandas' to_csv) quotes it: only when it must be."""
    if any(ch in text for ch in '\t"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def natural_sort_key(text: str) -> list[int | str]:
    """Digit runs compared as numbers, the rest case-insensitively (`x2` before `x10`), the key
    that step sorts its IDs by."""
    return [int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(text)]


def format_broad_call_row(seq_id: str, c: SequenceCall) -> str | None:
    """The row of a sequence with scored chunks; None without any (that step only sees sequences
    that have rows in the highest-score file)."""
    if c.call == CALL_NO_FRAMES or c.weighted_delta is None:
        return None
    fields = (_csv_field(seq_id), BROAD_CALL_WORDS[c.call], BROAD_TIER_WORDS[c.confidence or "review"],
              _broad_number(c.weighted_delta), str(c.n_chunks), str(c.n_confident_viral),
              str(c.n_confident_nonviral), str(c.n_ambiguous),
              _broad_number(c.viral_proportion or 0.0), _broad_number(c.nonviral_proportion or 0.0))
    return "\t".join(fields) + "\n"


# --------------------------------------------------------------------------- MultiQC custom content

# Both files are sections of one MultiQC module ("VirNucPro"); every OUTDIR adds its row (the
# sample name is the first column), so `multiqc DIR1 DIR2 ...` shows one row per sample.
CALL_CLASSES = (CALL_VIRAL, CALL_NONVIRAL, CALL_AMBIGUOUS, CALL_NO_FRAMES)
MULTIQC_COLUMNS = ("records", "chunks", "frames_kept", *CALL_CLASSES, *TIERS, "viral_regions",
                   "viral_region_bp")
_MULTIQC_TITLES = {
    "records": ("Records", "input records"),
    "chunks": ("Chunks", "chunks of all records"),
    "frames_kept": ("Frames kept", "stop-free frames embedded and classified"),
    CALL_VIRAL: ("Viral", "sequences called viral"),
    CALL_NONVIRAL: ("Non-viral", "sequences called non-viral"),
    CALL_AMBIGUOUS: ("Ambiguous", "sequences called ambiguous"),
    CALL_NO_FRAMES: ("No frames", "sequences without a kept frame (not called)"),
    "high": ("High", "calls of high confidence"),
    "moderate": ("Moderate", "calls of moderate confidence"),
    "low": ("Low", "calls of low confidence"),
    "review": ("Review", "calls to review (ambiguous, or low with few chunks)"),
    "viral_regions": ("Viral regions", "runs of viral chunks (viral_regions.tsv)"),
    "viral_region_bp": ("Viral region bp", "total length of the viral regions"),
}
_MULTIQC_MODULE = """\
# parent_id: virnucpro
# parent_name: VirNucPro
# parent_description: 'Viral sequence identification (VirNucPro on Triton): records, calls and
#     viral regions per sample.'
"""


def format_multiqc_summary(sample: str, values: Mapping[str, int]) -> str:
    """virnucpro_mqc.tsv: a table of one row, columns MULTIQC_COLUMNS."""
    headers = "".join(
        f"#     {col}:\n#         title: '{title}'\n#         description: '{text}'\n"
        f"#         format: '{{:,.0f}}'\n#         scale: false\n"
        for col, (title, text) in _MULTIQC_TITLES.items())
    return (f"# id: virnucpro\n# section_name: 'Summary'\n{_MULTIQC_MODULE}"
            "# description: 'One row per run: records, chunks and kept frames, sequence calls per "
            "class and confidence tier, viral regions and their total length.'\n"
            "# plot_type: table\n# pconfig:\n#     id: virnucpro_summary_table\n"
            "#     title: 'VirNucPro: summary'\n#     col1_header: Sample\n# headers:\n"
            f"{headers}Sample\t" + "\t".join(MULTIQC_COLUMNS) + "\n"
            f"{sample}\t" + "\t".join(str(values[c]) for c in MULTIQC_COLUMNS) + "\n")


def format_multiqc_calls(sample: str, values: Mapping[str, int]) -> str:
    """virnucpro_calls_mqc.tsv: a bar per sample, stacked by call class."""
    return (f"# id: virnucpro_calls\n# section_name: 'Sequence calls'\n{_MULTIQC_MODULE}"
            "# description: 'Sequences per call class (sequence_calls.tsv).'\n"
            "# plot_type: bargraph\n# pconfig:\n#     id: virnucpro_calls_plot\n"
            "#     title: 'VirNucPro: sequence calls'\n#     ylab: 'Sequences'\n"
            "Sample\t" + "\t".join(CALL_CLASSES) + "\n"
            f"{sample}\t" + "\t".join(str(values[c]) for c in CALL_CLASSES) + "\n")
