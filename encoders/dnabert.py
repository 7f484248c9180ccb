"""DNABERT-S (DNABERT-2 architecture) in plain torch: BPE tokens -> post-LN ALiBi encoder -> mean.

Loads the published folder (`config.json`, `pytorch_model.bin`, `tokenizer.json`) by key name; no
remote code is executed. Shapes: b = batch, t = tokens, h = heads, d = head dim, c = hidden.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.common import (
    Embedder,
    keep_mask,
    load_into,
    read_state_file,
    resolve_device,
    torch_dtype,
)
from encoders.errors import WeightsError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "pytorch_model.bin"
TOKENIZER_FILE = "tokenizer.json"
PAD_ID = 3  # [PAD] in the DNABERT-2 tokenizer ([UNK]=0 [CLS]=1 [SEP]=2 [PAD]=3 [MASK]=4)
DEFAULT_TOKEN_BUDGET = 16_384
MASK_BIAS = -10000.0  # what the remote code adds for padded keys; exp() of it is 0 in fp32


@dataclass(frozen=True)
class DnabertConfig:
    """The config.json fields the encoder needs (the published file has more; they are ignored)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    @classmethod
    def from_dict(cls, raw: Mapping[str, object], source: str = CONFIG_FILE) -> DnabertConfig:
        try:
            cfg = cls(
                vocab_size=int(raw["vocab_size"]),
                hidden_size=int(raw["hidden_size"]),
                num_hidden_layers=int(raw["num_hidden_layers"]),
                num_attention_heads=int(raw["num_attention_heads"]),
                intermediate_size=int(raw["intermediate_size"]),
                type_vocab_size=int(raw.get("type_vocab_size", 2)),
                layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{source}: missing or bad field {exc}") from None
        if cfg.hidden_size % cfg.num_attention_heads:
            raise WeightsError(
                f"{source}: hidden_size {cfg.hidden_size} is not divisible by "
                f"num_attention_heads {cfg.num_attention_heads}"
            )
        return cfg


def read_config(model_dir: Path) -> DnabertConfig:
    path = model_dir / CONFIG_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"{path}: not found (expected a DNABERT-S folder)") from None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable JSON: {exc}") from None
    return DnabertConfig.from_dict(raw, str(path))


def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi head slopes; non-powers of two take the 2^k slopes then every other 2^(k+1) slope."""

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(closest) + alibi_slopes(2 * closest)[0::2][: n_heads - closest]


class _Embeddings(nn.Module):
    def __init__(self, cfg: DnabertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # token_type_ids are all 0 and there are no position embeddings (ALiBi instead)
        x = self.word_embeddings(ids) + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _SelfAttention(nn.Module):
    def __init__(self, cfg: DnabertConfig) -> None:
        super().__init__()
        self.Wqkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)


class _AttentionOutput(nn.Module):
    def __init__(self, cfg: DnabertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class _Attention(nn.Module):
    def __init__(self, cfg: DnabertConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(cfg)
        self.output = _AttentionOutput(cfg)
        self.heads = cfg.num_attention_heads

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        # Wqkv rows are Q | K | V, each head-major: [b, t, 3, h, d] -> 3 x [b, h, t, d]
        q, k, v = self.self.Wqkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        a = a.transpose(1, 2).reshape(b, t, c)
        return self.output.LayerNorm(self.output.dense(a) + x)


class _Mlp(nn.Module):
    def __init__(self, cfg: DnabertConfig) -> None:
        super().__init__()
        self.gated_layers = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.wo = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated, linear = self.gated_layers(x).chunk(2, dim=-1)  # GeGLU, exact (erf) GELU
        return self.layernorm(self.wo(F.gelu(gated) * linear) + x)


class _Layer(nn.Module):
    def __init__(self, cfg: DnabertConfig) -> None:
        super().__init__()
        self.attention = _Attention(cfg)
        self.mlp = _Mlp(cfg)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attention(x, bias))


class _Encoder(nn.Module):
    def __init__(self, cfg: DnabertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg) for _ in range(cfg.num_hidden_layers))


class DnabertEncoder(nn.Module):
    """The DNABERT-2 encoder; submodule names equal the published state-dict keys.

    forward(tokens [b, t] int64 right-padded, lengths [b] int64 tokens per row) -> mean over the
    first lengths[row] tokens, [CLS] and [SEP] included, in float32 [b, c]. The attention and
    pooling mask is `position < length`, never `token != PAD_ID`: the tokenizer maps the text
    "[PAD]" to PAD_ID, and the original (one unpadded sequence at a time) attends to such a token.
    """

    def __init__(self, cfg: DnabertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg)
        self._slopes = alibi_slopes(cfg.num_attention_heads)
        self._slopes_on: dict[torch.device, torch.Tensor] = {}  # avoids a host copy per batch

    def attention_bias(self, keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """ALiBi -slope_h*|i-j| plus MASK_BIAS on padded keys: [b, h, t, t]."""
        t = keep.shape[1]
        pos = torch.arange(t, device=keep.device)
        dist = (pos[None, :] - pos[:, None]).abs().to(torch.float32)
        slopes = self._slopes_on.get(keep.device)
        if slopes is None:
            slopes = torch.tensor(self._slopes, dtype=torch.float32).to(keep.device)
            self._slopes_on[keep.device] = slopes
        alibi = -slopes[:, None, None] * dist  # [h, t, t]
        pad = (~keep).to(torch.float32) * MASK_BIAS  # [b, t]
        return (alibi[None] + pad[:, None, None, :]).to(dtype)

    def hidden_states(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Last hidden state per token [b, t, c] (padded positions are computed but meaningless)."""
        keep = keep_mask(lengths, tokens.shape[1])
        x = self.embeddings(tokens)
        bias = self.attention_bias(keep, x.dtype)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        return x

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        w = keep_mask(lengths, tokens.shape[1]).to(torch.float32)
        x = self.hidden_states(tokens, lengths).float()
        return (x * w[..., None]).sum(1) / w.sum(1, keepdim=True)


