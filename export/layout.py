"""Where export writes things, copying the committed model folders, and checking the result."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from orchestrator.errors import InputError

MODELS = ("dnabert_s", "esm2")
CHUNK_SIZES = (300, 500)
SOURCE_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "weights")


def repository_dir(out: Path) -> Path:
    return out / "model_repository"


def weights_dir(out: Path, model: str, version: int | None = None) -> Path:
    """Where a model's weights go: the `weights` parameter's default, inside its version folder
    (1 unless a new version is added)."""
    return repository_dir(out) / model / str(version or 1) / "weights"


def classifier_path(out: Path, chunk_size: int) -> Path:
    return out / "classifiers" / f"{chunk_size}_model.pth"


def prepare_version_dir(out: Path, model: str, version: int, source: Path = SOURCE_REPOSITORY
                        ) -> Path:
    """A new version folder next to the existing ones of OUT/model_repository/<model> (its
    model.py from the committed version 1); return its weights dir. The older versions and the
    configs stay as they are (InputError: no such model, or the version exists already)."""
    dest = repository_dir(out) / model
    if not (dest / "config.pbtxt").is_file():
        raise InputError(f"{dest}: no exported model to add version {version} to; export it "
                         "without --version first")
    if (dest / str(version)).exists():
        raise InputError(f"{dest / str(version)} exists already; choose a new version number "
                         "(versions served now: " + ", ".join(_versions(dest)) + ")")
    shutil.copytree(source / model / "1", dest / str(version), ignore=_SKIP)
    wdir = weights_dir(out, model, version)
    wdir.mkdir(parents=True, exist_ok=True)
    return wdir


def _versions(model_dir: Path) -> list[str]:
    return sorted((p.name for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()), key=int)


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


_EMBEDDING_DIMS = re.compile(r'(name:\s*"EMBEDDING"[^}]*?dims:\s*)\[\s*-1\s*\]', re.S)
_STAMPED_DIMS = re.compile(r'name:\s*"EMBEDDING"[^}]*?dims:\s*\[\s*(\d+)\s*\]', re.S)
_PARAMETERS = re.compile(r"^parameters\s*\[\n", re.M)
_CHECKSUM = re.compile(r'key:\s*"weights_sha256"\s*value:\s*\{\s*string_value:\s*"([^"]*)"')


def _parameter(key: str, value: str) -> str:
    return f'  {{\n    key: "{key}"\n    value: {{ string_value: "{value}" }}\n  }},\n'


def stamp_configs(out: Path, model: str, hidden: int, sha256: str) -> None:
    """Write what the weights decide into every exported config of `model` (CPU and GPU).

    `EMBEDDING` dims become `[hidden]`, so model metadata states the width the orchestrator
    checks against the classifier; a `weights_sha256` parameter lets clients record which weights
    the server holds. The committed configs keep `[-1]`: their width is unknown until export.
    """
    model_dir = repository_dir(out) / model
    entry = _parameter("weights_sha256", sha256)
    for config in [model_dir / "config.pbtxt", *sorted((model_dir / "configs").glob("*.pbtxt"))]:
        text = config.read_text()
        text, n_dims = _EMBEDDING_DIMS.subn(rf"\g<1>[ {hidden} ]", text)
        text, n_params = _PARAMETERS.subn(lambda m: m.group(0) + entry, text)
        if n_dims != 1 or n_params != 1:
            raise RuntimeError(f"{config}: expected one EMBEDDING dims [-1] and one parameters block")
        config.write_text(text)


def stamp_version(out: Path, model: str, version: int, hidden: int, sha256: str) -> None:
    """Record a new version's weights checksum in every config of `model`: one
    `weights_sha256_<version>` parameter per version (a config is shared by all versions; the
    versions that predate this get the checksum `weights_sha256` states). The width must be the
    one the configs state: another width is another model, not a new version of it."""
    model_dir = repository_dir(out) / model
    for config in [model_dir / "config.pbtxt", *sorted((model_dir / "configs").glob("*.pbtxt"))]:
        text = config.read_text()
        dims = _STAMPED_DIMS.search(text)
        if dims is None or int(dims.group(1)) != hidden:
            raise InputError(f"{config}: version {version} of {model} gives width {hidden}, the "
                             f"config states {dims.group(1) if dims else 'none'}; a new width is "
                             "a new model (export it into another repository)")
        current = _CHECKSUM.search(text)
        entries = "".join(_parameter(f"weights_sha256_{v}", current.group(1))
                          for v in _versions(model_dir)
                          if v != str(version) and current and f'"weights_sha256_{v}"' not in text)
        entries += _parameter(f"weights_sha256_{version}", sha256)
        config.write_text(_PARAMETERS.sub(lambda m, e=entries: m.group(0) + e, text, count=1))


def write_manifest(out: Path, kind: str, extra: dict[str, object]) -> Path:
    """OUT/export.json: what was exported and the sha256 of every weight and classifier file."""
    from encoders.common import sha256_files

    files = sorted(
        p for p in out.rglob("*")
        if p.is_file() and ("weights" in p.parts or "classifiers" in p.parts)
    )
    manifest = {
        "kind": kind,
        **extra,
        "files": {str(p.relative_to(out)): sha256_files([p]) for p in files},
    }
    path = out / "export.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path
