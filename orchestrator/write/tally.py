"""One sequence_summary.tsv row per input record, accumulated over the windows it spans."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from orchestrator.classify.consensus import chunk_is_virus
from orchestrator.write.formats import NA, format_score


class SequenceTally:
    """Accumulates one sequence_summary.tsv row for an input record, over any number of windows."""

    def __init__(self, seq_id: str, length: int, n_chunks: int, n_ambiguous_bases: int) -> None:
        self.seq_id = seq_id
        self.length = length
        self.n_chunks = n_chunks
        self.n_ambiguous_bases = n_ambiguous_bases
        self.n_frames = 0
        self._chunks: dict[str, list[np.float32]] = {}  # chunk_id -> [max p0, max p1]

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
        n_viral = int(chunk_is_virus(np.array(chunks)).sum()) if chunks else 0
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
