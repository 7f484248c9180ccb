"""`orchestrator train`: fit the VirNucPro MLP classifier on embeddings files.

The original recipe (VirNucPro `train.py`): `Linear(d -> 512) -> BatchNorm1d -> ReLU -> Dropout(0.5)
-> Linear(512 -> 2)`, cross-entropy, SGD(lr 2e-4, momentum 0.9), StepLR(10, 0.85) stepped per
epoch, shuffled batches of 32, early stopping on validation loss with patience 5. Three of its bugs
are fixed here:

1. It kept `best = model.state_dict()`, a live reference to the weights, so the "best" model was
   really the last epoch's. Here the best validation-loss epoch's state is cloned and restored.
2. It saved a model only when early stopping fired. Here the best epoch's weights are always saved,
   also when the maximum number of epochs is reached.
3. It split frames at random, so frames (and overlapping chunks) of one genome sat on both sides and
   validation rewarded memorising genomes. Here whole records are held out (`split_records`).

Memory: the features of all files are read into one float32 array, n frames x d x 4 bytes (13 KB
per frame for DNABERT-S + ESM-2 3B, d = 3328). Training and validation gather their batches from
it by index; no per-split copy is made.

Writes the classifier (.safetensors, the file `predict --classifier` takes) and a model card
(`<name>.card.json`) that records the data, the split, the recipe, every epoch and the held-out
metrics of exactly the saved weights. Nothing time-dependent is recorded: the same files, options
and seed give the same model and card.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator import __version__
from orchestrator.atomic import atomic_path, write_json_atomic
from orchestrator.classify.classifier import load_classifier, save_classifier_safetensors
from orchestrator.classify.consensus import chunk_consensus
from orchestrator.digest import file_sha256
from orchestrator.errors import InputError
from orchestrator.learning.evaluate import chunk_metrics, frame_metrics
from orchestrator.write.embeddings import check_compatible, iter_blocks, read_header, record_id_of

if TYPE_CHECKING:
    import torch

log = logging.getLogger("orchestrator")

BALANCE_MODES = ("none", "downsample", "weight")
MODEL_SUFFIX = ".safetensors"
CARD_SUFFIX = ".card.json"
CARD_FORMAT = "virnucpro-classifier-card"
MODEL_FORMAT = "virnucpro-classifier"
# Class index = label = the classifier's output column: 0 others, 1 virus.
SIDES = ("other", "viral")
# File `label` attributes that clearly name one side (compared lower-cased).
_LABEL_WORDS = (
    frozenset({"host", "other", "others", "non-viral", "nonviral", "non_viral", "non-virus"}),
    frozenset({"viral", "virus", "viruses"}),
)
_EVAL_ROWS = 8192  # validation rows per forward pass: bounded memory for any validation size


@dataclass(frozen=True)
class TrainConfig:
    """The hyper-parameters of one training run (defaults: the original's recipe)."""

    epochs: int = 200
    batch_size: int = 32
    lr: float = 2e-4
    momentum: float = 0.9
    step_size: int = 10
    gamma: float = 0.85
    patience: int = 5
    hidden: int = 512
    dropout: float = 0.5
    seed: int = 42

    def check(self) -> None:
        """Refuse values torch would reject late (or silently misuse) with one line each."""
        positive = {"epochs": self.epochs, "step_size": self.step_size, "patience": self.patience,
                    "hidden": self.hidden}
        for name, value in positive.items():
            if value < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.batch_size < 2:  # BatchNorm cannot train on batches of one row
            raise InputError(f"--batch-size must be at least 2, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"--lr must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise InputError(f"--momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.gamma <= 1:
            raise InputError(f"--gamma must be in (0, 1], got {self.gamma}")
        if not 0 <= self.dropout < 1:
            raise InputError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.seed < 0:
            raise InputError(f"--seed must be a non-negative integer, got {self.seed}")


@dataclass
class TrainResult:
    """What `train_classifier` found: the best epoch's weights and the whole history."""

    state: dict[str, np.ndarray]  # the best epoch's state dict, original key names
    history: list[dict[str, float]]  # per epoch: epoch, train_loss, val_loss, val_accuracy, lr
    best_epoch: int  # 1-based
    stopped_early: bool
    stop_reason: str

    @property
    def best_val_loss(self) -> float:
        return self.history[self.best_epoch - 1]["val_loss"]


# --------------------------------------------------------------------------- split


def _record_codes(record_ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Per frame the index of its record in the sorted record names (order of files is irrelevant)."""
    first: dict[str, int] = {}
    codes = np.fromiter((first.setdefault(r, len(first)) for r in record_ids), dtype=np.int64,
                        count=len(record_ids))
    names = list(first)
    order = sorted(range(len(names)), key=names.__getitem__)
    rank = np.empty(len(names), dtype=np.int64)
    rank[order] = np.arange(len(names))
    return rank[codes], [names[i] for i in order]


def split_records(record_ids: Sequence[str], labels: np.ndarray, val_fraction: float,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) frame indices, ascending, holding out whole records.

    Frames of one record are never on both sides: overlapping chunks of one genome are near copies,
    so a frame-level split would measure memorisation. Records are stratified by the labels their
    frames carry (other only, viral only, both): each stratum with k >= 2 records puts
    round(k * val_fraction), at least 1 and at most k - 1, of them into validation; a stratum of one
    record stays in training. The choice is a seeded permutation of the sorted record names, so it
    depends only on the records, the fraction and the seed.
    """
    y = np.asarray(labels)
    if len(y) != len(record_ids):
        raise ValueError(f"{len(record_ids)} record IDs but {len(y)} labels")
    codes, names = _record_codes(record_ids)
    n_records = len(names)
    has = [np.bincount(codes, weights=(y == c), minlength=n_records) > 0 for c in (0, 1)]
    stratum = has[0].astype(np.int64) + 2 * has[1]
    rng = np.random.default_rng(seed)
    val_record = np.zeros(n_records, dtype=bool)
    for s in (1, 2, 3):
        members = np.flatnonzero(stratum == s)
        k = len(members)
        if k < 2:
            continue
        n_val = min(k - 1, max(1, int(k * val_fraction + 0.5)))
        val_record[rng.permutation(members)[:n_val]] = True
    in_val = val_record[codes]
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


# --------------------------------------------------------------------------- model and training


def _mlp(width: int, hidden: int, dropout: float) -> torch.nn.Module:
    """The original MLPClassifier; attribute names give the published state-dict keys."""
    import torch
    from torch import nn

    class MLPClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden_layer = nn.Linear(width, hidden)
            self.bn1 = nn.BatchNorm1d(hidden)
            self.output_layer = nn.Linear(hidden, 2)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.bn1(self.hidden_layer(x)))
            return self.output_layer(self.dropout(x))

    return MLPClassifier()


def train_classifier(features: np.ndarray, labels: np.ndarray, train_idx: np.ndarray,
                     val_idx: np.ndarray, config: TrainConfig | None = None, *,
                     class_weight: Sequence[float] | None = None,
                     progress: bool = False, device: str = "cpu") -> TrainResult:
    """Train on rows `train_idx` of `features`, early-stop on rows `val_idx`; no file I/O.

    Takes the whole feature array plus index arrays (not copies of the splits) so that a large
    training set is held once. `class_weight` ([other, viral]) weights the training loss only; the
    validation loss is the plain mean cross-entropy over validation frames, the quantity early
    stopping and the card report. Deterministic for a given seed and torch thread count on the
    CPU; the global torch RNG is left as it was. `device` "cuda" moves the features there once
    (n x d x 4 bytes of GPU memory).
    """
    import torch
    from torch.nn import functional as F

    config = config or TrainConfig()
    config.check()
    train_idx = np.asarray(train_idx, dtype=np.int64)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    if len(train_idx) < 2:
        raise InputError(f"training needs at least 2 frames, the split left {len(train_idx)}")
    if len(val_idx) < 1:
        raise InputError("the validation set is empty; early stopping needs held-out frames")
    # shares memory on the CPU
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)).to(device)
    y = torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device)
    weight = None if class_weight is None else torch.tensor(list(class_weight), dtype=torch.float32,
                                                            device=device)
    rows = torch.from_numpy(train_idx).to(device)
    history: list[dict[str, float]] = []
    best_loss, best_epoch, since_best = math.inf, 0, 0
    best_state: dict[str, torch.Tensor] = {}
    stopped_early = False
    stop_reason = f"reached the maximum of {config.epochs} epochs"
    with torch.random.fork_rng(devices=[] if device == "cpu" else None):
        torch.manual_seed(config.seed)  # weight init and dropout masks
        model = _mlp(x.shape[1], config.hidden, config.dropout).to(device)
        shuffle = torch.Generator().manual_seed(config.seed)  # on the CPU: same batches anywhere
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=config.step_size, gamma=config.gamma)
        epochs = range(1, config.epochs + 1)
        if progress:
            from tqdm import tqdm

            epochs = tqdm(epochs, desc="train", unit="epoch")
        for epoch in epochs:
            lr = float(opt.param_groups[0]["lr"])
            model.train()
            order = rows[torch.randperm(len(rows), generator=shuffle).to(device)]
            # BatchNorm1d in training mode cannot normalise a batch of one row (torch raises
            # "Expected more than 1 value per channel"); a last batch of exactly one frame is left
            # out of this epoch. The shuffle puts a different frame there each epoch.
            n = len(order) - 1 if len(order) % config.batch_size == 1 else len(order)
            total = 0.0
            for start in range(0, n, config.batch_size):
                batch = order[start:min(n, start + config.batch_size)]
                opt.zero_grad()
                loss = F.cross_entropy(model(x[batch]), y[batch], weight=weight)
                loss.backward()
                opt.step()
                total += loss.item() * len(batch)
            sched.step()
            train_loss = total / n
            val_loss, val_accuracy = _validate(model, x, y, val_idx)
            history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                            "val_accuracy": val_accuracy, "lr": lr})
            log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val acc %.4f",
                     epoch, config.epochs, train_loss, val_loss, val_accuracy)
            if progress:
                epochs.set_postfix(val_loss=f"{val_loss:.4f}", val_acc=f"{val_accuracy:.3f}")
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                raise InputError(f"training diverged at epoch {epoch} (loss {train_loss}, "
                                 f"validation loss {val_loss}); try a smaller --lr")
            if val_loss < best_loss:
                best_loss, best_epoch, since_best = val_loss, epoch, 0
                # clone: state_dict() returns the live tensors that the next step overwrites
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
                if since_best >= config.patience:
                    stopped_early = True
                    stop_reason = (f"validation loss did not improve for {config.patience} epochs "
                                   f"after epoch {best_epoch}")
                    break
        if progress:
            epochs.close()
    model.load_state_dict(best_state)
    model.cpu()
    state = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    return TrainResult(state=state, history=history, best_epoch=best_epoch,
                       stopped_early=stopped_early, stop_reason=stop_reason)


