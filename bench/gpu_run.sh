#!/usr/bin/env bash
# The GPU benchmark in one call, for a machine with Python and CUDA torch but no network:
# install the carried wheels (`make gpu-wheels`) into a temporary virtual environment that sees
# the machine's own packages (torch) behind them, run bench/gpu_run.py there (real DNABERT-S +
# ESM-2 3B architectures through Triton and predict), print one JSON.
#
#   bench/gpu_run.sh WHEEL_DIR [--json OUT] [--reads N] [--records N]
#   bench/gpu_run.sh WHEEL_DIR --sweep [--json OUT] [--budget-s S]   # ESM-2 3B variants (gpu_sweep.py)
#   PYTHON=python3.12 bench/gpu_run.sh WHEEL_DIR --tiny        # the CPU path (CI)
#
# Why a virtual environment and not PYTHONPATH: tritonserver's Python-backend stub embeds the
# `python3` it finds first on PATH and ignores PYTHONPATH, so the models only see packages that
# interpreter's own site-packages hold. And nvidia-pytriton 0.7.0's stub needs numpy<2: with
# numpy 2 the string tensors it hands to model.py arrive corrupted and the stub dies (seen on an
# H200 machine whose image has numpy 2.5). The carried numpy 1.x wheel therefore goes in front.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WHEELS="${1:?usage: bench/gpu_run.sh WHEEL_DIR [--tiny] [--json OUT] (wheels: make gpu-wheels)}"
shift
PYTHON="${PYTHON:-python3}"
if [ ! -d "$WHEELS" ]; then
  echo "gpu_run.sh: $WHEELS is not a folder (make gpu-wheels downloads the wheels)" >&2
  exit 2
fi
VENV="$(mktemp -d "${TMPDIR:-/tmp}/virnucpro-venv.XXXXXX")"
trap 'rm -rf "$VENV"' EXIT
"$PYTHON" -m venv --without-pip "$VENV"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# Behind the carried wheels: this checkout (encoders/, orchestrator/), then the machine's packages.
echo "$ROOT" > "$SITE/virnucpro_checkout.pth"
"$PYTHON" -c 'import site; print("\n".join(site.getsitepackages()))' > "$SITE/zz_machine_packages.pth"
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if ((${#wheels[@]})); then
  # --no-deps: nvidia-pytriton is only here for its tritonserver; the machine's torch stays.
  "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$SITE" "${wheels[@]}"
fi
PYTHON="$VENV/bin/python"
missing="$("$PYTHON" - <<'PY'
import importlib.util

need = {"torch": "torch", "numpy": "numpy", "tritonclient.grpc": "tritonclient[grpc]",
        "grpc": "grpcio", "google.protobuf": "protobuf", "rapidjson": "python-rapidjson",
        "ml_dtypes": "ml-dtypes", "packaging": "packaging", "esm": "fair-esm",
        "tokenizers": "tokenizers", "pytriton": "nvidia-pytriton"}
absent = []
for module, package in need.items():
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        absent.append(package)
if not absent:
    import numpy
    if int(numpy.__version__.split(".")[0]) >= 2:
        absent.append(f"numpy<2 (this machine has numpy {numpy.__version__}; nvidia-pytriton 0.7.0 needs 1.x)")
print(" ".join(absent))
PY
)"
if [ -n "$missing" ]; then
  echo "gpu_run.sh: not on this machine and not among the wheels in $WHEELS: $missing" >&2
  exit 3
fi
SCRIPT=gpu_run.py
if [ "${1:-}" = "--sweep" ]; then
  SCRIPT=gpu_sweep.py
  shift
fi
"$PYTHON" "$ROOT/bench/$SCRIPT" "$@"