def map_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Published keys -> encoder keys: drop a `bert.` prefix, the MLM head (`cls.*`) and pooler.

    Pure; whatever else is left must then match the encoder exactly (see common.check_keys).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key[len("bert.") :] if key.startswith("bert.") else key
        if name.startswith(("cls.", "pooler.")):
            continue
        out[name] = value
    return out


def build_module(cfg: DnabertConfig, state: Mapping[str, torch.Tensor], source: str) -> DnabertEncoder:
    """An encoder holding `state` (published key names); raises WeightsError listing key problems."""
    with torch.device("meta"):
        module = DnabertEncoder(cfg)
    load_into(module, map_state_dict(state), source)
    return module.eval()


def load_tokenizer(model_dir: Path):  # -> tokenizers.Tokenizer
    """The published tokenizer.json, with truncation and padding off (we pad ourselves)."""
    from tokenizers import Tokenizer

    path = model_dir / TOKENIZER_FILE
    if not path.is_file():
        raise WeightsError(f"{path}: not found (expected a DNABERT-S folder)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise WeightsError(f"{path}: not a tokenizers JSON file: {exc}") from None
    tok.no_truncation()
    tok.no_padding()
    return tok


def weight_files(model_dir: Path) -> list[Path]:
    """The files whose bytes decide DNABERT-S's embeddings (their sha256 identifies the weights)."""
    return [model_dir / CONFIG_FILE, model_dir / WEIGHTS_FILE, model_dir / TOKENIZER_FILE]


def load_dnabert(
    model_dir: str | Path,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    token_budget: int | None = None,
) -> Embedder:
    """Load a DNABERT-S folder (config.json, pytorch_model.bin, tokenizer.json) as an Embedder."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise WeightsError(f"{model_dir}: not a folder (expected config.json, {WEIGHTS_FILE}, tokenizer.json)")
    dtype = torch_dtype(precision)
    dev = resolve_device(device)
    cfg = read_config(model_dir)
    tok = load_tokenizer(model_dir)
    weights = model_dir / WEIGHTS_FILE
    module = build_module(cfg, read_state_file(weights), str(weights))
    module = module.to(device=dev).to(dtype=dtype)

    def tokenize(seqs: list[str]) -> list[np.ndarray]:
        encs = tok.encode_batch([s.upper() for s in seqs], add_special_tokens=True)
        return [np.asarray(e.ids, dtype=np.int64) for e in encs]

    return Embedder(
        name="dnabert_s",
        kind="dnabert_s",
        module=module,
        tokenize=tokenize,
        pad_id=PAD_ID,
        hidden_size=cfg.hidden_size,
        device=dev,
        precision=precision,
        token_budget=token_budget or DEFAULT_TOKEN_BUDGET,
        weight_files=weight_files(model_dir),
    )
