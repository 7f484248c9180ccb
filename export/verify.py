"""Check an exported folder with the loaders that will serve it (the demo and pretrained paths
share this, so a conversion that passes here is what Triton and the local backend will load)."""

from __future__ import annotations

from pathlib import Path

from export.layout import CHUNK_SIZES, classifier_path, weights_dir


def check_weights(out: Path, *, embed: bool = True, version: int | None = None) -> dict[str, int]:
    """Load both encoders through `encoders` (key check included); optionally embed a probe.

    Returns {model: hidden size}. With embed=False the modules are built on the meta device and
    only the keys and shapes are checked, so a 3B checkpoint is verified without 11 GB of RAM.
    """
    from encoders import load_embedder
    from encoders.common import read_state_file
    from encoders.dnabert import WEIGHTS_FILE, load_tokenizer, read_config
    from encoders.dnabert import build_module as build_dnabert
    from encoders.esm2 import build_module as build_esm2
    from encoders.esm2 import find_checkpoint, read_checkpoint

    hidden: dict[str, int] = {}
    if embed:
        probes = {"dnabert_s": "ACGTACGTTAGCNNACGT" * 3, "esm2": "MKTAYIAKQRQISFVKSHFSRQ"}
        for model, probe in probes.items():
            emb = load_embedder(model, weights_dir(out, model, version)).embed([probe, probe[:7]])
            if not (emb == emb).all():
                raise RuntimeError(f"{model}: probe embedding has NaN")
            hidden[model] = emb.shape[1]
        return hidden
    ddir = weights_dir(out, "dnabert_s", version)
    cfg = read_config(ddir)
    load_tokenizer(ddir)
    build_dnabert(cfg, read_state_file(ddir / WEIGHTS_FILE), str(ddir / WEIGHTS_FILE))
    hidden["dnabert_s"] = cfg.hidden_size
    ckpt = find_checkpoint(weights_dir(out, "esm2", version))
    ecfg, state = read_checkpoint(ckpt)
    build_esm2(ecfg, state, str(ckpt))
    hidden["esm2"] = ecfg.embed_dim
    return hidden


def check_classifiers(out: Path, hidden: dict[str, int]) -> None:
    """Load each classifier with the orchestrator's safe loader and check its input width."""
    from orchestrator.classify.classifier import load_classifier

    for size in CHUNK_SIZES:
        load_classifier(classifier_path(out, size)).check_widths(hidden["dnabert_s"], hidden["esm2"])
