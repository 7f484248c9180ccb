"""Pieces both encoders share: precision names, safe state-dict reading, key checks, the Embedder.

`Embedder.embed` is the one batched inference loop: validate, tokenise, sort by length, cut into
token-budget sub-batches, run under `torch.inference_mode()`, keep pooled rows on the device and
copy them to the host once, restore the input order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.batching import token_budget_batches
from encoders.errors import SequenceError, WeightsError
from encoders.validation import check_sequence

# fp16 on CPU: recent torch runs it but slowly and not for every op; use bf16 or fp32 on CPU.
PRECISIONS: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}


# Compiled encoders (Embedder.compile) see sub-batches padded to a width multiple of WIDTH_BUCKET
# tokens and of at least MIN_COMPILED_ROWS rows (a batch of 1 would be a graph of its own).
WIDTH_BUCKET = 64
MIN_COMPILED_ROWS = 2
MAX_COMPILED_WIDTH = 1026  # ESM-2's longest input: <cls> + 1,024 residues + <eos>
COMPILE_PROBE = "ACGT" * 25  # valid for both encoders: compiled once at load

# The GEMMs in float8 with scales, the rest in bf16: ESM-2 on fp8 GPUs only (encoders.fp8).
FP8_PRECISION = "fp8"


def torch_dtype(precision: str) -> torch.dtype:
    """Map a config `precision` string (fp32|fp16|bf16) to a torch dtype."""
    try:
        return PRECISIONS[precision]
    except KeyError:
        hint = (" (fp8 is ESM-2's opt-in GPU path)" if precision == FP8_PRECISION else "")
        raise WeightsError(
            f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}{hint}"
        ) from None


def bucket_width(width: int) -> int:
    """A compiled sub-batch's width: `width` rounded up to a multiple of WIDTH_BUCKET."""
    return -(-width // WIDTH_BUCKET) * WIDTH_BUCKET


def sha256_files(paths: Sequence[Path]) -> str:
    """sha256 of one file, or of a manifest of `<sha256>  <name>` lines for several (streamed)."""
    digests = []
    for p in paths:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        digests.append((h.hexdigest(), p.name))
    if len(digests) == 1:
        return digests[0][0]
    manifest = "".join(f"{d}  {name}\n" for d, name in digests)
    return hashlib.sha256(manifest.encode()).hexdigest()


def read_state_file(path: Path, safe_globals: Iterable[Any] = ()) -> Any:
    """torch.load with weights_only=True (no arbitrary pickle code), memory-mapped when possible."""
    if not path.is_file():
        raise WeightsError(f"{path}: weight file not found")
    globs = list(safe_globals)
    try:
        with torch.serialization.safe_globals(globs):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc) and "zip" not in str(exc):
                    raise
                # legacy (non-zip) torch files cannot be memory-mapped
                return torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: cannot be read as a torch weights file: {first}") from exc


def check_keys(found: Iterable[str], expected: Iterable[str], source: str) -> None:
    """Fail with both lists when the mapped state dict and the module disagree (never strict=False)."""
    found_set, expected_set = set(found), set(expected)
    missing = sorted(expected_set - found_set)
    unexpected = sorted(found_set - expected_set)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {missing}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected}")
        raise WeightsError(f"{source}: weights do not match the architecture: " + "; ".join(parts))


