"""Which of Triton's protocols a shared server leaves open, and the flags that close the rest.

Everyone on the network can reach a cluster's servers. Predict needs inference, health, metadata,
model config and statistics; everything else changes or exposes the server (registering shared
memory, even the Python backend's own /dev/shm region, can abort tritonserver; log and trace
settings slow it down; the repository index and load/unload manage its models), so those need a
header carrying the admin key. One list here serves `orchestrator serve` and, through
`python -m orchestrator.embed.triton.lockdown`, the server images of `deploy/` (stdlib only: the
Triton image has no other dependency of ours).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import sys
from collections.abc import Sequence

from orchestrator.errors import InputError

ADMIN_KEY_ENV = "VIRNUCPRO_ADMIN_KEY"
# The HTTP header an admin sends; not `x-*` or `authorization`, which a gateway or
# `--grpc-header-forward-pattern` may pass on to the models. Over gRPC Triton expects the same
# key behind its own prefix.
ADMIN_HEADER = "virnucpro-admin-key"
ADMIN_GRPC_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
# Triton's protocol groups (the same names for gRPC and HTTP).
RESTRICTED = ("model-repository", "shared-memory", "logging", "trace")
OPEN = ("health", "metadata", "inference", "model-config", "statistics")
MODEL_CONTROL = ("none", "explicit")
MIN_KEY_CHARS = 16
# Triton splits the flag value at ':' and '=': keep the key to characters that cannot confuse it.
_KEY_CHARS = re.compile(r"^[A-Za-z0-9._~+/-]+$")


def check_admin_key(key: str) -> str:
    """The key as given, or InputError when it is too short to guess-proof or has odd characters."""
    if len(key) < MIN_KEY_CHARS or not _KEY_CHARS.match(key):
        raise InputError(f"the admin key must be at least {MIN_KEY_CHARS} characters of "
                         "A-Z a-z 0-9 . _ ~ + / - (e.g. `openssl rand -hex 32`)")
    return key


def admin_key_or_secret(key: str | None) -> str:
    """The given key (checked), else one nobody knows: administrative calls are then refused to all."""
    return check_admin_key(key) if key else secrets.token_hex(32)


def lockdown_flags(admin_key: str | None, model_control: str = "none") -> list[str]:
    """tritonserver flags: RESTRICTED protocols need the admin key in `ADMIN_GRPC_HEADER` (gRPC) or
    `ADMIN_HEADER` (HTTP); model control `explicit` loads every model at start and lets admins
    load/unload later."""
    if model_control not in MODEL_CONTROL:
        raise InputError(f"model control {model_control!r} is not one of {', '.join(MODEL_CONTROL)}")
    rule = f"{','.join(RESTRICTED)}:{ADMIN_HEADER}={admin_key_or_secret(admin_key)}"
    flags = [f"--grpc-restricted-protocol={rule}", f"--http-restricted-api={rule}",
             f"--model-control-mode={model_control}"]
    if model_control == "explicit":
        flags.append("--load-model=*")
    return flags


def main(argv: Sequence[str] | None = None) -> None:
    """Container entry point: exec `tritonserver` with the lock-down flags before the given ones.

    The key comes from $VIRNUCPRO_ADMIN_KEY (empty or unset: nobody's); the model-control mode
    stays Triton's default `none` unless the arguments ask for another.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        flags = lockdown_flags(os.environ.get(ADMIN_KEY_ENV) or None)
    except InputError as exc:
        sys.exit(f"{ADMIN_KEY_ENV}: {exc}")
    if any(a.startswith("--model-control-mode") for a in args):
        flags = [f for f in flags if not f.startswith("--model-control-mode")]
    binary = shutil.which("tritonserver")
    if binary is None:
        sys.exit("tritonserver is not on PATH")
    os.execv(binary, [binary, *flags, *args])


if __name__ == "__main__":
    main()
