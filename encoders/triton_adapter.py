"""The Triton Python-backend adapter both models' model.py files subclass (written once).

`initialize` reads the model's config.pbtxt parameters and the instance's device, checks the
weight files against the config's checksum (`encoders.repository.verify_weights`) and loads the
encoder once; `execute` merges every request the dynamic batcher handed over, embeds all valid
rows with ONE `Embedder.embed` call, and gives each request its own rows back. A request with a
bad row (undecodable bytes, empty, too long, a disallowed character: see `encoders.validation`)
gets its own error; the other requests succeed.

`triton_python_backend_utils` exists only inside the server's Python stub, so it is imported in
`initialize`; `split_requests` is plain Python and testable anywhere.

On CPU the two encoders run side by side in two stub processes and share the cores. torch's
OpenMP threads busy-wait at every barrier by default, so whenever both models execute, each
spins on cores the other needs; a CPU instance therefore sets OMP_WAIT_POLICY=PASSIVE (unless
the environment already sets it) before torch is first imported in the stub. The config parameter
`cpu_threads` sets torch's intra-op threads: an integer, or "auto" = every usable core (with
passive waiting a model running alone still uses the whole machine). Absent or empty: torch's
default. GPU instances ignore both.
"""

from __future__ import annotations

import importlib
import json
import locale
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encoders.repository import positive_int
from encoders.validation import check_sequence

INPUT = "SEQUENCE"
OUTPUT = "EMBEDDING"


@dataclass
class Split:
    """All valid rows of a merged batch, and per request its rows (a slice) or why it failed."""

    sequences: list[str] = field(default_factory=list)
    parts: list[slice | str] = field(default_factory=list)


def split_requests(kind: str, batches: Sequence[np.ndarray]) -> Split:
    """Decode and check each request's rows ([n, 1] arrays of bytes); one bad row fails its request."""
    split = Split()
    for rows in batches:
        seqs: list[str] = []
        problem = None
        for i, raw in enumerate(np.asarray(rows, dtype=object).reshape(-1)):
            value = raw if isinstance(raw, (bytes, str)) else bytes(raw)
            problem = check_sequence(kind, value)
            if problem is not None:
                problem = f"{kind}: row {i} of the request: {problem}"
                break
            seqs.append(value.decode("ascii") if isinstance(value, bytes) else value)
        if problem is not None:
            split.parts.append(problem)
            continue
        start = len(split.sequences)
        split.sequences.extend(seqs)
        split.parts.append(slice(start, len(split.sequences)))
    return split


def _configured_width(model_config: dict[str, Any]) -> int:
    """EMBEDDING's declared width in config.pbtxt (-1 when left to the weights)."""
    for out in model_config.get("output", []):
        if out.get("name") == OUTPUT:
            dims = [int(d) for d in out.get("dims", [-1])]
            return dims[-1] if len(dims) == 1 else -1
    return -1


def cpu_threads(value: str | None, usable_cores: int) -> int | None:
    """Torch threads for a CPU instance from the `cpu_threads` parameter (None: leave torch's)."""
    if (value or "").strip().lower() == "auto":
        return max(1, usable_cores)
    return positive_int("cpu_threads", value)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _utf8_locale() -> None:
    """Make text files default to UTF-8 in the stub.

    The stub embeds Python without the C-locale coercion a `python3` process gets (PEP 538), so
    under a server started with LANG unset, `open()` defaults to ASCII and torch.compile's
    inductor fails reading its own (UTF-8) kernel templates at load.
    """
    if locale.getpreferredencoding(False).lower().replace("-", "") == "utf8":
        return
    try:
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")
    except locale.Error:  # no such locale here: leave it; only compile needs it
        pass


class EmbeddingModel:
    """Base for `TritonPythonModel`; subclasses set `kind` ("dnabert_s" or "esm2")."""

    kind: str = ""

    def initialize(self, args: dict[str, str]) -> None:
        """Load the encoder once per instance, on the instance's device, as config.pbtxt says."""
        from encoders import load_embedder
        from encoders.repository import compile_flag, parameters, token_budget, verify_weights

        self.pb = importlib.import_module("triton_python_backend_utils")
        _utf8_locale()
        config = json.loads(args["model_config"])
        params = parameters(config)  # same defaults as encoders.repository.weights_for
        weights = Path(args["model_repository"]) / args["model_version"] / params["weights"]
        unverified = verify_weights(self.kind, args["model_name"], args["model_version"], weights, params)
        if unverified:
            self.pb.Logger.log_warn(unverified)
        if args.get("model_instance_kind") == "GPU":
            device = f"cuda:{args['model_instance_device_id']}"
        else:
            device = "cpu"
            if "torch" not in sys.modules:  # libgomp reads it once, when torch loads it
                os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            threads = cpu_threads(params.get("cpu_threads"), _usable_cores())
            if threads is not None:
                import torch

                torch.set_num_threads(threads)
        self.embedder = load_embedder(
            self.kind, weights, device=device, precision=params["precision"],
            token_budget=token_budget(params), compile=compile_flag(params),
        )
        width = _configured_width(config)
        if width not in (-1, self.embedder.hidden_size):
            raise ValueError(
                f"{args['model_name']}: config.pbtxt declares {OUTPUT} width {width} but the weights "
                f"in {weights} give {self.embedder.hidden_size}"
            )
        self.pb.Logger.log_info(f"{args['model_name']}: loaded {self.embedder!r} from {weights}")

    def execute(self, requests: list[Any]) -> list[Any]:
        """One embed call for all valid rows of all requests; FP32 [n, hidden] per request."""
        pb = self.pb
        arrays = [pb.get_input_tensor_by_name(r, INPUT).as_numpy() for r in requests]
        split = split_requests(self.kind, arrays)
        try:
            rows = self.embedder.embed(split.sequences)
        except Exception as exc:  # one failure must answer every request, not crash the batch
            pb.Logger.log_error(f"{self.kind}: embedding {len(split.sequences)} rows failed: {exc!r}")
            message = f"{self.kind}: embedding failed: {exc}"
            return [self._error(message) for _ in requests]
        responses = []
        for part in split.parts:
            if isinstance(part, str):
                pb.Logger.log_warn(part)
                responses.append(self._error(part, invalid=True))
            else:
                tensor = pb.Tensor(OUTPUT, np.ascontiguousarray(rows[part], dtype=np.float32))
                responses.append(pb.InferenceResponse(output_tensors=[tensor]))
        return responses

    def _error(self, message: str, invalid: bool = False) -> Any:
        pb = self.pb
        code = pb.TritonError.INVALID_ARG if invalid else pb.TritonError.INTERNAL
        return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(message, code))

    def finalize(self) -> None:
        """Drop the encoder so the stub frees its memory before exit."""
        self.embedder = None