def load_into(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Check keys, then assign the (possibly memory-mapped) tensors; shape errors become WeightsError."""
    check_keys(state.keys(), module.state_dict().keys(), source)
    try:
        module.load_state_dict(dict(state), strict=True, assign=True)
    except RuntimeError as exc:
        raise WeightsError(f"{source}: weights do not match the config: {exc}") from exc


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse the device, failing with a clear message when CUDA is asked for but absent."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise WeightsError(f"device {device!r} requested but CUDA is not available")
    return dev


def keep_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """bool [b, t]: True at the real tokens (position < length), False at the padding."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


class Embedder:
    """A loaded encoder: `embed(seqs) -> float32 [n, hidden_size]`, batched by token budget.

    `module(tokens, lengths)` takes a right-padded int64 [b, t] batch and the int64 [b] token
    count of each row, both on the device, and returns pooled [b, hidden] embeddings; positions
    `>= lengths[row]` are padding. The lengths, never the token values, say what is padding: a pad
    id inside a row is an ordinary token there. `tokenize(seqs)` returns one int64 id array per
    sequence.
    """

    def __init__(
        self,
        *,
        name: str,
        kind: str,
        module: torch.nn.Module,
        tokenize: Callable[[list[str]], list[np.ndarray]],
        pad_id: int,
        hidden_size: int,
        device: torch.device,
        precision: str,
        token_budget: int,
        weight_files: Sequence[Path],
        max_rows: int | None = None,
    ) -> None:
        self.name = name
        self.kind = kind
        self.module = module
        self.tokenize = tokenize
        self.pad_id = pad_id
        self.hidden_size = hidden_size
        self.device = device
        self.precision = precision
        self.token_budget = token_budget
        self.max_rows = max_rows
        self.weight_files = list(weight_files)
        self.compiled = False  # compile() sets it: embed() buckets the shapes
        self._sha256: str | None = None

    @property
    def weights_sha256(self) -> str:
        """sha256 of the weight file(s), computed on first use (a 3B checkpoint takes seconds)."""
        if self._sha256 is None:
            self._sha256 = sha256_files(self.weight_files)
        return self._sha256

    def validate(self, seqs: Sequence[str]) -> None:
        """Raise SequenceError for the first sequence the model refuses."""
        for i, s in enumerate(seqs):
            problem = check_sequence(self.kind, s)
            if problem is not None:
                raise SequenceError(i, problem)

    def embed(self, seqs: Sequence[str]) -> np.ndarray:
        """Embed sequences; rows come back in input order as one float32 array [n, hidden]."""
        seqs = list(seqs)
        self.validate(seqs)
        out = np.empty((len(seqs), self.hidden_size), dtype=np.float32)
        if not seqs:
            return out
        ids = self.tokenize(seqs)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        batches = token_budget_batches(lengths, self.token_budget, self.max_rows)
        pooled = []
        with torch.inference_mode():
            for idx in batches:
                width, n = int(lengths[idx].max()), len(idx)
                if self.compiled:  # one graph per width bucket, batch dimension dynamic
                    width, n = bucket_width(width), max(n, MIN_COMPILED_ROWS)
                rows_idx = np.concatenate([idx, np.repeat(idx[:1], n - len(idx))])
                host = np.full((n, width), self.pad_id, dtype=np.int64)
                for row, i in enumerate(rows_idx):  # extra rows repeat the first; cut off below
                    host[row, : lengths[i]] = ids[i]
                tokens = torch.from_numpy(host)
                rows = torch.from_numpy(lengths[rows_idx])
                if self.device.type == "cuda":
                    tokens = tokens.pin_memory().to(self.device, non_blocking=True)
                    rows = rows.pin_memory().to(self.device, non_blocking=True)
                if self.compiled:
                    torch._dynamo.mark_dynamic(tokens, 0)
                    torch._dynamo.mark_dynamic(rows, 0)
                pooled.append(self.module(tokens, rows)[: len(idx)])
            result = torch.cat(pooled).float().cpu().numpy()
        out[np.concatenate(batches)] = result
        return out

    def compile(self) -> None:
        """torch.compile the module (fused non-GEMM kernels), and run it once so that a compile
        failure fails the load with one line instead of failing the first request.

        embed() then rounds each sub-batch's width up to a multiple of WIDTH_BUCKET (padding
        changes nothing: the lengths mark it) and marks the batch dimension dynamic, so there is
        one graph per width bucket and none is compiled again for another batch size. The first
        batch of a new width bucket pays its compile (frames of 100-170 residues: two buckets).
        """
        import torch._dynamo

        limit = -(-MAX_COMPILED_WIDTH // WIDTH_BUCKET) + 1  # every width bucket keeps its graph
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)
        self.module = torch.compile(self.module, dynamic=False)
        self.compiled = True
        try:
            self.embed([COMPILE_PROBE])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise WeightsError(f"{self.name}: torch.compile failed at load: "
                               f"{type(exc).__name__}: {first}") from None

    def __repr__(self) -> str:
        return (
            f"Embedder({self.name}, hidden={self.hidden_size}, device={self.device}, "
            f"precision={self.precision}, token_budget={self.token_budget})"
        )
