"""`python -m export demo|pretrained --out OUT`: build the artifacts folder.

Layout written (what `orchestrator serve/predict/demo` expect):
  OUT/model_repository/dnabert_s/{config.pbtxt, configs/gpu.pbtxt, 1/model.py,
                                  1/weights/{config.json, pytorch_model.bin, tokenizer.json}}
  OUT/model_repository/esm2/{config.pbtxt, configs/gpu.pbtxt, 1/model.py,
                             1/weights/{esm2_*.pt, esm2_*-contact-regression.pt}}
  OUT/classifiers/{300,500}_model.pth
  OUT/export.json  (kind, seed or sources, sha256 of every weight file)

With --version N the encoders' weights go into a new version folder N next to the existing ones
(OUT/model_repository/<model>/N/weights, model.py beside them), the configs gain that version's
checksum (parameter weights_sha256_N), and nothing else changes: the servers can serve both
versions during a rollout (version_policy in the configs).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from encoders.errors import EncoderError
from orchestrator.errors import InputError, OrchestratorError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        raise InputError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m export", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("demo", help="small random models in the real formats (meaningless output)")
    p.add_argument("--out", required=True, help="artifacts folder (created; models in it replaced)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0); same seed, same bytes")
    _add_version(p)
    p = sub.add_parser("pretrained", help="the published DNABERT-S, ESM-2 3B and classifiers")
    p.add_argument("--out", required=True, help="artifacts folder (created; models in it replaced)")
    p.add_argument("--dnabert-revision", default=None,
                   help="hub revision (commit) of zhihan1996/DNABERT-S to fetch")
    p.add_argument("--local-dir", default=None,
                   help="take the files from this folder instead of downloading (offline machines)")
    p.add_argument("--probe", action="store_true",
                   help="also embed a probe sequence on CPU (ESM-2 3B in fp32 needs ~12 GB RAM); "
                        "by default keys, shapes and the tokenizer are checked")
    _add_version(p)
    return parser


def _add_version(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", type=int, default=None, metavar="N",
                   help="add the encoder weights as model version N next to the versions already "
                   "in OUT/model_repository (configs and classifiers kept); default: write version "
                   "1, replacing the models")


def _check_version(version: int | None) -> None:
    if version is not None and version < 1:
        raise InputError(f"--version must be 1 or more, got {version}")


def run_demo(out: Path, seed: int, version: int | None = None) -> None:
    """Write the demo artifacts, then load them back through the real loaders."""
    from export import demo
    from export.layout import prepare_model_dir, prepare_version_dir, write_manifest
    from export.verify import check_classifiers, check_weights

    start = time.perf_counter()
    if version is not None:
        demo.write_dnabert(prepare_version_dir(out, "dnabert_s", version), seed)
        demo.write_esm2(prepare_version_dir(out, "esm2", version), seed)
        stamp_all(out, check_weights(out, embed=True, version=version), version)
        _report(out, write_manifest(out, "demo", {"seed": seed, "version": version}),
                time.perf_counter() - start)
        return
    demo.write_dnabert(prepare_model_dir(out, "dnabert_s"), seed)
    demo.write_esm2(prepare_model_dir(out, "esm2"), seed)
    width = demo.DNABERT_DEMO["hidden_size"] + demo.ESM_DEMO["embed_dim"]
    demo.write_classifiers(out, width, seed)
    hidden = check_weights(out, embed=True)
    check_classifiers(out, hidden)
    stamp_all(out, hidden)
    manifest = write_manifest(out, "demo", {"seed": seed, "hidden": hidden})
    _report(out, manifest, time.perf_counter() - start)
    print("export: WARNING: these are RANDOM demo weights; their predictions are meaningless. "
          "Use `python -m export pretrained` for real predictions.", file=sys.stderr)


def run_pretrained(out: Path, revision: str | None, local_dir: str | None, embed: bool,
                   version: int | None = None) -> None:
    """Fetch the published files into the layout, then check them with the real loaders."""
    from export import pretrained
    from export.layout import MODELS, prepare_model_dir, prepare_version_dir, write_manifest
    from export.verify import check_classifiers, check_weights

    start = time.perf_counter()
    rev = revision or pretrained.DNABERT_S_REVISION
    local = Path(local_dir) if local_dir else None
    if local is None:  # fail fast before touching OUT
        pretrained.probe([s.url for s in pretrained.sources(rev)])
    for model in MODELS:
        if version is None:
            prepare_model_dir(out, model)
        else:
            prepare_version_dir(out, model, version)
    pretrained.fetch_all(out, dnabert_revision=rev, local_dir=local, version=version)
    hidden = check_weights(out, embed=embed, version=version)
    if version is None:
        check_classifiers(out, hidden)
    stamp_all(out, hidden, version)
    extra = {"hidden": hidden, "dnabert_s_revision": rev,
             "sources": [s.url for s in pretrained.sources(rev)]}
    manifest = write_manifest(out, "pretrained", extra)
    _report(out, manifest, time.perf_counter() - start)


def stamp_all(out: Path, hidden: dict[str, int], version: int | None = None) -> None:
    """Write each model's width and weights checksum into its exported configs (for a new
    `version`: that version's checksum, its width checked against the configs)."""
    from encoders import weights_sha256
    from export.layout import MODELS, stamp_configs, stamp_version, weights_dir

    for model in MODELS:
        sha = weights_sha256(model, weights_dir(out, model, version))
        if version is None:
            stamp_configs(out, model, hidden[model], sha)
        else:
            stamp_version(out, model, version, hidden[model], sha)


def _report(out: Path, manifest: Path, seconds: float) -> None:
    files = sorted(p for p in out.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    for p in files:
        print(f"  {p.relative_to(out)}  ({p.stat().st_size:,} bytes)")
    print(f"export: wrote {len(files)} files under {out} in {seconds:.1f} s (manifest {manifest.name})")


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 ok, 2 bad usage or bad weights, 3 a source unreachable, 1 anything else."""
    try:
        args = build_parser().parse_args(argv)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        _check_version(args.version)
        if args.command == "demo":
            run_demo(out, args.seed, args.version)
        else:
            run_pretrained(out, args.dnabert_revision, args.local_dir,
                           embed=args.probe, version=args.version)
        return 0
    except (OrchestratorError, EncoderError) as exc:  # both carry exit_code
        print(f"export: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("export: interrupted", file=sys.stderr)
        return 130
