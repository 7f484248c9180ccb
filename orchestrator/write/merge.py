"""`orchestrator merge SHARD_DIR... -o OUTDIR`: the finished shards of one sample, as one run.

`predict --shard K/N` runs take contiguous stretches of the records in input order (see
`read.shard`), so every per-record and per-frame file of the unsharded run is the shards' files
concatenated in shard order, and the highestscore table (sorted by Modified_ID) is their sorted
merge. The answers (calls, regions, tracks, Broad's table, MultiQC files) and the report are then
derived from the merged files exactly as `predict` derives them, and the embeddings file is
rewritten in the unsharded run's window pattern, so every file matches an unsharded run byte for
byte. Nothing is written until every shard has been checked: a missing, repeated, unfinished or
foreign shard is refused (exit 2) naming the shard and the reason.
"""

from __future__ import annotations

import heapq
import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from orchestrator.atomic import atomic_open, atomic_path, write_json_atomic
from orchestrator.classify.calls import CallSettings
from orchestrator.errors import InputError
from orchestrator.read.shard import parse_shard
from orchestrator.write.checkpoint import MANIFEST_FORMAT, Checkpoint, row_key
from orchestrator.write.embeddings import EmbeddingsWriter, RowReader, chunk_id_of, read_header
from orchestrator.write.formats import HIGHEST_HEADER, PREDICTIONS_HEADER, SUMMARY_HEADER
from orchestrator.write.lock import OutdirLock
from orchestrator.write.paths import OutputPaths
from orchestrator.write.rederive import derive_answers, run_sample, write_report_or_warn

log = logging.getLogger("orchestrator")

# Rows read from a shard's embeddings file at a time (bounded memory whatever its size).
EMBEDDINGS_BLOCK_ROWS = 16384
COPY_BLOCK = 1 << 20
# Per-model request counters of run.json, summed over the shards.
MODEL_COUNTERS = ("requests", "retries", "rejections", "hedged", "embed_seconds")


@dataclass(frozen=True)
class ShardRun:
    """One finished shard: its folder, files, run record, checkpoint fingerprint, K and N."""

    paths: OutputPaths
    run_json: dict[str, Any]
    fingerprint: dict[str, Any]
    index: int
    count: int

    @property
    def name(self) -> str:
        return f"{self.paths.outdir} (shard {self.index}/{self.count})"

    def facts(self) -> dict[str, Any]:
        """What must agree between shards of one sample, by the name a refusal gives it."""
        params = self.run_json.get("parameters") or {}
        return {
            "number of shards": self.count,
            "inputs (checksums)": self.run_json.get("inputs_sha256"),
            "input formats": params.get("input_formats"),
            "tool version": self.run_json.get("version"),
            "classifier": (self.run_json.get("classifier") or {}).get("sha256"),
            "models": self.fingerprint.get("models"),
            "backend": params.get("backend"),
            "chunk size": params.get("chunk_size"),
            "window": params.get("window"),
            "call thresholds": params.get("calls"),
            "sample name": params.get("sample"),
            "--save-embeddings": bool(params.get("save_embeddings")),
        }


