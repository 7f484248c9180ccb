#!/usr/bin/env bash
# The GPU benchmark in one call, for a machine with Python and CUDA torch but no network:
# install the carried wheels (`make gpu-wheels`) into a temporary folder, run bench/gpu_run.py
# (real DNABERT-S + ESM-2 3B architectures through Triton and predict), print one JSON.
#
#   bench/gpu_run.sh WHEEL_DIR [--json OUT] [--reads N] [--records N]
#   PYTHON=python3.12 bench/gpu_run.sh WHEEL_DIR --tiny        # the CPU path (CI)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WHEELS="${1:?usage: bench/gpu_run.sh WHEEL_DIR [--tiny] [--json OUT] (wheels: make gpu-wheels)}"
shift
PYTHON="${PYTHON:-python3}"
if [ ! -d "$WHEELS" ]; then
  echo "gpu_run.sh: $WHEELS is not a folder (make gpu-wheels downloads the wheels)" >&2
  exit 2
fi
SITE="$(mktemp -d "${TMPDIR:-/tmp}/virnucpro-site.XXXXXX")"
trap 'rm -rf "$SITE"' EXIT
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if ((${#wheels[@]})); then
  # --no-deps: nvidia-pytriton is only here for its tritonserver; the machine's torch stays.
  "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$SITE" "${wheels[@]}"
fi
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
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
print(" ".join(absent))
PY
)"
if [ -n "$missing" ]; then
  echo "gpu_run.sh: not on this machine and not among the wheels in $WHEELS: $missing" >&2
  exit 3
fi
exec "$PYTHON" "$ROOT/bench/gpu_run.py" "$@"
