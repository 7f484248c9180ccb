"""`orchestrator demo` (`make demo`): the main job end to end on one machine, offline.

Builds demo artifacts (random weights in the real on-disk formats) when none exist, starts a local
tritonserver on free loopback ports, runs `predict` on the bundled example FASTA with the demo
500-nt classifier, prints where the outputs are and a short summary, and stops the server.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from orchestrator.errors import OrchestratorError
from orchestrator.write.paths import OutputPaths

log = logging.getLogger("orchestrator")

EXAMPLE_FASTA = Path(__file__).resolve().parents[2] / "examples" / "example.fa"
CHUNK_SIZE = 500

BANNER = """\
#############################################################################################
#  DEMO WEIGHTS: the encoders and the classifier are RANDOM. The predictions below are      #
#  MEANINGLESS; they only show that the pipeline runs. For real predictions export the      #
#  published weights (python -m export pretrained --out artifacts) and run predict.         #
#############################################################################################"""


def _build_artifacts(artifacts: Path) -> None:
    print(f"demo: building demo artifacts in {artifacts} (python -m export demo) ...",
          file=sys.stderr)
    proc = subprocess.run([sys.executable, "-m", "export", "demo", "--out", str(artifacts)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise OrchestratorError(f"building demo artifacts failed (exit {proc.returncode}): "
                                + " | ".join(tail))


def run_demo(*, artifacts: str, outdir: str, progress: bool) -> int:
    """Run the demo; returns 0 (errors raise OrchestratorError subclasses for the CLI)."""
    from orchestrator.commands.predict import run_predict
    from orchestrator.embed.triton.server import TritonServer
    from orchestrator.pipeline.options import PipelineOptions

    root = Path(artifacts)
    repo = root / "model_repository"
    classifier = root / "classifiers" / f"{CHUNK_SIZE}_model.pth"
    if not repo.is_dir():
        _build_artifacts(root)
    if not classifier.is_file():
        raise OrchestratorError(f"{classifier} is missing; rebuild with "
                                f"`python -m export demo --out {root}`")
    print(BANNER, file=sys.stderr)
    print(f"demo: starting tritonserver on {repo} (loopback, free ports) ...", file=sys.stderr)
    with TritonServer(repo) as server:
        print(f"demo: server ready at {server.grpc_url}; predicting {EXAMPLE_FASTA.name}",
              file=sys.stderr)
        options = PipelineOptions(inputs=[str(EXAMPLE_FASTA)], chunk_size=CHUNK_SIZE,
                                  servers=server.grpc_url, model_repository=str(repo),
                                  restart=True, progress=progress)
        record = run_predict(options, outdir=outdir, classifier=str(classifier))
    counts = record["counts"]
    viral = _viral_chunks(Path(outdir) / "prediction_results_highestscore.csv")
    fps = record["throughput"].get("frames_per_s")
    print(BANNER, file=sys.stderr)
    print(f"demo: {counts['records']} records, {counts['chunks']} chunks, {counts['frames']} "
          f"frames scored, {viral} chunks called viral (meaningless: demo weights), "
          f"{fps} frames/s")
    paths = OutputPaths(outdir)
    names = ", ".join(p.name for p in (*paths.results(), *paths.answers()))
    print(f"demo: outputs in {Path(outdir).resolve()}/ ({names})")
    report = Path(outdir).resolve() / "report.html"
    if report.exists():
        print(f"demo: open file://{report} in a browser for the report")
    return 0


def _viral_chunks(highest: Path) -> int:
    with open(highest) as fh:
        next(fh, None)
        return sum(1 for line in fh if line.split("\t", 2)[1] == "True")
