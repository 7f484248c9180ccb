"""A finished run's answers, derived again with no server and no model: `predict` and `call`.

The calls, regions, tracks, Broad's table and the MultiQC files depend only on files a finished
run keeps (sequence_summary.tsv and the chunk table in the state folder), the call thresholds and
the sample name. Both commands come here, so a `predict` rerun with other thresholds and an
`orchestrator call` with them write the same bytes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.atomic import write_json_atomic
from orchestrator.classify.calls import CallSettings
from orchestrator.errors import InputError
from orchestrator.write.answers import write_answers
from orchestrator.write.checkpoint import MANIFEST_NAME, Checkpoint
from orchestrator.write.paths import OutputPaths

log = logging.getLogger("orchestrator")

# Stripped from the first input's name, in this order, to give the default sample name.
_COMPRESSION_SUFFIXES = (".gz", ".bgz", ".bz2", ".xz", ".zst", ".zstd")
_FORMAT_SUFFIXES = (".fasta", ".fas", ".fa", ".fna", ".ffn", ".fastq", ".fq", ".sam", ".bam",
                    ".cram", ".gbff", ".gbk", ".gb", ".genbank", ".txt")
STDIN_SAMPLE = "stdin"


def default_sample(inputs: Sequence[str]) -> str:
    """The first input's base name without its compression and format suffixes (`reads.fq.gz` ->
    `reads`): what MultiQC users expect as the sample name; `stdin` for `-`."""
    first = next((p for p in inputs if p != "-"), None)
    if first is None:
        return STDIN_SAMPLE
    name = Path(first).name
    for suffixes in (_COMPRESSION_SUFFIXES, _FORMAT_SUFFIXES):
        for suffix in suffixes:
            if name.lower().endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                break
    return name


def check_sample(name: str) -> str:
    """A sample name fits one cell of a MultiQC table: not empty, no tab or line break, and not
    starting with `#` (MultiQC would read the row as a comment)."""
    if not name.strip() or any(ch in name for ch in "\t\r\n") or name.startswith("#"):
        raise InputError(f"--sample {name!r}: give a name without tabs or line breaks that does "
                         "not start with '#'")
    return name


def run_sample(run_json: dict[str, Any], sample: str | None) -> str:
    """The sample name to use: the one given, else the run's recorded one, else the default."""
    if sample is not None:
        return check_sample(sample)
    params = run_json.get("parameters") or {}
    recorded = params.get("sample")
    if isinstance(recorded, str) and recorded:
        return recorded
    return default_sample([str(p) for p in params.get("inputs") or []])


CALL_PURPOSE = "`orchestrator call` re-derives the calls of a run that `predict` completed"


def finished_run(outdir: str | Path, purpose: str = CALL_PURPOSE
                 ) -> tuple[OutputPaths, dict[str, Any]]:
    """OUTDIR's paths and run.json if it holds a run `predict` finished; InputError (exit 2)
    naming what is missing, then `purpose` (why the command needs a finished run), otherwise.
    Only reads: a refused folder is left exactly as it was."""
    out = Path(outdir)

    def refuse(reason: str) -> InputError:
        return InputError(f"{out} is not a finished predict run ({reason}); {purpose}")

    if not out.is_dir():
        raise refuse("no such folder")
    paths = OutputPaths(out)
    try:
        run_json = json.loads(paths.run_json.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise refuse(f"{paths.run_json.name} missing") from None
    except (OSError, ValueError) as exc:
        raise refuse(f"{paths.run_json.name} unreadable: {exc}") from None
    params = run_json.get("parameters") if isinstance(run_json, dict) else None
    if not isinstance(params, dict) or not isinstance(params.get("chunk_size"), int):
        raise refuse(f"{paths.run_json.name} names no chunk size")
    manifest = Checkpoint(paths).read_manifest()
    if manifest is None:
        raise refuse(f"no checkpoint manifest {paths.state.name}/{MANIFEST_NAME}")
    if manifest.get("complete") is not True:
        raise refuse("its checkpoint says the run has not finished; rerun its predict command")
    paths.save_embeddings = bool(params.get("save_embeddings"))
    missing = [p.name for p in (*paths.results(), paths.chunk_table) if not p.exists()]
    if missing:
        raise refuse(f"missing {', '.join(missing)}")
    return paths, run_json


def answers_stale(paths: OutputPaths, run_json: dict[str, Any], settings: CallSettings,
                  sample: str) -> bool:
    """True when the answer files are missing or were derived with other thresholds or name."""
    params = run_json.get("parameters") or {}
    return (params.get("calls") != settings.to_dict() or params.get("sample") != sample
            or not all(p.exists() for p in paths.answers()))


def derive_answers(paths: OutputPaths, run_json: dict[str, Any], chunk_size: int,
                   settings: CallSettings, sample: str) -> dict[str, Any]:
    """Write every answer file, then record the thresholds and sample in run.json (last: a crash
    in between leaves run.json naming other values, so the next run derives them again)."""
    if not paths.chunk_table.exists():
        raise InputError(f"{paths.chunk_table} is missing, so the calls cannot be derived "
                         "without re-embedding; rerun predict with --restart")
    t0 = time.perf_counter()
    write_answers(paths, chunk_size, settings, sample)
    run_json.setdefault("parameters", {}).update(calls=settings.to_dict(), sample=sample)
    run_json.setdefault("timings", {})["answers"] = round(time.perf_counter() - t0, 4)
    write_json_atomic(paths.run_json, run_json)
    return run_json


def write_report_or_warn(paths: OutputPaths) -> None:
    """report.html from the finished files; a failure is a warning (the results are complete)."""
    from orchestrator.write.report import write_report

    try:
        write_report(paths.outdir)
    except Exception as exc:  # the results are already complete and committed
        log.warning("warning: could not write %s: %s (the results are complete; "
                    "`orchestrator report %s` retries)", paths.report, exc, paths.outdir)
