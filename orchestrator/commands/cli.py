"""The `orchestrator` command line: declares options, calls one stage function, maps errors to exit codes.

Library code raises `orchestrator.errors` exceptions; this is the one place that turns them into a
one-line message and an exit code (0 ok, 2 bad input/usage, 3 server unavailable, 130/143 interrupted,
1 anything else).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING

from encoders.errors import EncoderError
from orchestrator import __version__
from orchestrator.classify.calls import CallSettings
from orchestrator.commands.compare import DEFAULT_MAX_SCORE_DIFF, DEFAULT_TOP
from orchestrator.embed.backends import BACKENDS
from orchestrator.embed.priority import DEFAULT_PRIORITY, PRIORITIES, PRIORITY_ENV
from orchestrator.embed.triton.discovery import DEFAULT_DISCOVERY_INTERVAL_S, DISCOVERY_INTERVAL_ENV
from orchestrator.embed.triton.lockdown import ADMIN_KEY_ENV, MODEL_CONTROL
from orchestrator.embed.triton.metrics import DEFAULT_METRICS_PORT
from orchestrator.errors import InputError, Interrupted, OrchestratorError
from orchestrator.pipeline.options import (
    DEFAULT_BACKEND,
    DEFAULT_DEDUP_MEMORY,
    DEFAULT_LOOKAHEAD,
    DEFAULT_SERVER,
    DEFAULT_WINDOW,
    SERVER_ENV,
    PipelineOptions,
    answer_capacity,
    parse_size,
)
from orchestrator.read.shard import Shard, parse_shard

if TYPE_CHECKING:
    from orchestrator.embed.triton.endpoints import ConnectionOptions

log = logging.getLogger("orchestrator")
# One codon at least; ESM-2 takes proteins of at most 1,022 residues (3 x 1,022 bases).
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 3, 3 * 1022

EXAMPLES = """\
examples:
  orchestrator prepare reads.fa -o prep/ --chunk-size 500
  orchestrator serve --model-repository artifacts/model_repository
  orchestrator predict reads.fa.gz -o out/ --chunk-size 500 --classifier artifacts/classifiers/500_model.pth
  orchestrator predict reads.fa.gz -o out/ --chunk-size 500 --classifier 500_model.pth \\
      --server gpu01:8001,gpu02:8001 --server gpu03:8001 --ssl-root-cert ca.pem
  orchestrator predict a.fa b.fa -o out/ --chunk-size 300 --classifier 300_model.pth --backend local \\
      --model-repository artifacts/model_repository
  zcat reads.fa.gz | orchestrator predict - -o out/ --chunk-size 500 --classifier 500_model.pth
  orchestrator predict sample.unaligned.bam contigs.fa.zst -o out/ --chunk-size 500 --classifier 500_model.pth
  orchestrator call out/ --min-chunks 3          # other thresholds later, no server
  orchestrator compare out_fp32/ out_fp16/        # what a precision change did to the answers
  orchestrator report out/
  orchestrator status --server gpu01:8001,gpu02:8001
  orchestrator embed reads.fq.gz -o sample.h5 --chunk-size 150
  orchestrator train --viral viral.h5 --other host.h5 -o 150_model.safetensors
  orchestrator evaluate --classifier 150_model.safetensors --viral test_viral.h5 --other test_host.h5 -o eval/
  orchestrator demo
"""


EMBED_EXAMPLES = """\
examples:
  orchestrator embed reads.fq.gz -o sample.h5 --chunk-size 150 --server gpu01:8001
  orchestrator embed viral_genomic.gbff.gz -o viral.h5 --chunk-size 150 --cds-frames-only --label viral
"""

TRAIN_EXAMPLES = """\
example:
  orchestrator train --viral viral.h5 --other host.h5 bacteria.h5 -o 150_model.safetensors
  orchestrator predict reads.fq.gz -o out/ --chunk-size 150 --classifier 150_model.safetensors
"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as exit 2 with one line (argparse's own convention)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise InputError(message)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (off anyway when stderr is not a terminal)",
    )


