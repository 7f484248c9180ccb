"""Small random DNABERT-S / ESM-2 / classifier models in the published on-disk formats.

Same file names, key names, config fields and tokenizer layout as the real ones, so the real
loading code runs in tests, CI and the offline demo. Deterministic for a seed (byte-identical
files). The predictions they give are meaningless.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from export.layout import CHUNK_SIZES, classifier_path

DNABERT_DEMO = {
    "hidden_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 12,  # not a power of two: exercises the mixed ALiBi slopes
    "intermediate_size": 96,
    "vocab_size": 512,
}
ESM_DEMO = {"num_layers": 2, "embed_dim": 64, "attention_heads": 4}
ESM_DEMO_NAME = "esm2_t2_demo"
CLASSIFIER_HIDDEN = 512
SPECIAL_TOKENS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]  # ids 0..4, as DNABERT-2


# The published DNABERT-S architecture (for benchmarks with random weights of the real size).
DNABERT_REAL = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "vocab_size": 4096,
}


def dnabert_config(vocab_size: int, size: dict[str, int] = DNABERT_DEMO) -> dict[str, object]:
    """config.json with the field names of the published DNABERT-S file; `size` sets the shape."""
    return {
        "_name_or_path": "demo/DNABERT-S-random",
        "alibi_starting_size": 512,
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_bert.BertConfig",
            "AutoModel": "bert_layers.BertModel",
        },
        "classifier_dropout": None,
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": size["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": size["intermediate_size"],
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "num_attention_heads": size["num_attention_heads"],
        "num_hidden_layers": size["num_hidden_layers"],
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "transformers_version": "4.28.0",
        "type_vocab_size": 2,
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def train_tokenizer(seed: int, vocab_size: int):  # -> tokenizers.Tokenizer
    """A BPE tokenizer laid out like DNABERT-2's, trained on seeded random DNA."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    corpus = [letters[rng.integers(0, 4, int(n))].tobytes().decode()
              for n in rng.integers(50, 400, 600)]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
    )
    for i, name in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(name) == i, (name, tok.token_to_id(name))
    return tok


def _randomise(shapes: dict[str, tuple[int, ...]], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random tensors by key name: LayerNorm weights around 1, biases and matrices non-trivial."""
    out = {}
    for key, shape in shapes.items():
        noise = torch.randn(shape, generator=gen)
        lower = key.lower()
        if "layernorm" in lower or "layer_norm" in lower:
            out[key] = 1.0 + 0.2 * noise if key.endswith("weight") else 0.2 * noise
        elif key.endswith("bias"):
            out[key] = 0.1 * noise
        elif "embeddings" in key or "embed_tokens" in key:
            out[key] = noise
        else:
            out[key] = noise / float(np.sqrt(shape[-1]))
    return out


def write_dnabert(wdir: Path, seed: int, size: dict[str, int] = DNABERT_DEMO) -> None:
    """config.json + pytorch_model.bin (published key names, no `bert.` prefix) + tokenizer.json."""
    from encoders.dnabert import DnabertConfig, DnabertEncoder

    tok = train_tokenizer(seed, size["vocab_size"])
    config = dnabert_config(tok.get_vocab_size(), size)
    (wdir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tok.save(str(wdir / "tokenizer.json"))
    cfg = DnabertConfig.from_dict(config)
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in DnabertEncoder(cfg).state_dict().items()}
    c = cfg.hidden_size
    shapes.update({"pooler.dense.weight": (c, c), "pooler.dense.bias": (c,)})
    gen = torch.Generator().manual_seed(seed)
    torch.save(_randomise(shapes, gen), wdir / "pytorch_model.bin")


def write_esm2(wdir: Path, seed: int) -> None:
    """`esm2_t2_demo.pt` in fair-esm's layout (cfg Namespace + prefixed keys) + contact regression."""
    import esm

    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = esm.model.esm2.ESM2(alphabet=alphabet, token_dropout=True, **ESM_DEMO)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()
              if not k.endswith("rot_emb.inv_freq") and k != "lm_head.weight"}
    state = _randomise(shapes, torch.Generator().manual_seed(seed + 1))
    state["lm_head.weight"] = state["embed_tokens.weight"]  # tied, as in fair-esm
    for k, v in model.state_dict().items():
        if k.endswith("rot_emb.inv_freq"):
            state[k] = v.clone()
    model_state, regression = {}, {}
    for key in model.state_dict():
        if key.startswith("contact_head."):
            regression[key] = state[key]
        elif key.startswith("lm_head."):
            model_state["encoder." + key] = state[key]
        else:
            model_state["encoder.sentence_encoder." + key] = state[key]
    cfg = argparse.Namespace(
        arch="esm2",
        encoder_layers=ESM_DEMO["num_layers"],
        encoder_embed_dim=ESM_DEMO["embed_dim"],
        encoder_ffn_embed_dim=4 * ESM_DEMO["embed_dim"],
        encoder_attention_heads=ESM_DEMO["attention_heads"],
        token_dropout=True,
        max_positions=1024,
    )
    torch.save({"cfg": {"model": cfg}, "model": model_state}, wdir / f"{ESM_DEMO_NAME}.pt")
    torch.save({"model": regression}, wdir / f"{ESM_DEMO_NAME}-contact-regression.pt")


def classifier_state(width: int, seed: int) -> dict[str, np.ndarray]:
    """Random MLPClassifier weights with randomised BatchNorm running statistics."""
    rng = np.random.default_rng(seed)
    h = CLASSIFIER_HIDDEN

    def f32(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32)

    return {
        "hidden_layer.weight": f32(rng.standard_normal((h, width)) / np.sqrt(width)),
        "hidden_layer.bias": f32(0.1 * rng.standard_normal(h)),
        "bn1.weight": f32(1.0 + 0.2 * rng.standard_normal(h)),
        "bn1.bias": f32(0.1 * rng.standard_normal(h)),
        "bn1.running_mean": f32(0.2 * rng.standard_normal(h)),
        "bn1.running_var": f32(rng.uniform(0.5, 1.5, h)),
        "bn1.num_batches_tracked": np.array(1000, dtype=np.int64),
        "output_layer.weight": f32(rng.standard_normal((2, h)) / np.sqrt(h)),
        "output_layer.bias": f32(0.1 * rng.standard_normal(2)),
    }


def write_classifiers(out: Path, width: int, seed: int) -> None:
    """300_model.pth / 500_model.pth in the published whole-module pickle format."""
    from orchestrator.classify.classifier import save_classifier_pth

    for size in CHUNK_SIZES:
        path = classifier_path(out, size)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_classifier_pth(classifier_state(width, seed * 1000 + size), path)
