"""Every output path, column header and row format of a run, in one place.

Byte formats follow REFERENCE.md section 6 (the original VirNucPro's files, which downstream
pipelines parse). Stages ask this module for paths and rows; they never format them themselves.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.calls import Region, SequenceCall

PREDICTIONS_NAME = "prediction_results.txt"
HIGHEST_NAME = "prediction_results_highestscore.csv"  # tab-separated despite the name
SUMMARY_NAME = "sequence_summary.tsv"
RUN_JSON_NAME = "run.json"
CALLS_NAME = "sequence_calls.tsv"
REGIONS_NAME = "viral_regions.tsv"
REGIONS_BED_NAME = "viral_regions.bed"
BEDGRAPH_NAME = "chunk_scores.bedgraph"
REPORT_NAME = "report.html"
STATE_DIR_NAME = ".virnucpro_state"
CHUNK_TABLE_NAME = "chunk_maxima.tsv"
EMBEDDINGS_NAME = "embeddings.h5"  # predict --save-embeddings

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


class OutputPaths:
    """The files a run writes into OUTDIR, plus the folder holding its checkpoints."""

    def __init__(self, outdir: str | Path, *, save_embeddings: bool = False) -> None:
        self.outdir = Path(outdir)
        self.save_embeddings = save_embeddings
        self.embeddings = self.outdir / EMBEDDINGS_NAME
        self.predictions = self.outdir / PREDICTIONS_NAME
        self.highest = self.outdir / HIGHEST_NAME
        self.summary = self.outdir / SUMMARY_NAME
        self.run_json = self.outdir / RUN_JSON_NAME
        self.calls = self.outdir / CALLS_NAME
        self.regions = self.outdir / REGIONS_NAME
        self.regions_bed = self.outdir / REGIONS_BED_NAME
        self.bedgraph = self.outdir / BEDGRAPH_NAME
        self.report = self.outdir / REPORT_NAME
        self.state = self.outdir / STATE_DIR_NAME
        # per chunk in input order: ID, chunk number, maxima; kept so answers can be re-derived
        self.chunk_table = self.state / CHUNK_TABLE_NAME

    def results(self) -> tuple[Path, ...]:
        """The files that make a run complete (the answers are re-derived when missing)."""
        files = (self.predictions, self.highest, self.summary, self.run_json)
        return (*files, self.embeddings) if self.save_embeddings else files

    def extra_outputs(self) -> tuple[Path, ...]:
        """Written after the results or only on request; removed with them by --restart."""
        return (self.report, self.embeddings)

    def answers(self) -> tuple[Path, ...]:
        """Files derived from the results without any model (`answers.write_answers`)."""
        return (self.calls, self.regions, self.regions_bed, self.bedgraph)


# --------------------------------------------------------------------------- scores


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
    virus = (p[:, 1] > p[:, 0]).tolist()
    return "".join(
        f"{fid}\t{LABEL_VIRUS if v else LABEL_OTHERS}\t{a}\t{b}\n"
        for fid, v, a, b in zip(frame_ids, virus, s0, s1, strict=True)
    )


# --------------------------------------------------------------------------- chunk consensus


def chunk_maxima(chunk_starts: Sequence[int], probs: np.ndarray) -> np.ndarray:
    """[g, 2] column maxima of probs over frame groups starting at chunk_starts (ascending, from 0).

    Per chunk: max_score_0 = max p0 and max_score_1 = max p1 over its frames, which may come from
    different frames. Frames come grouped by chunk, as predict's windows hold them (a chunk's kept
    frames are consecutive and a chunk never spans windows).
    """
    p = np.asarray(probs, dtype=np.float32)
    if not len(chunk_starts):
        return np.empty((0, 2), np.float32)
    return np.maximum.reduceat(p, np.asarray(chunk_starts, np.intp), axis=0)


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
    virus = (m[:, 1] >= m[:, 0]).tolist()
    return [f"{cid}\t{v}\t{a}\t{b}\n" for cid, v, a, b
            in zip(chunk_ids, virus, format_scores(m[:, 0]), format_scores(m[:, 1]), strict=True)]


# --------------------------------------------------------------------------- per-record summary

_ACGT = b"ACGTacgt"


def count_ambiguous(seq: bytes) -> int:
    """Characters other than A C G T (either case): N, IUPAC codes, U, '-', ..."""
    return len(seq.translate(None, _ACGT))


class SequenceTally:
    """Accumulates one sequence_summary.tsv row for an input record, over any number of windows."""

    def __init__(self, seq_id: str, length: int, n_chunks: int, n_ambiguous_bases: int) -> None:
        self.seq_id = seq_id
        self.length = length
        self.n_chunks = n_chunks
        self.n_ambiguous_bases = n_ambiguous_bases
        self.n_frames = 0
        self._chunks: dict[str, list[np.float32]] = {}  # chunk_id -> [max p0, max p1]

    @classmethod
    def for_record(cls, seq_id: str, seq: bytes, n_chunks: int) -> SequenceTally:
        return cls(seq_id, len(seq), n_chunks, count_ambiguous(seq))

    def add_chunk_maxima(self, chunk_ids: Sequence[str], maxima: np.ndarray, n_frames: int) -> None:
        """Fold in scored chunks of this record: maxima [g, 2] (chunk_maxima) of n_frames frames.

        A chunk seen again (its frames in another call) keeps the larger maxima.
        """
        chunks = self._chunks
        # tolist(): float32 values as exact Python floats; comparisons and to_dict are unchanged
        for cid, m0, m1 in zip(chunk_ids, maxima[:, 0].tolist(), maxima[:, 1].tolist(),
                               strict=True):
            cur = chunks.get(cid)
            if cur is None:
                chunks[cid] = [m0, m1]
            else:
                if m0 > cur[0]:
                    cur[0] = m0
                if m1 > cur[1]:
                    cur[1] = m1
        self.n_frames += n_frames

    def row(self) -> str:
        """The tab-separated line; scores NA when no frame of the record was kept."""
        chunks = list(self._chunks.values())
        n_viral = sum(1 for m0, m1 in chunks if m1 >= m0)
        if chunks:
            m1s = np.array([m[1] for m in chunks], dtype=np.float32)
            max_score = format_score(m1s.max())
            mean_score = format_score(np.float32(m1s.astype(np.float64).mean()))
        else:
            max_score = mean_score = NA
        fields = (
            self.seq_id, self.length, self.n_chunks, len(chunks), self.n_frames, n_viral,
            max_score, mean_score, self.n_ambiguous_bases,
        )
        return "\t".join(map(str, fields)) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe snapshot for checkpoints (float32 values are exact as JSON floats)."""
        return {
            "seq_id": self.seq_id,
            "length": self.length,
            "n_chunks": self.n_chunks,
            "n_ambiguous_bases": self.n_ambiguous_bases,
            "n_frames": self.n_frames,
            "chunks": {cid: [float(m0), float(m1)] for cid, (m0, m1) in self._chunks.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SequenceTally:
        tally = cls(d["seq_id"], d["length"], d["n_chunks"], d["n_ambiguous_bases"])
        tally.n_frames = d["n_frames"]
        tally._chunks = {
            cid: [np.float32(m0), np.float32(m1)] for cid, (m0, m1) in d["chunks"].items()
        }
        return tally


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


# --------------------------------------------------------------------------- atomic writes


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is unsafe once threads run.
_FILE_MODE = 0o666 & ~_read_umask()


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Replace `path` in one step: temp file in the same folder, fsync, os.replace.

    A reader (or a crash) sees either the old file or the complete new one, never a partial one.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fchmod(fh.fileno(), _FILE_MODE)  # mkstemp makes 0600; match open()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """run.json and checkpoint records: indented, key order kept, trailing newline."""
    write_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