def read_shard(folder: str | Path) -> ShardRun:
    """A finished `predict --shard` run in `folder`, or InputError naming it and what is wrong.

    Only reads."""
    out = Path(folder)

    def refuse(reason: str) -> InputError:
        return InputError(f"shard {out}: {reason}; merge takes the folders of finished "
                          "`predict --shard K/N` runs")

    if not out.is_dir():
        raise refuse("no such folder")
    paths = OutputPaths(out)
    manifest = Checkpoint(paths).read_manifest()
    if manifest is None:
        raise refuse("no checkpoint here (not a predict output folder)")
    fingerprint = manifest.get("fingerprint") or {}
    shard_text = fingerprint.get("shard")
    if not isinstance(shard_text, str):
        raise refuse("not a shard (its predict ran without --shard)")
    shard = parse_shard(shard_text)
    if manifest.get("complete") is not True:
        raise refuse(f"unfinished (shard {shard}: {manifest.get('windows_done', 0)} windows "
                     "committed so far); rerun its predict command to finish it")
    try:
        run_json = json.loads(paths.run_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise refuse(f"{paths.run_json.name} unreadable ({exc})") from None
    params = run_json.get("parameters") if isinstance(run_json, dict) else None
    if not isinstance(params, dict) or params.get("shard") != shard_text:
        raise refuse(f"{paths.run_json.name} does not record shard {shard_text}")
    paths.save_embeddings = bool(params.get("save_embeddings")) and not fingerprint.get("empty")
    missing = [p.name for p in (*paths.results(), paths.chunk_table) if not p.exists()]
    if missing:
        raise refuse(f"missing {', '.join(missing)}")
    return ShardRun(paths, run_json, fingerprint, shard.index, shard.count)


def check_shards(shards: Sequence[ShardRun]) -> list[ShardRun]:
    """The shards in order 1..N, or InputError: repeated, missing, or of another run."""
    if not shards:
        raise InputError("merge needs the shard folders")
    first = shards[0]
    ref = first.facts()
    for s in shards[1:]:
        for key, value in s.facts().items():
            if value != ref[key]:
                raise InputError(f"shard {s.name}: different {key} than {first.name}; merge "
                                 "takes the shards of one sample run with the same options")
    by_index: dict[int, ShardRun] = {}
    for s in shards:
        if s.index in by_index:
            raise InputError(f"shard {s.name}: repeated (also {by_index[s.index].paths.outdir})")
        by_index[s.index] = s
    missing = [str(k) for k in range(1, first.count + 1) if k not in by_index]
    if missing:
        raise InputError(f"shard{'s' if len(missing) > 1 else ''} {', '.join(missing)} of "
                         f"{first.count} missing (given: "
                         f"{', '.join(str(k) for k in sorted(by_index))})")
    return [by_index[k] for k in range(1, first.count + 1)]


def _check_target(out: Path, shards: Sequence[ShardRun], fingerprint: dict[str, Any]) -> None:
    """-o is none of the shards, and holds nothing but (maybe) an earlier merge of the same."""
    for s in shards:
        if out.exists() and os.path.samefile(out, s.paths.outdir):
            raise InputError(f"-o {out} is shard {s.name} itself; give a new folder for the "
                             "merged run")
    if not out.exists():
        return
    paths = OutputPaths(out)
    manifest = Checkpoint(paths).read_manifest()
    if manifest is not None and manifest.get("fingerprint") == fingerprint:
        return  # the same merge again (an interrupted one, or a repeat): written over
    present = [p.name for p in (*paths.results(), paths.state) if p.exists()]
    if present:
        raise InputError(f"-o {out} already holds another run ({', '.join(present)}); choose "
                         "another folder")


def merged_fingerprint(first: ShardRun) -> dict[str, Any]:
    """The merged run's checkpoint fingerprint: the shards' own, without shard and window."""
    fp = {k: v for k, v in first.fingerprint.items() if k not in ("shard", "window")}
    fp["merged_shards"] = first.count
    return fp


def run_merge(shard_dirs: Sequence[str], outdir: str, *, report: bool = True) -> dict[str, Any]:
    """Check every shard, then write OUTDIR as the unsharded run would; returns its run record.

    `report`: write report.html (whether the shards wrote their own does not matter)."""
    t0 = time.perf_counter()
    out = Path(outdir)
    shards = check_shards([read_shard(d) for d in shard_dirs])
    fingerprint = merged_fingerprint(shards[0])
    _check_target(out, shards, fingerprint)
    first = shards[0]
    params = first.run_json["parameters"]
    paths = OutputPaths(out, save_embeddings=first.paths.save_embeddings)
    out.mkdir(parents=True, exist_ok=True)
    with OutdirLock(out):
        ckpt = Checkpoint(paths)
        paths.state.mkdir(exist_ok=True)
        manifest = {"format": MANIFEST_FORMAT, "fingerprint": fingerprint, "windows_done": 0,
                    "carried_tally": None, "counters": {}, "complete": False}
        write_json_atomic(ckpt.manifest_path, manifest)
        if paths.save_embeddings:
            n = merge_embeddings(paths.embeddings, [s.paths.embeddings for s in shards],
                                 int(params["window"]))
            log.info("wrote %s (%d frames)", paths.embeddings, n)
        _concat_files(paths.predictions, PREDICTIONS_HEADER, [s.paths.predictions for s in shards])
        _merge_sorted_files(paths.highest, HIGHEST_HEADER, [s.paths.highest for s in shards])
        _concat_files(paths.summary, SUMMARY_HEADER, [s.paths.summary for s in shards])
        _concat_files(paths.chunk_table, "", [s.paths.chunk_table for s in shards])
        run_json = merged_run_record(shards, out)
        run_json["parameters"]["report"] = report
        run_json["timings"]["merge"] = round(time.perf_counter() - t0, 4)
        write_json_atomic(paths.run_json, run_json)
        manifest.update(complete=True)
        write_json_atomic(ckpt.manifest_path, manifest)
        settings = CallSettings(**params["calls"])
        derive_answers(paths, run_json, int(params["chunk_size"]), settings,
                       run_sample(run_json, None))
        if report:
            write_report_or_warn(paths)
    log.info("merged %d shards into %s (%d records, %d frames) in %.1f s", len(shards), out,
             run_json["counts"]["records"], run_json["counts"]["frames"],
             time.perf_counter() - t0)
    return run_json


# --------------------------------------------------------------------------- text files


def _body(fh: IO[str], header: str, path: Path) -> IO[str]:
    """`fh` positioned after `header`, which must be there (a shard's file of this kind)."""
    if header and fh.read(len(header)) != header:
        raise InputError(f"{path}: does not start with the expected header")
    return fh


def _blocks(handles: Iterable[IO[str]]) -> Iterator[str]:
    for fh in handles:
        while block := fh.read(COPY_BLOCK):
            yield block


def _write(target: Path, header: str, body: Iterable[str]) -> None:
    with atomic_open(target) as out:
        out.write(header)
        for piece in body:
            out.write(piece)


def _open_all(stack: ExitStack, files: Sequence[Path], header: str) -> list[IO[str]]:
    return [_body(stack.enter_context(open(p, encoding="utf-8", newline="")), header, p)
            for p in files]


def _concat_files(target: Path, header: str, files: Sequence[Path]) -> None:
    """header + each file's rows, in shard order (shards are contiguous in input order)."""
    with ExitStack() as stack:
        _write(target, header, _blocks(_open_all(stack, files, header)))


def _merge_sorted_files(target: Path, header: str, files: Sequence[Path]) -> None:
    """header + the sorted merge of each file's sorted rows (ties: shard order = input order)."""
    with ExitStack() as stack:
        _write(target, header, heapq.merge(*_open_all(stack, files, header), key=row_key))


# --------------------------------------------------------------------------- embeddings


def _unsharded_windows(files: Sequence[Path], window: int
                       ) -> Iterator[tuple[list[str], np.ndarray, np.ndarray]]:
    """The shards' rows regrouped as the unsharded run's windows: a window closes at the first
    chunk boundary once it holds `window` frames (`chunk.windows.iter_windows`'s rule), so the
    file is appended to in the same blocks and comes out the same bytes."""
    ids: list[str] = []
    dna: list[np.ndarray] = []
    prot: list[np.ndarray] = []
    last_chunk: str | None = None

    def flush() -> tuple[list[str], np.ndarray, np.ndarray]:
        block = (ids.copy(), np.concatenate(dna), np.concatenate(prot))
        ids.clear()
        dna.clear()
        prot.clear()
        return block

    for path in files:
        reader = RowReader(path)
        try:
            for start in range(0, reader.n, EMBEDDINGS_BLOCK_ROWS):
                frame_ids, d, p = reader.rows(start, min(reader.n, start + EMBEDDINGS_BLOCK_ROWS))
                lo = 0
                for i, frame_id in enumerate(frame_ids):
                    chunk = chunk_id_of(frame_id)
                    if chunk != last_chunk and len(ids) + i - lo >= window:
                        ids.extend(frame_ids[lo:i])
                        dna.append(d[lo:i])
                        prot.append(p[lo:i])
                        yield flush()
                        lo = i
                    last_chunk = chunk
                ids.extend(frame_ids[lo:])
                dna.append(d[lo:])
                prot.append(p[lo:])
        finally:
            reader.close()
    if ids:
        yield flush()


def merge_embeddings(target: Path, files: Sequence[Path], window: int) -> int:
    """One embeddings file from the shards' (in shard order), atomically; returns its rows."""
    header, _ = read_header(files[0])
    with atomic_path(target) as tmp:
        writer = EmbeddingsWriter(tmp, header)
        try:
            for block in _unsharded_windows(files, window):
                writer.append(*block)
        finally:
            writer.close()
    return writer.n


# --------------------------------------------------------------------------- run.json


def _sum_into(total: dict[str, Any], part: dict[str, Any] | None) -> None:
    for key, value in (part or {}).items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value


def merged_run_record(shards: Sequence[ShardRun], out: Path) -> dict[str, Any]:
    """The first shard's run record with the counts, timings, requests and throughput of all
    shards summed, and each shard's own figures under `shards`."""
    first = shards[0].run_json
    run = json.loads(json.dumps(first))  # a deep copy
    params = run["parameters"]
    params.pop("shard", None)
    params["outdir"] = str(out)
    counts: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    models: dict[str, dict[str, Any]] = {}
    frames_embedded = 0
    cpu = 0.0
    reused = ran = 0
    for s in shards:
        r = s.run_json
        _sum_into(counts, r.get("counts"))
        _sum_into(timings, r.get("timings"))
        for m in r.get("models") or []:
            _sum_into(models.setdefault(m.get("name"), {}), {k: m.get(k) for k in MODEL_COUNTERS})
        tp = r.get("throughput") or {}
        frames_embedded += int(tp.get("frames_embedded") or 0)
        cpu += float(tp.get("client_cpu_seconds") or 0.0)
        resumed = r.get("resumed") or {}
        reused += int(resumed.get("windows_reused") or 0)
        ran += int(resumed.get("windows_run") or 0)
    for m in run.get("models") or []:
        for k, v in models.get(m.get("name"), {}).items():
            m[k] = round(v, 4) if isinstance(v, float) else v
    wall = float(timings.get("total") or 0.0)
    embed = float(timings.get("embed") or 0.0)
    run.update(
        finished=max(str(s.run_json.get("finished", "")) for s in shards),
        counts=counts,
        timings={k: round(v, 4) for k, v in timings.items()},
        throughput={
            "frames_embedded": frames_embedded,
            # per second of the shards' summed wall time: shards may have run one after another
            "frames_per_s": round(frames_embedded / wall, 2) if wall > 0 else None,
            "frames_per_s_embed": round(frames_embedded / embed, 2) if embed > 0 else None,
            "client_cpu_seconds": round(cpu, 3),
            "frames_per_client_cpu_s": round(frames_embedded / cpu, 1) if cpu > 0 else None,
        },
        resumed={"resumed": reused > 0, "windows_reused": reused, "windows_run": ran},
        endpoints=None,
        dedup=None,
        shards=[{"shard": f"{s.index}/{s.count}", "outdir": str(s.paths.outdir.resolve()),
                 "finished": s.run_json.get("finished"), "counts": s.run_json.get("counts"),
                 "timings": s.run_json.get("timings"), "throughput": s.run_json.get("throughput"),
                 "endpoints": s.run_json.get("endpoints"), "dedup": s.run_json.get("dedup")}
                for s in shards],
    )
    return run
