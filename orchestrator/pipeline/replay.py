"""Re-classification: a saved run's vectors stand in for the servers (`predict --embeddings`).

The run loop regenerates the windows from the original inputs (cheap: read, chunk, translate) and
takes each window's vectors from the embeddings file instead of embedding them, so every output of
`predict` (summary rows of records without frames included) comes from the same code and is
byte-identical to the run that wrote the file when the classifier is the same. Before anything is
classified the file must match: the inputs' checksums, the chunk size, predict's frame selection,
the classifier's input width and, for a classifier from `orchestrator train`, its encoders' weight
checksums and chunk size. Each window's frame IDs are checked against the file's rows.
"""

from __future__ import annotations

from typing import Any

from orchestrator.chunk.windows import Window
from orchestrator.classify.classifier import Classifier
from orchestrator.embed.contract import Embedded
from orchestrator.errors import InputError
from orchestrator.write.embeddings import HEADER_MODEL_KEYS, RowReader

PREDICT_FRAME_FILTER = "stop-free"


class _Stored:
    """A window's vectors, already at hand."""

    def __init__(self, embedded: Embedded) -> None:
        self._embedded = embedded

    def result(self) -> Embedded:
        return self._embedded

    def done(self) -> bool:
        return True


class EmbeddingsReplay:
    """Serves the run loop a saved run's vectors, window by window, by frame position."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.reader = RowReader(path)
        self.header = self.reader.header
        self.widths = self.reader.widths
        self.rows_served = 0

    def check(self, *, chunk_size: int, input_digests: list[str], clf: Classifier) -> None:
        """Refuse (InputError, exit 2) a file these inputs, chunk size or classifier do not fit."""
        h, path = self.header, self.path
        if h.frame_filter != PREDICT_FRAME_FILTER:
            raise InputError(f"{path} holds only frames {h.frame_filter!r} (embed "
                             "--cds-frames-only), not every stop-free frame predict classifies")
        if h.chunk_size != chunk_size:
            raise InputError(f"{path} holds {h.chunk_size} bp chunks but --chunk-size is "
                             f"{chunk_size}; give the chunk size of the run that wrote it")
        trained = clf.metadata.get("chunk_size")
        if trained is not None and trained != str(h.chunk_size):
            raise InputError(f"{clf.source} was trained on {trained} bp chunks but {path} holds "
                             f"{h.chunk_size} bp chunks")
        clf.check_widths(*self.widths)
        mismatch = clf.encoder_mismatch(h.models)
        if mismatch:
            raise InputError(f"{mismatch} (the vectors in {path})")
        stored = [i.get("sha256") for i in h.inputs]
        if stored != list(input_digests):
            names = ", ".join(i.get("name", "?") for i in h.inputs) or "no inputs"
            raise InputError(f"{path} was made from other inputs ({names}, sha256 "
                             f"{', '.join(str(s)[:12] for s in stored)}); give the inputs of the "
                             "run that wrote it, in the same order")

    def models_info(self) -> list[dict[str, Any]]:
        return [{k: m.get(k) for k in HEADER_MODEL_KEYS} for m in self.header.models]

    def submit_window(self, w: Window) -> _Stored:
        """The window's rows; the file's frame IDs must be the window's."""
        stop = w.progress["frames"]
        start = stop - len(w.frame_ids)
        if stop > self.reader.n:
            raise InputError(f"{self.path} has {self.reader.n} frames but the inputs give more; "
                             "it was not written by a predict or embed run of these inputs")
        ids, dna, prot = self.reader.rows(start, stop)
        if ids != w.frame_ids:
            k = next(i for i, (a, b) in enumerate(zip(ids, w.frame_ids, strict=True)) if a != b)
            raise InputError(f"{self.path} row {start + k + 1} is {ids[k]} but the inputs give "
                             f"{w.frame_ids[k]} there; it was not written from these inputs")
        self.rows_served += len(ids)
        return _Stored((dna, prot))

    def check_complete(self, frames: int) -> None:
        if frames != self.reader.n:
            raise InputError(f"{self.path} has {self.reader.n} frames but the inputs give "
                             f"{frames}; it was not written from these inputs")

    def stats(self) -> dict[str, dict[str, float]]:
        return {}

    def close(self) -> None:
        self.reader.close()