def _add_servers(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server", action="append", metavar="HOST:PORT[,HOST:PORT...]",
        help="Triton gRPC endpoint(s); repeat or give a comma-separated list to use many servers "
        "at once; dns:///NAME:PORT is every address of NAME, file:///PATH a list of HOST:PORT "
        f"lines, both read again during a run (default ${SERVER_ENV}, same syntax, or "
        f"{DEFAULT_SERVER})",
    )


def _add_secure_access(p: argparse.ArgumentParser) -> None:
    tls = p.add_argument_group("secure access (TLS, gateway headers)")
    tls.add_argument("--ssl", action="store_true", help="connect with TLS (implied by --ssl-root-cert/--ssl-cert)")
    tls.add_argument("--ssl-root-cert", metavar="CA.pem",
                     help="CA certificate(s) that signed the servers' certificates (default: system roots)")
    tls.add_argument("--ssl-cert", metavar="CLIENT.pem", help="client certificate, for servers that require mutual TLS")
    tls.add_argument("--ssl-key", metavar="CLIENT.key", help="private key of --ssl-cert")
    tls.add_argument("--header", action="append", default=[], metavar="KEY=VALUE",
                     help="gRPC metadata sent on every call, e.g. authorization='Bearer TOKEN' (repeatable)")


def _add_serving(p: argparse.ArgumentParser) -> None:
    """Where the encoders run, how requests are cut, and secure access: predict and embed."""
    _add_servers(p)
    p.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND,
                   help="triton: models resident in a server (default); local: the same encoders in-process")
    p.add_argument("--model-repository", help="model repository holding the weights (needed by --backend local)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="frames per request (default: the model's max_batch_size)")
    p.add_argument("--max-in-flight", type=int, default=None,
                   help="outstanding requests per model (default: from the model config; at most "
                   "the config's fair share, max_in_flight_per_instance x instances)")
    p.add_argument("--model-version", action="append", default=[], metavar="N|MODEL=N",
                   help="model version to request and pin for the whole run, for both models or one "
                   "(repeat); default: the newest version every endpoint serves at start")
    p.add_argument("--discovery-interval", metavar="SECONDS", default=None,
                   help="seconds between re-resolutions of dns:/// servers during the run (file:/// "
                   f"lists are re-read when they change) (default ${DISCOVERY_INTERVAL_ENV}, else "
                   f"{DEFAULT_DISCOVERY_INTERVAL_S:g})")
    p.add_argument("--debug-dispatch", metavar="FILE", default=None,
                   help="write the events the request dispatcher decided on to FILE (JSON lines) "
                   "to reproduce the run's decisions with `python -m orchestrator.embed.dispatch."
                   "replay FILE` (default $VIRNUCPRO_DEBUG_DISPATCH, else none)")
    p.add_argument("--priority", choices=tuple(PRIORITIES), default=None,
                   help="request priority on shared servers: high for interactive and small jobs, "
                   "low for bulk re-analysis; orders the servers' queues, never pre-empts a "
                   f"running batch (default ${PRIORITY_ENV}, else {DEFAULT_PRIORITY})")
    p.add_argument("--window", type=int, default=DEFAULT_WINDOW,
                   help=f"frames per checkpointed window (default {DEFAULT_WINDOW})")
    p.add_argument("--lookahead", type=int, default=DEFAULT_LOOKAHEAD,
                   help="windows queued to the servers beyond the oldest unfinished one, so no GPU "
                   f"waits between windows (default {DEFAULT_LOOKAHEAD}; 0: one window at a time)")
    p.add_argument("--no-dedup", action="store_true",
                   help="send and classify every frame, repeats too (default: predict embeds and "
                   "classifies each distinct frame once per run, wherever it repeats; embed sends "
                   "each distinct nucleotide slice and protein once)")
    p.add_argument("--dedup-memory", default=None, metavar="SIZE",
                   help="bound of the deduplication memory (e.g. 512M, 4G; default "
                   f"{DEFAULT_DEDUP_MEMORY >> 30}G). predict keeps the answers of frames already "
                   f"classified, 32 bytes each: the default holds at least "
                   f"{answer_capacity(DEFAULT_DEDUP_MEMORY) / 1e6:.1f} million distinct frames (a "
                   "1M-read sample of short reads has at most 6 million). embed and "
                   "--save-embeddings keep vectors instead, 13 KB each at the real widths (about "
                   "78,000 per GiB), least recently used out")
    _add_secure_access(p)


def _add_call_options(p: argparse.ArgumentParser) -> None:
    """The thresholds of the calls and regions, the sample name and --no-report: predict and call
    declare them once, here, so both accept the same values."""
    calls = p.add_argument_group(
        "sequence calls and viral regions (sequence_calls.tsv, viral_regions.tsv/.bed, "
        "contigs_classified.tsv; method of viral-pipelines' classify_virnucpro_contigs)")
    defaults = CallSettings()
    for name, kind, text in (
        ("min_weighted_delta", float, "weighted mean delta above which a sequence is viral "
         "(below minus it: non-viral), and above which a chunk counts as viral for regions"),
        ("high_confidence_delta", float, "|weighted delta| above which a call is high confidence"),
        ("min_confident_score", float, "a chunk is confident when its own max score exceeds this"),
        ("max_opposing_score", float, "... and the opposing max score is below this"),
        ("min_ambiguous_score", float, "a chunk is ambiguous when both max scores exceed this"),
        ("min_viral_prop", float, "confident viral chunks / non-ambiguous chunks needed for "
         "high or moderate"),
        ("min_nonviral_prop", float, "the same for non-viral calls"),
        ("min_chunks", int, "fewer scored chunks lower the tier one step"),
        ("region_max_gap", int, "non-viral chunks bridged inside a viral region"),
        ("region_min_length", int, "shortest viral region reported, in bp"),
    ):
        calls.add_argument(f"--{name.replace('_', '-')}", type=kind, default=getattr(defaults, name),
                           metavar="N", help=f"{text} (default {getattr(defaults, name)})")
    p.add_argument("--sample", metavar="NAME",
                   help="sample name in the MultiQC files (virnucpro_mqc.tsv, virnucpro_calls_mqc.tsv); "
                   "default: the name recorded by an earlier run, else the first input's base name "
                   "without its format and compression suffixes")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")


def _call_settings(args: argparse.Namespace) -> CallSettings:
    return CallSettings(**{f.name: getattr(args, f.name) for f in fields(CallSettings)})


def _chunk_size(text: str) -> int:
    """300 and 500 match the published classifiers; other sizes need a classifier trained on them."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not MIN_CHUNK_SIZE <= value <= MAX_CHUNK_SIZE:
        raise argparse.ArgumentTypeError(
            f"must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} (ESM-2 takes proteins of at "
            f"most 1,022 residues), got {value}")
    return value


def _shard(text: str) -> Shard:
    try:
        return parse_shard(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="orchestrator",
        description="VirNucPro viral-sequence identification with encoders served by NVIDIA Triton.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "prepare",
        help="chunk + six-frame translate: the original's three intermediate files",
        description="Write <stem>_chunked<N>.fa, <stem>_identified_nucleotide.fa and "
        "<stem>_identified_protein.faa exactly as the original VirNucPro does.",
        epilog="example:\n  orchestrator prepare reads.fa -o prep/ --chunk-size 500",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="FASTA file(s), .gz allowed, - for stdin")
    p.add_argument("-o", "--outdir", required=True, help="output directory (created if missing)")
    p.add_argument("--chunk-size", type=_chunk_size, required=True, metavar="N",
                   help="chunk length: 300 or 500 for the published classifiers")
    _add_common(p)

    p = sub.add_parser(
        "predict",
        help="the whole pipeline: sequences in, VirNucPro predictions and per-sequence calls out",
        description="Read FASTA/FASTQ/SAM/BAM/CRAM, chunk, translate, embed with DNABERT-S + ESM-2 "
        "(Triton or in-process), classify, write the original's prediction_results.txt and "
        "prediction_results_highestscore.csv, plus sequence_summary.tsv, sequence_calls.tsv, "
        "viral_regions.tsv/.bed, chunk_scores.bedgraph, report.html and run.json. Rerunning the "
        "same command resumes an interrupted run; rerunning a finished one with other call "
        "thresholds re-derives the calls without re-embedding.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="FASTA, FASTQ, SAM, BAM or CRAM; plain, gzip, bzip2, xz or zstd (sniffed); "
                   "- for stdin (not BAM/CRAM); several inputs are one sample")
    p.add_argument("-o", "--outdir", required=True, help="output directory (created if missing)")
    p.add_argument("--chunk-size", type=_chunk_size, required=True, metavar="N",
                   help="chunk length: 300 or 500 for the published classifiers, or the size a "
                   "classifier from `orchestrator train` was trained on")
    p.add_argument("--classifier", required=True,
                   help="300_model.pth / 500_model.pth, or a .safetensors from `orchestrator train`")
    _add_serving(p)
    _add_call_options(p)
    p.add_argument("--save-embeddings", action="store_true",
                   help="also write OUTDIR/embeddings.h5: every kept frame's DNABERT-S and ESM-2 "
                   "vectors (the file `orchestrator embed` writes; 13 KB per frame with the real "
                   "models), to re-classify, train or evaluate later without a GPU")
    p.add_argument("--embeddings", metavar="RUN.h5",
                   help="re-classify: take every frame's vectors from this file of an earlier run "
                   "of the same INPUTs (predict --save-embeddings or embed) instead of embedding; "
                   "no server is asked")
    p.add_argument("--restart", action="store_true", help="discard a previous run's state in OUTDIR and start over")
    p.add_argument("--start-server", action="store_true",
                   help="start a private tritonserver for this run alone from --model-repository "
                   "(free loopback ports, GPU configs when a GPU is visible), and stop it when "
                   "the run ends, however it ends; for batch systems with no standing server")
    p.add_argument("--shard", type=_shard, metavar="K/N",
                   help="do only part K of N of the records (split by bases, records whole, in "
                   "input order), so N processes share one sample; `orchestrator merge` joins "
                   "the N output folders into the unsharded run's files")
    _add_common(p)

    p = sub.add_parser(
        "merge",
        help="join the output folders of predict --shard 1/N ... N/N into one run",
        description="Check that the folders are the N finished shards of one sample run with the "
        "same options, then write OUTDIR byte for byte as one unsharded predict would "
        "(prediction_results.txt, the highestscore table, sequence_summary.tsv, the calls, "
        "regions, tracks, MultiQC files, report.html, embeddings.h5 when saved) and a run.json "
        "summing the shards' counts and timings. Refused (exit 2, nothing written) when a shard "
        "is missing, repeated, unfinished or of another run.",
        epilog="example:\n  orchestrator predict reads.fq.gz -o shard1/ --shard 1/2 ...\n"
        "  orchestrator predict reads.fq.gz -o shard2/ --shard 2/2 ...\n"
        "  orchestrator merge shard1/ shard2/ -o out/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shards", nargs="+", metavar="SHARD_DIR",
                   help="the -o folders of the predict --shard K/N runs, in any order")
    p.add_argument("-o", "--outdir", required=True,
                   help="output directory of the merged run (created if missing; not a shard)")
    p.add_argument("--no-report", action="store_true", help="do not write report.html")
    _add_common(p)

    p = sub.add_parser(
        "call",
        help="a finished run's calls again with other thresholds: no server, no model",
        description="Re-derive sequence_calls.tsv, viral_regions.tsv/.bed, chunk_scores.bedgraph, "
        "contigs_classified.tsv, the MultiQC files, report.html and the thresholds in run.json "
        "from the files a finished predict left in OUTDIR (the same bytes a predict rerun with "
        "these options writes). A folder that is not a finished run is refused (exit 2) and left "
        "as it was; a failure half-way leaves the previous files intact.",
        epilog="examples:\n  orchestrator call out/ --min-chunks 3 --region-max-gap 2\n"
        "  orchestrator call out/ --min-weighted-delta 0.5 --sample patient7",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("outdir", metavar="OUTDIR", help="the -o/--outdir of a finished predict")
    _add_call_options(p)
    _add_common(p)

    p = sub.add_parser(
        "compare",
        help="two finished runs of the same inputs side by side: call agreement, score deltas",
        description="Compare two finished predict runs of the same inputs, chunk size and "
        "classifier type (e.g. fp32 against fp16, or another model version, card or Triton "
        "version): per-sequence call agreement and the confusion of calls, per-chunk max "
        "|delta score| with its quantiles, frames compared, and the records that differ most. "
        "Exit 0: every call agrees and every chunk is within --max-score-diff; 1: not; 2: the "
        "runs cannot be compared (other inputs or chunk size, an unfinished run), with the reason.",
        epilog="examples:\n  orchestrator compare out_fp32/ out_fp16/\n"
        "  orchestrator compare out_fp32/ out_fp8/ --max-score-diff 0.05 --json > cmp.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_a", metavar="RUN_A", help="the -o/--outdir of the reference run")
    p.add_argument("run_b", metavar="RUN_B", help="the -o/--outdir of the run to check against it")
    p.add_argument("--max-score-diff", type=float, default=DEFAULT_MAX_SCORE_DIFF, metavar="X",
                   help="largest |delta| of a chunk's max scores still counted as agreeing "
                   f"(default {DEFAULT_MAX_SCORE_DIFF})")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="N",
                   help=f"records listed where the runs differ most (default {DEFAULT_TOP})")
    p.add_argument("--json", action="store_true", help="the same figures as one JSON object")
    _add_common(p)

    p = sub.add_parser(
        "embed",
        help="sequences in, every kept frame's DNABERT-S + ESM-2 vectors out (HDF5)",
        description="The predict pipeline up to the embeddings (same inputs, servers, windows, "
        "resume and bad-input handling), written as an HDF5 file: frame/chunk/record IDs, "
        "dna_embedding, protein_embedding, optional label; model names, widths and weight "
        "checksums as attributes. Rerunning the same command resumes an interrupted run.",
        epilog=EMBED_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="FASTA, FASTQ, SAM, BAM, CRAM or GenBank; plain or compressed; - for stdin")
    p.add_argument("-o", "--output", required=True, metavar="OUT.h5", help="embeddings file to write")
    p.add_argument("--chunk-size", type=_chunk_size, required=True, metavar="N",
                   help="chunk length (the read length you will classify, e.g. 150)")
    p.add_argument("--label", help="label stored with every frame and as a file attribute "
                   "(e.g. viral, host); train takes the class from --viral/--other")
    p.add_argument("--cds-frames-only", action="store_true",
                   help="keep only frames whose protein lies in an annotated CDS (GenBank inputs): "
                   "the original's choice of training frames")
    _add_serving(p)
    p.add_argument("--restart", action="store_true", help="discard a previous run's state and start over")
    _add_common(p)

    p = sub.add_parser(
        "train",
        help="train a classifier on labelled embeddings files",
        description="Train the original's classifier shape (Linear -> BatchNorm -> ReLU -> Dropout -> "
        "Linear) with its recipe by default, the best epoch's weights restored, the held-out "
        "split made by record. Writes a .safetensors predict --classifier loads, and a JSON "
        "model card beside it (<name>.card.json).",
        epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--viral", nargs="+", required=True, metavar="A.h5", help="embeddings of viral sequences (label 1)")
    p.add_argument("--other", nargs="+", required=True, metavar="C.h5",
                   help="embeddings of everything else: hosts, bacteria, ... (label 0)")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.safetensors",
                   help="the trained classifier; its model card is written beside it (MODEL.card.json)")
    recipe = p.add_argument_group("recipe (defaults: the original's)")
    recipe.add_argument("--epochs", type=int, default=200, help="most epochs (default 200)")
    recipe.add_argument("--batch-size", type=int, default=32, help="frames per step (default 32)")
    recipe.add_argument("--lr", type=float, default=2e-4, help="SGD learning rate (default 2e-4)")
    recipe.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    recipe.add_argument("--step-size", type=int, default=10, help="StepLR epochs per step (default 10)")
    recipe.add_argument("--gamma", type=float, default=0.85, help="StepLR factor (default 0.85)")
    recipe.add_argument("--patience", type=int, default=5,
                        help="stop after this many epochs without a lower validation loss (default 5)")
    recipe.add_argument("--val-fraction", type=float, default=0.2,
                        help="share of records held out for validation (default 0.2)")
    recipe.add_argument("--hidden", type=int, default=512, help="hidden units (default 512)")
    recipe.add_argument("--dropout", type=float, default=0.5, help="dropout (default 0.5)")
    recipe.add_argument("--balance", choices=("none", "downsample", "weight"), default="none",
                        help="class balance: downsample the larger class's training frames (the "
                        "original's way), weight the loss, or none (default)")
    recipe.add_argument("--seed", type=int, default=42, help="seed of the split, sampling and weights (default 42)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train: auto (a GPU when torch sees one; default), cpu or cuda")
    _add_common(p)

    p = sub.add_parser(
        "evaluate",
        help="measure a classifier on labelled embeddings: metrics, ROC, score histogram",
        description="Accuracy, precision, recall, F1, MCC, ROC-AUC, PR-AUC and the confusion matrix, "
        "per frame and per chunk (the max-over-frames consensus predict writes), as metrics.json "
        "and metrics.tsv, with scores.tsv, roc.png and score_histogram.png.",
        epilog="example:\n  orchestrator evaluate --classifier 300_model.pth --viral test_viral.h5 "
        "--other test_host.h5 -o eval/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--classifier", required=True, help=".pth (published) or .safetensors (train)")
    p.add_argument("--viral", nargs="+", default=[], metavar="A.h5", help="embeddings of viral sequences")
    p.add_argument("--other", nargs="+", default=[], metavar="C.h5", help="embeddings of other sequences")
    p.add_argument("-o", "--outdir", required=True, help="output directory (created if missing)")
    _add_common(p)

    p = sub.add_parser(
        "report",
        help="(re)write OUTDIR/report.html from a finished run's files",
        description="Write report.html (self-contained: counts, score histogram, calls table, "
        "score tracks of the longest sequences) from the files a finished predict left in OUTDIR.",
    )
    p.add_argument("outdir", metavar="OUTDIR", help="the -o/--outdir of a finished predict")
    p.add_argument("--top-rows", type=int, default=1000, help="calls table rows in the page (default 1000)")
    p.add_argument("--tracks", type=int, default=10, help="longest sequences drawn as score tracks (default 10)")
    _add_common(p)

    p = sub.add_parser(
        "serve",
        help="run a real tritonserver on a model repository in the foreground",
        description="Start tritonserver (from nvidia-pytriton or PATH), wait until every model is ready, "
        "stay in the foreground until SIGINT/SIGTERM.",
        epilog="example:\n  orchestrator serve --model-repository artifacts/model_repository --grpc-port 8001",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model-repository", required=True,
                   help="Triton model repository, e.g. artifacts/model_repository from `python -m export`")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default loopback: this machine only); 0.0.0.0 serves other "
                   "nodes, e.g. one server per GPU node of a cluster (then consider --ssl-cert)")
    p.add_argument("--grpc-port", type=int, default=8001,
                   help="gRPC port, what predict and status use (default 8001; checked free first)")
    p.add_argument("--http-port", type=int, default=8000,
                   help="HTTP port: health checks (default 8000; loopback only with --ssl-cert)")
    p.add_argument("--metrics-port", type=int, default=8002,
                   help="Prometheus metrics page /metrics, bound on --host (default 8002)")
    p.add_argument("--gpu", action="store_true", help="use configs/gpu.pbtxt (KIND_GPU on every GPU)")
    p.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for all models")
    admin = p.add_argument_group(
        "administration (model repository, shared memory, logging and trace are refused without "
        "the admin key; inference, health, metadata, config and statistics are open)")
    admin.add_argument("--admin-key", metavar="KEY",
                       help=f"value of the admin header (default ${ADMIN_KEY_ENV}, which keeps it out of "
                       "`ps`; neither set: administrative calls are refused to everyone)")
    admin.add_argument("--model-control", choices=MODEL_CONTROL, default="none",
                       help="none: models load at start and stay (default); explicit: admins may "
                       "load and unload models remotely")
    tls = p.add_argument_group("TLS for the gRPC endpoint (HTTP then listens on loopback only)")
    tls.add_argument("--ssl-cert", metavar="SERVER.pem", help="server certificate (turns TLS on)")
    tls.add_argument("--ssl-key", metavar="SERVER.key", help="private key of --ssl-cert")
    tls.add_argument("--ssl-root-cert", metavar="CA.pem",
                     help="require client certificates signed by this CA (mutual TLS)")
    _add_common(p)

    p = sub.add_parser(
        "status",
        help="the servers as an operator sees them: ready, models, weights, queues, GPU load",
        description="One line per endpoint: reachable/ready, TLS, each model's version, width, "
        "weights checksum, instance kind and count, max batch and priority levels, and live load "
        "from its metrics page (pending requests, inferences/s, mean queue and compute time per "
        "request over --interval, GPU utilisation and memory). A last line says how many "
        "endpoints a predict would use now and whether they agree on the weights. Exit 0: at "
        "least one usable and all usable agree; 2: they disagree; 3: none usable.",
        epilog="examples:\n  orchestrator status --server gpu01:8001,gpu02:8001\n"
        "  orchestrator status --server dns:///virnucpro-triton:8001 --json\n"
        "  orchestrator status --watch 10",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_servers(p)
    p.add_argument("--metrics-url", action="append", metavar="URL",
                   help="metrics page of an endpoint, one per endpoint in --server order "
                   f"(default http://HOST:{DEFAULT_METRICS_PORT}/metrics of each gRPC HOST)")
    p.add_argument("--metrics-port", type=int, default=DEFAULT_METRICS_PORT,
                   help=f"metrics port on each server's host when --metrics-url is not given "
                   f"(default {DEFAULT_METRICS_PORT})")
    p.add_argument("--interval", type=float, default=2.0,
                   help="seconds between the two metrics reads that rates and means cover (default 2)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per call to a server (default 5)")
    p.add_argument("--json", action="store_true", help="one JSON object per check, for machines")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="check again every SECONDS until Ctrl-C")
    _add_secure_access(p)
    _add_common(p)

    p = sub.add_parser(
        "demo",
        help="the main job on the embedded default: demo models, local Triton, bundled example",
        description="Build demo artifacts if none exist, start a local Triton, run predict on the "
        "bundled example FASTA, print a summary, stop the server.",
    )
    p.add_argument("--artifacts", default="artifacts", help="exported artifacts folder (default ./artifacts)")
    p.add_argument("-o", "--outdir", default="demo_out", help="predict's output directory (default ./demo_out)")
    _add_common(p)
    return parser


def _configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose >= 2 else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr, force=True)


def _servers(args: argparse.Namespace) -> list[str]:
    return args.server or [os.environ.get(SERVER_ENV) or DEFAULT_SERVER]


def _connection(args: argparse.Namespace) -> ConnectionOptions:
    from orchestrator.embed.triton.endpoints import ConnectionOptions, parse_headers

    return ConnectionOptions(ssl=args.ssl, root_cert=args.ssl_root_cert, cert=args.ssl_cert,
                             key=args.ssl_key, headers=parse_headers(args.header))


def _pipeline_options(args: argparse.Namespace, progress: bool) -> PipelineOptions:
    """The options predict and embed share: inputs, chunking, where and how to embed, resume."""
    return PipelineOptions(
        inputs=args.inputs, chunk_size=args.chunk_size, backend=args.backend,
        servers=_servers(args),
        model_repository=args.model_repository, batch_size=args.batch_size,
        max_in_flight=args.max_in_flight, window=args.window, lookahead=args.lookahead,
        restart=args.restart, progress=progress, connection=_connection(args),
        priority=args.priority, dedup=not args.no_dedup,
        # parsed here, not by argparse: a bad size gets one line (InputError), not the usage
        dedup_memory=(DEFAULT_DEDUP_MEMORY if args.dedup_memory is None
                      else parse_size(args.dedup_memory)),
        shard=getattr(args, "shard", None),
        model_versions=args.model_version, discovery_interval=args.discovery_interval,
        debug_dispatch=args.debug_dispatch,
    )


def _dispatch(args: argparse.Namespace, progress: bool) -> int:
    if args.command == "prepare":
        from orchestrator.commands.prepare import run_prepare

        run_prepare(inputs=args.inputs, outdir=args.outdir, chunk_size=args.chunk_size, progress=progress)
        return 0
    if args.command == "predict":
        from orchestrator.commands.predict import run_predict, run_predict_with_server

        if args.start_server and args.server:
            raise InputError("--start-server and --server: give one (--start-server runs its own)")
        (run_predict_with_server if args.start_server else run_predict)(
            _pipeline_options(args, progress),
            outdir=args.outdir,
            classifier=args.classifier,
            call_settings=_call_settings(args),
            report=not args.no_report,
            save_embeddings=args.save_embeddings,
            sample=args.sample,
            embeddings=args.embeddings,
        )
        return 0
    if args.command == "merge":
        from orchestrator.write.merge import run_merge

        run_merge(args.shards, args.outdir, report=not args.no_report)
        return 0
    if args.command == "call":
        from orchestrator.commands.call import run_call

        run_call(args.outdir, _call_settings(args), sample=args.sample, report=not args.no_report)
        return 0
    if args.command == "compare":
        from orchestrator.commands.compare import run_compare

        return run_compare(args.run_a, args.run_b, max_score_diff=args.max_score_diff,
                           top=args.top, json_output=args.json)
    if args.command == "embed":
        from orchestrator.learning.embed_run import run_embed

        run_embed(_pipeline_options(args, progress), output=args.output, label=args.label,
                  cds_frames_only=args.cds_frames_only)
        return 0
    if args.command == "train":
        from orchestrator.learning.train import run_train

        run_train(viral=args.viral, other=args.other, output=args.output, epochs=args.epochs,
                  batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
                  step_size=args.step_size, gamma=args.gamma, patience=args.patience,
                  val_fraction=args.val_fraction, hidden=args.hidden, dropout=args.dropout,
                  balance=args.balance, seed=args.seed, progress=progress, device=args.device)
        return 0
    if args.command == "evaluate":
        from orchestrator.learning.evaluate import run_evaluate

        run_evaluate(classifier=args.classifier, viral=args.viral, other=args.other,
                     outdir=args.outdir)
        return 0
    if args.command == "report":
        from orchestrator.write.report import write_report

        if not os.path.isfile(os.path.join(args.outdir, "run.json")):
            raise InputError(f"{args.outdir}: no finished run here (run.json missing)")
        if args.top_rows < 0 or args.tracks < 0:
            raise InputError("--top-rows and --tracks must be 0 or more")
        path = write_report(args.outdir, top_rows=args.top_rows, tracks=args.tracks)
        log.info("wrote %s", path)
        return 0
    if args.command == "serve":
        from orchestrator.embed.triton.server import ServerTLS, serve

        if (args.ssl_cert is None) != (args.ssl_key is None):
            raise InputError("--ssl-cert and --ssl-key go together (server certificate and its key)")
        if args.ssl_root_cert and not args.ssl_cert:
            raise InputError("--ssl-root-cert (require client certificates) needs --ssl-cert/--ssl-key")

        return serve(
            model_repository=args.model_repository,
            host=args.host,
            grpc_port=args.grpc_port,
            http_port=args.http_port,
            metrics_port=args.metrics_port,
            gpu=args.gpu,
            ready_timeout=args.ready_timeout,
            tls=ServerTLS(args.ssl_cert, args.ssl_key, args.ssl_root_cert) if args.ssl_cert else None,
            admin_key=args.admin_key or os.environ.get(ADMIN_KEY_ENV) or None,
            model_control=args.model_control,
        )
    if args.command == "status":
        from orchestrator.commands.status import run_status
        from orchestrator.embed.triton.discovery import parse_servers

        return run_status(parse_servers(_servers(args)), _connection(args),
                          metrics_urls=args.metrics_url, metrics_port=args.metrics_port,
                          interval=args.interval, timeout=args.timeout, json_output=args.json,
                          watch=args.watch)
    if args.command == "demo":
        from orchestrator.commands.demo import run_demo

        return run_demo(artifacts=args.artifacts, outdir=args.outdir, progress=progress)
    raise InputError(f"unknown command {args.command!r}")


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code instead of exiting, so tests can call it in-process."""
    verbose = argv is not None and any(a.startswith("-v") or a == "--verbose" for a in argv)
    # gRPC core logs every failed TLS handshake at info level; our own one-line error says it
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        args = build_parser().parse_args(argv)
        verbose = args.verbose > 0
        _configure_logging(args.verbose, args.quiet)
        progress = not args.no_progress and not args.quiet and sys.stderr.isatty()
        return _dispatch(args, progress)
    except (OrchestratorError, EncoderError) as exc:  # both carry exit_code
        if verbose:
            log.exception("details")
        print(f"orchestrator: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"orchestrator: error: {Interrupted(signal.SIGINT)}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # the last line of defence: one line, no traceback unless -v
        if verbose:
            log.exception("unexpected error")
        print(f"orchestrator: error: unexpected {type(exc).__name__}: {exc} (rerun with -v for details)",
              file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
