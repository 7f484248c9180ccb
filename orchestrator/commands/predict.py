"""`orchestrator predict`: FASTA in, VirNucPro predictions out, in checkpointed windows.

Data flows one way: read -> chunk -> six frames (keep stop-free) -> embed (Triton or local) ->
classify -> write. Work is cut into windows of about `window` frames at chunk boundaries; a record
may span windows, its running `SequenceTally` is carried across (and checkpointed). Peak memory
therefore depends on the window, not on the input size. Each finished window is committed to the
state folder; the final files are assembled from the window parts at the end, atomically.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator import __version__
from orchestrator.chunk.windows import Counters, Window
from orchestrator.classify.calls import CallSettings
from orchestrator.classify.classifier import Classifier, load_classifier
from orchestrator.classify.consensus import chunk_maxima
from orchestrator.embed.contract import Embedded
from orchestrator.errors import InputError
from orchestrator.pipeline.answers import AnswerCache, AnswerTicket
from orchestrator.pipeline.dedup import DeduplicatingBackend
from orchestrator.pipeline.loop import run_windows
from orchestrator.pipeline.options import PipelineOptions
from orchestrator.pipeline.replay import EmbeddingsReplay
from orchestrator.pipeline.setup import announce, open_run_backend, scan_run_inputs, server_list
from orchestrator.write.checkpoint import Checkpoint, FinalFile
from orchestrator.write.embeddings import PART_SUFFIX as EMBEDDINGS_PART
from orchestrator.write.embeddings import assemble as assemble_embeddings
from orchestrator.write.embeddings import header_for, write_part
from orchestrator.write.formats import (
    HIGHEST_HEADER,
    PREDICTIONS_HEADER,
    SUMMARY_HEADER,
    format_chunk_table_rows,
    format_highest_rows,
    prediction_rows,
)
from orchestrator.write.lock import OutdirLock
from orchestrator.write.paths import OutputPaths
from orchestrator.write.rederive import (
    answers_stale,
    check_sample,
    default_sample,
    derive_answers,
    run_sample,
    write_report_or_warn,
)
from orchestrator.write.tally import SequenceTally

log = logging.getLogger("orchestrator")



def _classify(classifier: Classifier, dna: np.ndarray, prot: np.ndarray) -> np.ndarray:
    """concat [n, dna + protein] -> probabilities [n, 2] float32."""
    if not len(dna):
        return np.empty((0, 2), dtype=np.float32)
    return np.asarray(classifier.predict_proba(np.concatenate([dna, prot], axis=1)), dtype=np.float32)


# Window part suffixes (checkpoint files) and the final file each one is assembled into.
PART_PREDICTIONS, PART_HIGHEST, PART_SUMMARY, PART_CHUNKS = ".pred", ".high", ".summary", ".chunks"


def final_files(paths: OutputPaths) -> list[FinalFile]:
    return [
        FinalFile(paths.predictions, PREDICTIONS_HEADER, PART_PREDICTIONS),
        FinalFile(paths.highest, HIGHEST_HEADER, PART_HIGHEST, sorted=True),
        FinalFile(paths.summary, SUMMARY_HEADER, PART_SUMMARY),
        FinalFile(paths.chunk_table, "", PART_CHUNKS),
    ]


def _window_texts(window: Window, probs: np.ndarray, carried: SequenceTally | None
                  ) -> tuple[dict[str, str], SequenceTally | None]:
    """The window's parts ({suffix: text}) and the tally carried into the next window.

    Predictions and the chunk maxima table in input order, highestscore rows sorted, summary rows
    of the records that finished in this window. Chunk maxima are taken once per window (chunk
    IDs are unique across a run, a chunk's frames are consecutive and each record part covers
    whole chunks), then shared by all outputs.
    """
    predictions = prediction_rows(window.frame_ids, probs)
    ids = window.chunk_ids
    starts = window.chunk_starts
    maxima = chunk_maxima(starts, probs)
    rows = format_highest_rows(ids, maxima)
    highest = "".join(row for _, row in sorted(zip(ids, rows, strict=True)))
    summary: list[str] = []
    table: list[str] = []
    g = 0
    for part in window.parts:
        if part.record is not None:
            r = part.record
            tally = SequenceTally(r.seq_id, r.length, r.n_chunks, r.n_ambiguous_bases)
        elif carried is not None:
            tally = carried
        else:
            raise RuntimeError("record continues from a previous window but no tally was carried")
        if part.end > part.start:
            g = bisect_left(starts, part.start, g)  # the part's chunk groups: [g, g_end)
            g_end = bisect_left(starts, part.end, g)
            tally.add_chunk_maxima(ids[g:g_end], maxima[g:g_end], part.end - part.start)
            table.append(format_chunk_table_rows(tally.seq_id, rows[g:g_end]))
            g = g_end
        if part.ends:
            summary.append(tally.row())
            carried = None
        else:
            carried = tally
    return {PART_PREDICTIONS: predictions, PART_HIGHEST: highest, PART_SUMMARY: "".join(summary),
            PART_CHUNKS: "".join(table)}, carried


def run_predict(options: PipelineOptions, *, outdir: str, classifier: str,
                call_settings: CallSettings | None = None, report: bool = True,
                save_embeddings: bool = False, sample: str | None = None,
                embeddings: str | None = None) -> dict[str, Any]:
    """Run the whole pipeline; returns the run record (also written as run.json).

    `call_settings`: thresholds of sequence_calls.tsv and viral_regions.tsv; `report`: write
    report.html at the end; `save_embeddings`: also write OUTDIR/embeddings.h5 (every kept
    frame's vectors, the file `orchestrator embed` writes); `sample`: the name in the MultiQC
    files (default: the first input's base name); `embeddings`: take the vectors from that
    file of an earlier run of the same inputs instead of embedding (re-classification, no
    server).
    """
    options.check()
    if embeddings and save_embeddings:
        raise InputError("--save-embeddings with --embeddings: the vectors are already in "
                         f"{embeddings}")
    if embeddings and options.shard is not None:
        raise InputError("--shard with --embeddings: re-classify the whole sample in one run")
    settings = call_settings or CallSettings()
    settings.validate()
    if sample is not None:
        check_sample(sample)
    servers = server_list(options)
    paths = OutputPaths(outdir, save_embeddings=save_embeddings)
    paths.outdir.mkdir(parents=True, exist_ok=True)
    with OutdirLock(paths.outdir):
        return _predict(options, paths=paths, servers=servers, classifier=classifier,
                        settings=settings, report=report, save_embeddings=save_embeddings,
                        sample=sample, embeddings=embeddings)


def run_predict_with_server(options: PipelineOptions, **kwargs: Any) -> dict[str, Any]:
    """`predict --start-server`: a private tritonserver for this run alone, on free loopback
    ports, from `options.model_repository` (GPU configs when a GPU is visible).

    It is stopped on every way out of the run (success, error, SIGTERM and SIGINT, which reach
    here as exceptions), its stub processes and shared-memory regions with it; if this process is
    killed outright the server gets SIGTERM from the kernel (parent-death signal).
    """
    from orchestrator.embed.triton.server import (
        PRIVATE_READY_TIMEOUT_S,
        TritonServer,
        gpu_configs_usable,
    )

    options.check()
    if options.backend != "triton":
        raise InputError("--start-server starts a Triton server; it does not go with --backend local")
    if kwargs.get("embeddings"):
        raise InputError("--start-server with --embeddings: re-classifying needs no server")
    if not options.model_repository:
        raise InputError("--start-server needs --model-repository DIR (the models to serve)")
    gpu = gpu_configs_usable(options.model_repository)
    server = TritonServer(options.model_repository, gpu=gpu, ready_timeout=PRIVATE_READY_TIMEOUT_S)
    with server:
        pid = server.process.pid if server.process is not None else None
        log.info("started a private tritonserver for this run: pid %s, grpc %s, %s, log %s",
                 pid, server.grpc_url, "GPU configs" if gpu else "CPU configs", server.log_path)
        try:
            return run_predict(replace(options, servers=[server.grpc_url]), **kwargs)
        finally:
            log.info("stopping the private tritonserver (pid %s)", pid)


def _predict(options: PipelineOptions, *, paths: OutputPaths, servers: list[str], classifier: str,
             settings: CallSettings, report: bool, save_embeddings: bool, sample: str | None,
             embeddings: str | None) -> dict[str, Any]:
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    chunk_size = options.chunk_size
    ckpt = Checkpoint(paths)
    inputs = scan_run_inputs(options, ckpt, paths.state)  # bad input: InputError before any model
    scan = inputs.scan
    clf = load_classifier(classifier)
    _warn_chunk_size_mismatch(clf, chunk_size)
    clf_sha = clf.sha256  # of the bytes it was loaded from
    replay = _open_replay(embeddings, chunk_size, inputs.digests, clf) if embeddings else None
    backend = "embeddings" if replay is not None else options.backend
    connection = options.connection
    parameters = {
        "inputs": list(options.inputs), "outdir": str(paths.outdir), "chunk_size": chunk_size,
        "classifier": str(classifier), "backend": backend,
        "servers": servers if backend == "triton" else None,
        "tls": connection.describe() if connection is not None and backend == "triton" else None,
        "headers": sorted(k for k, _ in connection.headers) if connection is not None else [],
        "model_repository": options.model_repository, "batch_size": options.batch_size,
        "max_in_flight": options.max_in_flight, "window": options.window,
        "lookahead": options.lookahead, "restart": options.restart,
        "input_formats": [scan.formats[p].describe() for p in inputs.read_paths],
        "calls": settings.to_dict(), "report": report, "save_embeddings": save_embeddings,
        "priority": options.resolved_priority, "dedup": options.dedup and replay is None,
        "dedup_memory": options.dedup_memory,
        "embeddings": str(Path(embeddings).resolve()) if embeddings else None,
        "sample": sample if sample is not None else default_sample(options.inputs),
    }
    if options.shard is not None:  # only then: an unsharded run.json keeps its fields
        parameters["shard"] = str(options.shard)
    if scan.n_records == 0:
        log.warning("warning: no records in %s; writing header-only outputs%s",
                    ", ".join(options.inputs),
                    " (and no embeddings.h5: there are no vectors)" if save_embeddings else "")
        paths.save_embeddings = False
        if replay is not None:
            replay.close()
        run_json = _write_empty(paths, ckpt, parameters, clf, clf_sha, inputs.digests, wall0, cpu0)
        return _finish(paths, run_json, chunk_size, settings, report, sample, fresh=False)

    # predict's answer cache: repeats anywhere in the sample take the scores of their first
    # occurrence. Not where the vectors are an output (--save-embeddings) or already at hand.
    answers = (AnswerCache(options.dedup_memory)
               if options.dedup and replay is None and not save_embeddings else None)
    be: DeduplicatingBackend | EmbeddingsReplay = (
        replay if replay is not None
        else open_run_backend(options, servers, keep_vectors=answers is None))
    try:
        dna_w, prot_w = be.widths
        clf.check_widths(dna_w, prot_w)
        models = be.models_info()
        mismatch = clf.encoder_mismatch(models)
        if mismatch:
            log.warning("warning: %s", mismatch)
        fingerprint = {
            "tool_version": __version__,
            "inputs_sha256": inputs.digests,
            "chunk_size": chunk_size,
            "window": options.window,
            "backend": backend,
            "classifier_sha256": clf_sha,
            "models": [{k: m.get(k) for k in ("name", "version", "weights_sha256", "width", "batch_size")}
                       # the precision only where the config states it: other runs keep their
                       # earlier fingerprint
                       | ({"precision": m["precision"]}
                          if m.get("precision") not in (None, "unknown") else {})
                       for m in models],
        }
        if save_embeddings:  # only when set: runs without it keep their earlier fingerprint
            fingerprint["save_embeddings"] = True
        if options.shard is not None:
            fingerprint["shard"] = str(options.shard)
        done = ckpt.open(fingerprint, options.restart)
        if done < 0:
            return _finish(paths, json.loads(paths.run_json.read_text()), chunk_size, settings,
                           report, sample, fresh=False)
        announce(done, ckpt, inputs, options)
        timings = dict.fromkeys(("preprocess", "embed", "classify", "write"), 0.0)
        counters, frames_embedded, windows_run = run_windows(
            read_paths=inputs.read_paths, ckpt=ckpt, backend=be,
            chunk_size=chunk_size, window=options.window, lookahead=options.lookahead, done=done,
            progress=options.progress, total_bases=scan.n_bases, timings=timings,
            finish_window=_predict_windows(clf=clf, ckpt=ckpt, timings=timings,
                                           save_embeddings=save_embeddings),
            submit_window=(replay.submit_window if replay is not None
                           else _answer_submitter(answers, be) if answers is not None else None),
            shard=options.shard,
        )
        if replay is not None:
            replay.check_complete(counters.frames)
        endpoints = be.endpoints_info() if isinstance(be, DeduplicatingBackend) else None
        dedup = be.info() if isinstance(be, DeduplicatingBackend) else None
        if dedup is not None:
            dedup["answers"] = answers.info() if answers is not None else None
    finally:
        be.close()
    wall = time.perf_counter() - wall0
    timings["scan"] = inputs.seconds
    timings["total"] = wall
    run_json = _run_record(
        parameters=parameters, backend=backend, endpoints=endpoints, models=models,
        stats=be.stats(), clf=clf, clf_path=classifier, clf_sha=clf_sha,
        input_digests=inputs.digests, counters=counters, timings=timings,
        frames_embedded=frames_embedded, windows_reused=done, windows_run=windows_run, wall=wall,
        cpu=time.process_time() - cpu0, input_lengths=scan.lengths.to_dict(), dedup=dedup,
    )
    t0 = time.perf_counter()
    if save_embeddings:
        # before the text files: a crash in between resumes with zero windows left and redoes both
        n = assemble_embeddings(paths.embeddings, header_for(
            chunk_size, models, options.inputs, inputs.digests), ckpt.parts(EMBEDDINGS_PART))
        log.info("wrote %s (%d frames)", paths.embeddings, n)
    ckpt.assemble(final_files(paths), run_json)
    for part in ckpt.parts(EMBEDDINGS_PART):
        part.unlink(missing_ok=True)
    log.info("wrote %s (%d records, %d chunks, %d frames) in %.1f s",
             paths.outdir, counters.records, counters.chunks, counters.frames, wall)
    run_json["timings"]["assemble"] = round(time.perf_counter() - t0, 4)
    return _finish(paths, run_json, chunk_size, settings, report, sample, fresh=True)


def _open_replay(embeddings: str, chunk_size: int, digests: list[str],
                 clf: Classifier) -> EmbeddingsReplay:
    """The saved run's vectors, checked against these inputs and this classifier (exit 2)."""
    replay = EmbeddingsReplay(embeddings)
    try:
        replay.check(chunk_size=chunk_size, input_digests=digests, clf=clf)
    except BaseException:
        replay.close()
        raise
    log.info("re-classifying the vectors in %s (no server)", embeddings)
    return replay


def _finish(paths: OutputPaths, run_json: dict[str, Any], chunk_size: int,
            settings: CallSettings, report: bool, sample: str | None, *, fresh: bool
            ) -> dict[str, Any]:
    """The answers (calls, regions, tracks, Broad's table, MultiQC files) and the report of a
    complete run.

    A finished run rerun with other thresholds or sample name, or whose answer files are missing,
    gets them re-derived from the kept chunk table: nothing is re-embedded. Without --sample
    the name the run recorded stays.
    """
    sample = run_sample(run_json, sample)
    stale = fresh or answers_stale(paths, run_json, settings, sample)
    if stale:
        if not fresh:
            log.info("this run is complete in %s; deriving sequence calls, regions and tracks "
                     "with the given thresholds (nothing is re-embedded)", paths.outdir)
        derive_answers(paths, run_json, chunk_size, settings, sample)
    elif paths.report.exists() or not report:
        log.info("this run is already complete in %s; nothing to do "
                 "(pass --restart to run it again)", paths.outdir)
    if report and (stale or not paths.report.exists()):
        write_report_or_warn(paths)
    return run_json


def _warn_chunk_size_mismatch(clf: Classifier, chunk_size: int) -> None:
    """A classifier from `orchestrator train` records its chunk size; another one is a mistake."""
    trained = clf.metadata.get("chunk_size")
    if trained is not None and trained != str(chunk_size):
        log.warning("warning: %s was trained on %s bp chunks but --chunk-size is %d; its scores "
                    "are only meaningful at the size it was trained on", clf.source, trained,
                    chunk_size)


def _predict_windows(*, clf: Classifier, ckpt: Checkpoint, timings: dict[str, float],
                     save_embeddings: bool) -> Callable[[Window, Embedded], None]:
    """predict's window step: classify, format the parts, keep the vectors if asked, commit."""
    carried_dict = ckpt.carried_tally if ckpt.windows_done else None
    carried = SequenceTally.from_dict(carried_dict) if carried_dict else None

    def classify(dna: np.ndarray, prot: np.ndarray) -> np.ndarray:
        return _classify(clf, dna, prot)

    def finish(w: Window, embeddings: Embedded | AnswerTicket) -> None:
        nonlocal carried
        t0 = time.perf_counter()
        if isinstance(embeddings, AnswerTicket):  # cached scores, the rest classified once each
            probs = embeddings.answers(classify)
        else:
            probs = classify(*embeddings)
        t1 = time.perf_counter()
        if save_embeddings:  # before the commit: the manifest never counts a window without it
            write_part(ckpt.part(w.index, EMBEDDINGS_PART), w.frame_ids, *embeddings)
        parts, carried = _window_texts(w, probs, carried)
        ckpt.commit_window(
            w.index, parts=parts, carried_tally=carried.to_dict() if carried is not None else None,
            counters=w.progress,
        )
        timings["classify"] += t1 - t0
        timings["write"] += time.perf_counter() - t1

    return finish


def _answer_submitter(answers: AnswerCache, backend: DeduplicatingBackend
                      ) -> Callable[[Window], AnswerTicket]:
    """The run loop's submit: through the answer cache, then the backend for what it lacks."""

    def submit(w: Window) -> AnswerTicket:
        ticket = answers.submit(backend, w.nucleotides, w.proteins)
        backend.answered_elsewhere(len(w.frame_ids) - ticket.frames_sent)
        return ticket

    return submit


def _run_record(*, parameters: dict[str, Any], backend: str,
                endpoints: list[dict[str, Any]] | None, models: list[dict[str, Any]],
                stats: dict[str, Any], clf: Classifier,
                clf_path: str, clf_sha: str, input_digests: list[str], counters: Counters,
                timings: dict[str, float], frames_embedded: int, windows_reused: int,
                windows_run: int, wall: float, cpu: float,
                input_lengths: dict[str, Any] | None = None,
                dedup: dict[str, Any] | None = None) -> dict[str, Any]:
    for m in models:
        s = stats.get(m["name"])
        if s:
            m["requests"] = int(s.get("requests", 0))
            m["retries"] = int(s.get("retries", 0))
            m["rejections"] = int(s.get("rejections", 0))  # "queue full" answers (load shedding)
            m["hedged"] = int(s.get("hedged", 0))  # overdue requests re-sent elsewhere
            # Triton: summed request latencies (requests overlap); local: wall time of the model.
            m["embed_seconds"] = round(float(s.get("seconds", 0.0)), 4)
    embed_s = timings.get("embed", 0.0)
    return {
        "tool": "virnucpro-triton orchestrator",
        "version": __version__,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "parameters": parameters,
        "backend": backend,
        "servers": parameters["servers"],
        "endpoints": endpoints,
        "models": models,
        "classifier": {"path": str(Path(clf_path).resolve()), "sha256": clf_sha,
                       "input_width": int(clf.input_width)},
        "inputs_sha256": input_digests,
        "counts": {"records": counters.records, "bases": counters.bases,
                   "chunks": counters.chunks, "frames": counters.frames,
                   "windows": counters.windows},
        "input_lengths": input_lengths,
        "timings": {k: round(v, 4) for k, v in timings.items()},
        "throughput": {
            "frames_embedded": frames_embedded,
            "frames_per_s": round(frames_embedded / wall, 2) if wall > 0 else None,
            "frames_per_s_embed": round(frames_embedded / embed_s, 2) if embed_s > 0 else None,
            "client_cpu_seconds": round(cpu, 3),
            "frames_per_client_cpu_s": round(frames_embedded / cpu, 1) if cpu > 0 else None,
        },
        "resumed": {"resumed": windows_reused > 0, "windows_reused": windows_reused,
                    "windows_run": windows_run},
        # frames this process embedded, strings sent per model, hit rate; predict's answer cache:
        # frames answered from it, its entries, bytes and evictions
        "dedup": dedup,
    }


def _write_empty(paths: OutputPaths, ckpt: Checkpoint, parameters: dict[str, Any],
                 clf: Classifier, clf_sha: str, input_digests: list[str], wall0: float,
                 cpu0: float) -> dict[str, Any]:
    """No records: header-only outputs, no models needed."""
    counters = Counters()
    wall = time.perf_counter() - wall0
    run_json = _run_record(
        parameters=parameters, backend=parameters["backend"], endpoints=None, models=[],
        stats={}, clf=clf, clf_path=parameters["classifier"], clf_sha=clf_sha,
        input_digests=input_digests, counters=counters, timings={"total": wall},
        frames_embedded=0, windows_reused=0, windows_run=0, wall=wall,
        cpu=time.process_time() - cpu0,
    )
    fingerprint = {"tool_version": __version__, "inputs_sha256": input_digests, "empty": True}
    if "shard" in parameters:
        fingerprint["shard"] = parameters["shard"]
    if ckpt.open(fingerprint, restart=parameters["restart"]) < 0:
        return run_json
    ckpt.assemble(final_files(paths), run_json)
    return run_json