def _validate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
              val_idx: np.ndarray) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in eval mode; virus iff logit 1 > logit 0, as predict."""
    import torch
    from torch.nn import functional as F

    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(val_idx), _EVAL_ROWS):
            rows = torch.from_numpy(val_idx[start:start + _EVAL_ROWS]).to(x.device)
            logits = model(x[rows]).double()
            loss_sum += float(F.cross_entropy(logits, y[rows], reduction="sum"))
            correct += int(((logits[:, 1] > logits[:, 0]).long() == y[rows]).sum())
    return loss_sum / len(val_idx), correct / len(val_idx)


# --------------------------------------------------------------------------- loading


@dataclass
class _Data:
    features: np.ndarray  # [n, d] float32, all files
    labels: np.ndarray  # [n] int64, 1 viral
    record_ids: list[str]  # per frame; one shared str object per record
    chunk_keys: list[str]  # per frame: file index + chunk ID (chunk IDs are unique per file only)
    files: list[dict[str, Any]]  # card entries
    chunk_size: int
    models: list[dict[str, Any]]


def card_path_for(output: str | Path) -> Path:
    """`model.safetensors` -> `model.card.json`, beside it."""
    p = Path(output)
    stem = p.name[: -len(MODEL_SUFFIX)] if p.name.endswith(MODEL_SUFFIX) else p.name
    return p.with_name(stem + CARD_SUFFIX)


def _sources(viral: Sequence[str], other: Sequence[str]) -> list[tuple[str, int]]:
    """(path, label) per file; refuses a missing side and a file given twice."""
    if not viral:
        raise InputError("no viral embeddings file given (--viral); training needs both classes")
    if not other:
        raise InputError("no non-viral embeddings file given (--other); training needs both classes")
    seen: dict[str, tuple[str, int]] = {}
    sources = []
    for label, paths in ((1, viral), (0, other)):
        for path in paths:
            key = os.path.realpath(path)
            if key in seen:
                first, first_label = seen[key]
                raise InputError(f"{path}: given twice (as --{SIDES[first_label]} {first} and as "
                                 f"--{SIDES[label]} {path})")
            seen[key] = (path, label)
            sources.append((str(path), label))
    return sources


def _load(sources: list[tuple[str, int]]) -> _Data:
    """Check every header against the first file, then read all vectors into one array."""
    headers = []
    for path, label in sources:
        header, n = read_header(path)
        if n == 0:
            raise InputError(f"{path}: holds no frames (an empty embeddings file)")
        if headers:
            check_compatible(path, header, headers[0][0], headers[0][1])
        word = (header.label or "").strip().lower()
        if word in _LABEL_WORDS[1 - label]:
            log.warning("%s: its label is %r but it was given as --%s; training uses it as %s",
                        path, header.label, SIDES[label], SIDES[label])
        headers.append((path, header, n))
    width = sum(int(m["width"]) for m in headers[0][1].models)
    total = sum(n for _, _, n in headers)
    features = np.empty((total, width), dtype=np.float32)
    labels = np.empty(total, dtype=np.int64)
    record_ids: list[str] = []
    chunk_keys: list[str] = []
    shared: dict[str, str] = {}
    side_records: tuple[set[str], set[str]] = (set(), set())
    files = []
    row = 0
    for (path, label), (_, header, n) in zip(sources, headers, strict=True):
        start = row
        file_records: set[str] = set()
        for _frames, chunk_ids, block in iter_blocks(path):
            if block.shape[1] != width:
                raise InputError(f"{path}: vectors are {block.shape[1]} wide, but its models say "
                                 f"{width}")
            if row + len(block) > start + n:
                raise InputError(f"{path}: holds more rows than its header says ({n})")
            features[row:row + len(block)] = block
            chunk_keys.extend(f"{len(files)}\t{cid}" for cid in chunk_ids)
            for cid in chunk_ids:
                rid = record_id_of(cid)
                rid = shared.setdefault(rid, rid)
                record_ids.append(rid)
                file_records.add(rid)
            row += len(block)
        if row != start + n:
            raise InputError(f"{path}: holds {row - start} rows, but its header says {n}")
        labels[start:row] = label
        side_records[label].update(file_records)
        files.append({"path": path, "sha256": file_sha256(path), "side": SIDES[label], "label": label,
                      "file_label": header.label, "frames": n, "records": len(file_records)})
    both = side_records[0] & side_records[1]
    if both:
        log.warning("%d record ID(s) appear in both viral and non-viral files (e.g. %s); each such "
                    "record is kept on one side of the split with its frames' labels as given",
                    len(both), min(both))
    first = headers[0][1]
    return _Data(features=features, labels=labels, record_ids=record_ids, chunk_keys=chunk_keys,
                 files=files,
                 chunk_size=first.chunk_size, models=first.models)


# --------------------------------------------------------------------------- the run


def _counts(labels: np.ndarray, codes: np.ndarray, idx: np.ndarray) -> dict[str, dict[str, int]]:
    y = labels[idx]
    return {SIDES[c]: {"frames": int((y == c).sum()), "records": len(np.unique(codes[idx[y == c]]))}
            for c in (0, 1)}


def _balance(mode: str, labels: np.ndarray, train_idx: np.ndarray,
             seed: int) -> tuple[np.ndarray, list[float] | None]:
    """(training rows used, class weights or None); validation is never resampled."""
    counts = np.bincount(labels[train_idx], minlength=2)
    if mode == "weight":
        return train_idx, [float(len(train_idx) / (2 * c)) for c in counts]
    if mode == "downsample":
        minority = int(np.argmin(counts))
        keep = train_idx[labels[train_idx] == minority]
        majority = train_idx[labels[train_idx] != minority]
        rng = np.random.default_rng([seed, 1])  # its own stream: independent of the split's
        chosen = rng.choice(majority, size=int(counts[minority]), replace=False)
        return np.sort(np.concatenate([keep, chosen])), None
    return train_idx, None


def _check_output(output: Path, sources: list[tuple[str, int]]) -> None:
    if not output.name.endswith(MODEL_SUFFIX) or output.name == MODEL_SUFFIX:
        raise InputError(f"{output}: the classifier is written as safetensors; name it *{MODEL_SUFFIX}")
    if not output.parent.is_dir():
        raise InputError(f"{output}: folder {output.parent} does not exist")
    targets = {os.path.realpath(output), os.path.realpath(card_path_for(output))}
    for path, _ in sources:
        if os.path.realpath(path) in targets:
            raise InputError(f"{path}: is an input; the output would overwrite it")


def _device(requested: str, torch: Any) -> str:
    if requested not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda, got {requested!r}")
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise InputError("--device cuda, but torch sees no CUDA GPU here (a CPU-only torch build, "
                         "or no GPU on this node)")
    return "cuda" if requested == "cuda" or (requested == "auto" and available) else "cpu"


def _save_model(state: dict[str, np.ndarray], output: Path, metadata: dict[str, str]) -> None:
    """A reader never sees a partial classifier."""
    with atomic_path(output) as tmp:
        save_classifier_safetensors(state, tmp, metadata=metadata)


def run_train(*, viral: Sequence[str], other: Sequence[str], output: str, epochs: int = 200,
              batch_size: int = 32, lr: float = 2e-4, momentum: float = 0.9, step_size: int = 10,
              gamma: float = 0.85, patience: int = 5, val_fraction: float = 0.2, hidden: int = 512,
              dropout: float = 0.5, balance: str = "none", seed: int = 42,
              progress: bool = False, device: str = "auto") -> dict[str, Any]:
    """Train a classifier on viral (label 1) and other (label 0) embeddings files; returns the card.

    Everything that can be refused is checked before any vector is read. The held-out metrics are
    computed from the written file through the loader predict uses. `device`: auto (a GPU when
    torch sees one), cpu or cuda.
    """
    import torch

    device = _device(device, torch)

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
                         step_size=step_size, gamma=gamma, patience=patience, hidden=hidden,
                         dropout=dropout, seed=seed)
    config.check()
    if balance not in BALANCE_MODES:
        raise InputError(f"--balance must be one of {', '.join(BALANCE_MODES)}, got {balance!r}")
    if not 0 < val_fraction < 1:
        raise InputError(f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    out = Path(output)
    card_path = card_path_for(out)
    sources = _sources(viral, other)
    _check_output(out, sources)
    data = _load(sources)

    codes, names = _record_codes(data.record_ids)
    if len(names) < 2:
        raise InputError(f"only {len(names)} record in all files; a record-level split needs at "
                         "least 2 records")
    train_idx, val_idx = split_records(data.record_ids, data.labels, val_fraction, seed)
    if not len(val_idx):
        raise InputError("no record can be held out for validation: each class has a single record; "
                         "give at least 2 records of a class")
    val_counts = _counts(data.labels, codes, val_idx)
    for side, count in val_counts.items():
        if not count["frames"]:
            log.warning("validation holds no %s frames (too few %s records to hold one out); "
                        "held-out metrics cover one class only", side, side)
    used_idx, class_weight = _balance(balance, data.labels, train_idx, seed)
    train_counts = _counts(data.labels, codes, train_idx)
    for side, count in _counts(data.labels, codes, used_idx).items():
        train_counts[side]["frames_used"] = count["frames"]
    log.info("training on %d frames (%d records), validating on %d frames (%d records)",
             len(used_idx), len(np.unique(codes[train_idx])), len(val_idx),
             len(np.unique(codes[val_idx])))

    result = train_classifier(data.features, data.labels, used_idx, val_idx, config,
                              class_weight=class_weight, progress=progress, device=device)
    trained_on = [{k: m.get(k) for k in ("name", "weights_sha256", "width")} for m in data.models]
    _save_model(result.state, out, {"format": MODEL_FORMAT, "chunk_size": str(data.chunk_size),
                                    "card": card_path.name,
                                    "models": json.dumps(trained_on, sort_keys=True)})

    # The card's metrics describe the saved file exactly as predict will load and apply it.
    classifier = load_classifier(out)
    probs = np.concatenate([classifier.predict_proba(data.features[val_idx[i:i + _EVAL_ROWS]])
                            for i in range(0, len(val_idx), _EVAL_ROWS)])
    # chunks as predict scores them: max over their frames (chunk IDs qualified by file)
    val_keys = [data.chunk_keys[i] for i in val_idx]
    keys, maxima = chunk_consensus(val_keys, probs)
    first_row: dict[str, int] = {}
    for i, key in enumerate(val_keys):
        first_row.setdefault(key, i)
    chunk_labels = data.labels[val_idx][[first_row[k] for k in keys]]
    metrics = {"frame": frame_metrics(data.labels[val_idx], probs),
               "chunk": chunk_metrics(chunk_labels, maxima)}

    card = {
        "format": CARD_FORMAT,
        "tool_version": __version__,
        "classifier": {"file": out.name, "sha256": classifier.sha256,
                       "input_width": classifier.input_width, "hidden": classifier.hidden_width},
        "data": data.files,
        "chunk_size": data.chunk_size,
        "models": data.models,
        "split": {"unit": "record", "stratified": True, "val_fraction": val_fraction, "seed": seed,
                  "train": train_counts, "validation": val_counts},
        "recipe": {**asdict(config), "val_fraction": val_fraction, "balance": balance,
                   "class_weight": class_weight, "optimizer": "SGD", "scheduler": "StepLR per epoch",
                   "loss": "cross-entropy", "early_stopping": "validation loss",
                   "device": device, "torch_version": torch.__version__,
                   "torch_threads": torch.get_num_threads()},
        "epochs": result.history,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early,
        "stop_reason": result.stop_reason,
        "validation_metrics": metrics,
    }
    write_json_atomic(card_path, card)
    log.info("best epoch %d of %d (%s): validation loss %.4f; wrote %s and %s",
             result.best_epoch, len(result.history), result.stop_reason, result.best_val_loss,
             out, card_path)
    return card
