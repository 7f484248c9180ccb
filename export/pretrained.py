"""Fetch the published weights into the artifacts layout (needs network access to the hubs).

Sources: DNABERT-S at the hub revision `--dnabert-revision` names (default `main`: no commit hash
could be looked up offline; export.json records every fetched file's sha256), ESM-2 3B from
fair-esm's download site, the classifiers from the original VirNucPro repository at the commit the
golden files come from.
`--local-dir DIR` takes files already copied onto an offline machine (same file names) instead.
Every file is checked by the same loader functions the demo path and the servers use.
"""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from orchestrator.errors import InputError, OrchestratorError

DNABERT_S_REPO = "zhihan1996/DNABERT-S"
DNABERT_S_REVISION = "main"  # override with --dnabert-revision <commit> to pin a hub commit
ESM2_NAME = "esm2_t36_3B_UR50D"
VIRNUCPRO_COMMIT = "0f93f2755a7ea1acd3ff1bcf182892f960ef3326"
CONNECT_TIMEOUT_S = 10.0


class DownloadError(OrchestratorError):
    """A source cannot be reached or a download failed (exit 3: try again or copy files in)."""

    exit_code = 3


@dataclass(frozen=True)
class Source:
    url: str
    dest: str  # path relative to OUT


def sources(dnabert_revision: str = DNABERT_S_REVISION, version: int | None = None
            ) -> list[Source]:
    """Every file `pretrained` writes, and where it comes from; with `version`, only the encoder
    weights, into that version's folder."""
    hub = f"https://huggingface.co/{DNABERT_S_REPO}/resolve/{dnabert_revision}"
    esm = "https://dl.fbaipublicfiles.com/fair-esm"
    gh = f"https://raw.githubusercontent.com/Li-Jing-1997/VirNucPro/{VIRNUCPRO_COMMIT}"
    dn = f"model_repository/dnabert_s/{version or 1}/weights"
    es = f"model_repository/esm2/{version or 1}/weights"
    files = [
        Source(f"{hub}/config.json", f"{dn}/config.json"),
        Source(f"{hub}/tokenizer.json", f"{dn}/tokenizer.json"),
        Source(f"{hub}/pytorch_model.bin", f"{dn}/pytorch_model.bin"),
        Source(f"{esm}/regression/{ESM2_NAME}-contact-regression.pt",
               f"{es}/{ESM2_NAME}-contact-regression.pt"),
        Source(f"{esm}/models/{ESM2_NAME}.pt", f"{es}/{ESM2_NAME}.pt"),
        Source(f"{gh}/300_model.pth", "classifiers/300_model.pth"),
        Source(f"{gh}/500_model.pth", "classifiers/500_model.pth"),
    ]
    return files if version is None else [s for s in files if "model_repository" in s.dest]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def probe(urls: list[str], timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within `timeout` per host when a source host cannot be reached (before any download)."""
    seen = set()
    for url in urls:
        host = urlsplit(url).netloc
        if host in seen:
            continue
        seen.add(host)
        req = urllib.request.Request(url, method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=timeout):
                pass
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            raise DownloadError(
                f"cannot reach {host} ({_reason(exc)}); `export pretrained` needs network access "
                f"to the model hubs - on an offline machine copy the files in and use --local-dir, "
                f"or build demo models with `python -m export demo`"
            ) from None


def download(url: str, dest: Path, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Stream `url` to `dest` through a .part file, printing progress to stderr."""
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as fh:
            total = int(resp.headers.get("Content-Length") or 0)
            done, next_report = 0, 0
            while block := resp.read(1 << 22):
                fh.write(block)
                done += len(block)
                if done >= next_report:
                    pct = f" ({100 * done / total:.0f}%)" if total else ""
                    print(f"export: {dest.name}: {done >> 20} MiB{pct}", file=sys.stderr)
                    next_report = done + (256 << 20)
    except (TimeoutError, urllib.error.URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} failed: {_reason(exc)}") from None
    part.replace(dest)


def fetch_all(out: Path, *, dnabert_revision: str, local_dir: Path | None,
              version: int | None = None) -> list[Path]:
    """Put every source file into place under `out` (copied from local_dir or downloaded)."""
    srcs = sources(dnabert_revision, version)
    if local_dir is None:
        probe([s.url for s in srcs])
    written = []
    for src in srcs:
        dest = out / src.dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        if local_dir is not None:
            candidate = local_dir / Path(src.dest).name
            if not candidate.is_file():
                raise InputError(f"{candidate}: not found in --local-dir (needs "
                                    + ", ".join(Path(s.dest).name for s in srcs) + ")")
            shutil.copyfile(candidate, dest)
        else:
            download(src.url, dest)
        written.append(dest)
    return written
