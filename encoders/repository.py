"""Read encoder settings from a Triton model repository, so the in-process backend uses the
same weight files, precision and token budget as the served models.

Parameters live in `config.pbtxt` (or `configs/<name>.pbtxt`) as string_value entries:
`weights` (path relative to the version folder, default "weights"), `precision`
(fp32|fp16|bf16, default fp32; fp8 for ESM-2 on fp8 GPUs), `token_budget` (int, default: the
encoder's own), `compile` (true|false, default false: torch.compile with bucketed shapes).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from encoders.errors import WeightsError

DEFAULT_PARAMS = {"weights": "weights", "precision": "fp32"}
# The checksum parameter: `weights_sha256_<version>` for one version, else `weights_sha256`.
CHECKSUM_PARAMETER = "weights_sha256"


def read_config(config_path: str | Path) -> Any:
    """Parse a config.pbtxt into Triton's ModelConfig protobuf message."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    path = Path(config_path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read model config: {exc.strerror or exc}") from None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as exc:
        raise WeightsError(f"{path}: not a valid Triton model config: {exc}") from None


def parameters(config: Any) -> dict[str, str]:
    """string_value parameters of a ModelConfig message, or of Triton's JSON form (model.py args).

    Defaults from DEFAULT_PARAMS fill in what the config leaves out.
    """
    out = dict(DEFAULT_PARAMS)
    if isinstance(config, Mapping):
        for key, value in (config.get("parameters") or {}).items():
            out[key] = value["string_value"] if isinstance(value, Mapping) else str(value)
    else:
        for key, value in config.parameters.items():
            out[key] = value.string_value
    return out


def positive_int(name: str, raw: str | None) -> int | None:
    """A config parameter that must be an integer >= 1 (None when absent or empty)."""
    text = (raw or "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise WeightsError(f"{name} must be an integer, got {raw!r}") from None
    if value < 1:
        raise WeightsError(f"{name} must be >= 1, got {value}")
    return value


def compile_flag(params: Mapping[str, str]) -> bool:
    """The `compile` parameter: "true" compiles the encoder at load; absent, empty or "false":
    eager (the default)."""
    raw = (params.get("compile") or "").strip().lower()
    if raw not in ("", "true", "false"):
        raise WeightsError(f"compile must be true or false, got {params.get('compile')!r}")
    return raw == "true"


def token_budget(params: Mapping[str, str]) -> int | None:
    """The `token_budget` parameter as an int (None when absent or empty)."""
    return positive_int("token_budget", params.get("token_budget"))


def latest_version(model_dir: Path) -> Path:
    """The highest numeric version folder of a model (Triton's default version policy)."""
    versions = sorted(
        (int(p.name), p) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()
    ) if model_dir.is_dir() else []
    if not versions:
        raise WeightsError(f"{model_dir}: no numeric version folder (expected {model_dir}/1)")
    return versions[-1][1]


def weights_for(
    model_repository: str | Path, model_name: str, config_name: str | None = None
) -> tuple[Path, dict[str, str]]:
    """(weights path, parameters) for a model, resolved exactly as its model.py does.

    `config_name` selects `configs/<name>.pbtxt` (as tritonserver's --model-config-name);
    None reads `config.pbtxt`.
    """
    model_dir = Path(model_repository) / model_name
    if config_name:
        cfg_path = model_dir / "configs" / f"{config_name}.pbtxt"
        if not cfg_path.is_file():
            cfg_path = model_dir / "config.pbtxt"
    else:
        cfg_path = model_dir / "config.pbtxt"
    if not cfg_path.is_file():
        raise WeightsError(f"{cfg_path}: not found; is {model_repository} a model repository "
                           f"built by `python -m export`?")
    params = parameters(read_config(cfg_path))
    weights = latest_version(model_dir) / params["weights"]
    if not weights.exists():
        raise WeightsError(f"{weights}: weights not found (parameter weights={params['weights']!r} "
                           f"in {cfg_path}); run `python -m export demo|pretrained`")
    return weights, params


def expected_sha256(params: Mapping[str, str | None], version: str) -> str | None:
    """The checksum the config states for `version` (None when it states none)."""
    return params.get(f"{CHECKSUM_PARAMETER}_{version}") or params.get(CHECKSUM_PARAMETER) or None


def verify_weights(kind: str, model: str, version: str, weights: Path,
                   params: Mapping[str, str | None]) -> str | None:
    """Hash the version's weight files and compare with the config's checksum, before loading.

    Raises WeightsError (one line: model, version, expected and actual) on a mismatch, so a server
    never serves other weights under the checksum clients pin. Returns a warning when the config
    states no checksum (the files then load unverified), else None.
    """
    from encoders import weights_sha256

    expected = expected_sha256(params, version)
    if expected is None:
        return (f"{model} version {version}: no {CHECKSUM_PARAMETER}_{version} or "
                f"{CHECKSUM_PARAMETER} parameter in its config; loading {weights} unverified")
    actual = weights_sha256(kind, weights)
    if actual != expected:
        raise WeightsError(f"{model} version {version}: weights checksum mismatch: config expects "
                           f"{expected}, the files in {weights} have {actual}; refusing to load")
    return None
