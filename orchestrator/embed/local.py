"""`--backend local`: the same encoders Triton serves, run in this process.

This is the standard path the Triton path must match. Each model is loaded once per run (from the
weights that the repository's config.pbtxt points at) and reused for every input file and window.
torch and the encoders are imported here only, so `--backend triton` never imports torch.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.embed.contract import DNA_MODEL, PROTEIN_MODEL
from orchestrator.errors import InputError

MODEL_INDEX = {DNA_MODEL: 0, PROTEIN_MODEL: 1}  # position of each model's width in `widths`


def _version_of(model_repository: Path, model: str, weights: Path) -> str:
    """The numeric version folder the weights live in (model/<version>/weights), else "local"."""
    try:
        parts = weights.resolve().relative_to((model_repository / model).resolve()).parts
    except ValueError:
        return "local"
    return parts[0] if parts and parts[0].isdigit() else "local"


class LocalBackend:
    """In-process DNABERT-S + ESM-2 with the `EmbeddingBackend` interface (`orchestrator.embed.contract`)."""

    def __init__(self, model_repository: str | None) -> None:
        if not model_repository:
            raise InputError("--backend local needs --model-repository "
                             "(the folder with the weights)")
        repo = Path(model_repository)
        if not repo.is_dir():
            raise InputError(f"model repository {repo} is not a folder")
        import torch

        from encoders import load_embedder
        from encoders.repository import compile_flag, token_budget, weights_for

        # the standard path runs where the machine allows: the first GPU if there is one
        device = "cuda:0" if torch.cuda.is_available() else "cpu"

        self.url = None
        self._embedders: dict[str, Any] = {}
        self._info: list[dict[str, Any]] = []
        self._stats: dict[str, dict[str, float]] = {}
        for model in (DNA_MODEL, PROTEIN_MODEL):
            try:
                weights, params = weights_for(repo, model)
                embedder = load_embedder(model, weights, device=device,
                                         precision=params.get("precision", "fp32"),
                                         token_budget=token_budget(params),
                                         compile=compile_flag(params))
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot load {model} from {repo}: {exc}") from exc
            weights = Path(weights)
            self._embedders[model] = embedder
            self._info.append({
                "name": model,
                "version": _version_of(repo, model, weights),
                "weights_sha256": getattr(embedder, "weights_sha256", "unknown") or "unknown",
                "width": int(embedder.hidden_size),
                "weights": str(weights),
                "device": device,
            })
            self._stats[model] = {"requests": 0, "frames": 0, "seconds": 0.0, "retries": 0}
        self._queue: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._work, name="embed-local", daemon=True).start()
        self.widths = (int(self._embedders[DNA_MODEL].hidden_size),
                       int(self._embedders[PROTEIN_MODEL].hidden_size))

    def models_info(self) -> list[dict[str, Any]]:
        return [dict(i) for i in self._info]

    def stats(self) -> dict[str, dict[str, float]]:
        return {m: dict(s) for m, s in self._stats.items()}

    def _run(self, model: str, seqs: list[str]) -> np.ndarray:
        t0 = time.perf_counter()
        out = np.asarray(self._embedders[model].embed(seqs), dtype=np.float32)
        s = self._stats[model]
        s["requests"] += 1
        s["frames"] += len(seqs)
        s["seconds"] += time.perf_counter() - t0
        return out

    def submit(self, nucleotides: list[str], proteins: list[str]
               ) -> Future[tuple[np.ndarray, np.ndarray]]:
        """Embed on the backend's one worker thread (windows run in order, one at a time) while
        the caller reads the next window and writes the previous one."""
        future: Future[tuple[np.ndarray, np.ndarray]] = Future()
        self._queue.put((future, nucleotides, proteins))
        return future

    def _work(self) -> None:
        """The worker is a daemon thread: an interrupted run exits at once, not after the window."""
        while (item := self._queue.get()) is not None:
            future, nucleotides, proteins = item
            try:
                future.set_result(self.embed(nucleotides, proteins))
            except BaseException as exc:  # handed to the caller by result()
                future.set_exception(exc)

    def embed(self, nucleotides: list[str], proteins: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The lists may differ in length (deduplication sends each model only its new strings)."""
        return self._run_or_empty(DNA_MODEL, nucleotides), self._run_or_empty(PROTEIN_MODEL, proteins)

    def _run_or_empty(self, model: str, seqs: list[str]) -> np.ndarray:
        if not seqs:
            return np.empty((0, self.widths[MODEL_INDEX[model]]), np.float32)
        return self._run(model, seqs)

    def close(self) -> None:
        self._queue.put(None)
        self._embedders.clear()
