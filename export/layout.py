"""Where export writes things, copying the committed model folders, and checking the result."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

MODELS = ("dnabert_s", "esm2")
CHUNK_SIZES = (300, 500)
SOURCE_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "weights")


def repository_dir(out: Path) -> Path:
    return out / "model_repository"


def weights_dir(out: Path, model: str) -> Path:
    """Where a model's weights go: the `weights` parameter's default, inside version 1."""
    return repository_dir(out) / model / "1" / "weights"


def classifier_path(out: Path, chunk_size: int) -> Path:
    return out / "classifiers" / f"{chunk_size}_model.pth"


def prepare_model_dir(out: Path, model: str, source: Path = SOURCE_REPOSITORY) -> Path:
    """Replace OUT/model_repository/<model> by a copy of the committed folder; return weights dir.

    The copy carries config.pbtxt, configs/gpu.pbtxt and 1/model.py, whatever the committed
    folder holds except weights and caches. Missing sources are reported, not fatal, so weights
    can be exported before the Triton configs exist.
    """
    dest = repository_dir(out) / model
    if dest.exists():
        shutil.rmtree(dest)
    src = source / model
    if src.is_dir():
        shutil.copytree(src, dest, ignore=_SKIP)
    else:
        print(f"export: warning: {src} does not exist; {dest} gets weights only", file=sys.stderr)
    wdir = weights_dir(out, model)
    wdir.mkdir(parents=True, exist_ok=True)
    return wdir


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_manifest(out: Path, kind: str, extra: dict[str, object]) -> Path:
    """OUT/export.json: what was exported and the sha256 of every weight and classifier file."""
    files = sorted(
        p for p in out.rglob("*")
        if p.is_file() and ("weights" in p.parts or "classifiers" in p.parts)
    )
    manifest = {
        "kind": kind,
        **extra,
        "files": {str(p.relative_to(out)): file_sha256(p) for p in files},
    }
    path = out / "export.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
