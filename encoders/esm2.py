"""ESM-2 in plain torch (pre-LN, rotary, SDPA) reading fair-esm checkpoints without unsafe pickle.

Same math as fair-esm's `ESM2` (tested to <= 1e-5 in fp32) with a fused QKV projection and
`scaled_dot_product_attention` (flash / memory-efficient kernels on GPU, no [b, h, t, t] attention
matrix kept around). fair-esm itself supplies only the alphabet. Why not transformers' EsmModel:
this keeps the serving image free of transformers (whose 4.x/5.x APIs differ), and the module is
built on the meta device so a 3B checkpoint loads without a random initialisation first.
Shapes: b = batch, t = tokens, h = heads, d = head dim, c = hidden.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.common import (
    FP8_PRECISION,
    Embedder,
    keep_mask,
    load_into,
    read_state_file,
    resolve_device,
    torch_dtype,
)
from encoders.errors import WeightsError
from encoders.fp8 import COMPUTE_DTYPE, check_fp8_device, probe, to_fp8

SENTENCE_PREFIX = "encoder.sentence_encoder."
LM_HEAD_PREFIX = "encoder.lm_head."
REGRESSION_SUFFIX = "-contact-regression.pt"
DEFAULT_TOKEN_BUDGET = 8_192
POOL_MAX_RESIDUES = 1024  # the reference averages residues 1..min(1024, n)
MASK_RATIO_TRAIN = 0.15 * 0.8  # token_dropout rescaling used in every ESM-2 training run


@dataclass(frozen=True)
class Esm2Config:
    """What the checkpoint's cfg Namespace says about the architecture (FFN is 4 x hidden)."""

    num_layers: int
    embed_dim: int
    attention_heads: int
    token_dropout: bool = True

    @classmethod
    def from_namespace(cls, ns: Any, source: str) -> Esm2Config:
        try:
            cfg = cls(
                num_layers=int(ns.encoder_layers),
                embed_dim=int(ns.encoder_embed_dim),
                attention_heads=int(ns.encoder_attention_heads),
                token_dropout=bool(getattr(ns, "token_dropout", True)),
            )
        except (AttributeError, TypeError, ValueError) as exc:
            raise WeightsError(f"{source}: checkpoint cfg lacks a field: {exc}") from None
        if cfg.embed_dim % cfg.attention_heads or (cfg.embed_dim // cfg.attention_heads) % 2:
            raise WeightsError(f"{source}: embed_dim {cfg.embed_dim} does not suit "
                               f"{cfg.attention_heads} heads with rotary embeddings")
        return cfg


class _Alphabet:
    """fair-esm's ESM-1b alphabet as a byte lookup table.

    Every byte outside the single-character residue tokens maps to <unk>. `Embedder.embed`
    validates first (`encoders.validation.ALLOWED_PROTEIN`), so the only accepted characters that
    reach <unk> are `J` and lower-case letters (fair-esm raises KeyError on them); `*`, `<`, digits
    and the like are refused with a SequenceError before tokenising.
    """

    def __init__(self) -> None:
        from esm.data import Alphabet

        alpha = Alphabet.from_architecture("ESM-1b")
        self.size = len(alpha)
        self.pad, self.cls, self.eos = alpha.padding_idx, alpha.cls_idx, alpha.eos_idx
        self.mask = alpha.mask_idx
        self.lut = np.full(256, alpha.unk_idx, dtype=np.int64)
        for tok in alpha.standard_toks:
            if len(tok) == 1:
                self.lut[ord(tok)] = alpha.tok_to_idx[tok]

    def encode(self, seqs: list[str]) -> list[np.ndarray]:
        """`<cls> residues <eos>` per sequence (no truncation; lengths are checked before)."""
        out = []
        for s in seqs:
            ids = np.empty(len(s) + 2, dtype=np.int64)
            ids[0], ids[-1] = self.cls, self.eos
            ids[1:-1] = self.lut[np.frombuffer(s.encode("ascii"), dtype=np.uint8)]
            out.append(ids)
        return out


def _rotary(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate q and k together: qk [b, t, 2, h, d]; cos/sin [t, 1, 1, d/2] (halves are equal).

    Equals fair-esm's x*cos + rotate_half(x)*sin with fewer passes over memory; bf16 is rotated
    in float32 (its 8-bit mantissa is too coarse for the angles), fp16/fp32 in their own dtype.
    """
    work = qk.float() if qk.dtype == torch.bfloat16 else qk
    x1, x2 = work.chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.to(qk.dtype)


class _Layer(nn.Module):
    def __init__(self, c: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.self_attn_layer_norm = nn.LayerNorm(c)
        self.qkv = nn.Linear(c, 3 * c)  # q_proj | k_proj | v_proj rows, fused at load time
        self.out_proj = nn.Linear(c, c)
        self.final_layer_norm = nn.LayerNorm(c)
        self.fc1 = nn.Linear(c, 4 * c)
        self.fc2 = nn.Linear(4 * c, c)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(self.self_attn_layer_norm(x)).view(b, t, 3, self.heads, c // self.heads)
        # rotary is linear, so scaling q by d^-0.5 inside SDPA equals fair-esm's scale-then-rotate
        q, k = _rotary(qkv[:, :, :2], cos, sin).permute(2, 0, 3, 1, 4).unbind(0)  # [b, h, t, d]
        v = qkv[:, :, 2].transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.out_proj(a.transpose(1, 2).reshape(b, t, c))
        return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))


class Esm2Encoder(nn.Module):
    """ESM-2 up to the final LayerNorm, then the reference pooling.

    forward(tokens [b, t] int64, `<cls> seq <eos>` right-padded with <pad>; lengths [b] int64 tokens
    per row, n + 2) -> mean over residue positions 1..min(1024, n) in float32 [b, c] (BOS, EOS and
    padding excluded). Padding, BOS and EOS are found by position from the lengths, never by token
    value.
    """

    def __init__(self, cfg: Esm2Config, alphabet_size: int, pad: int, cls: int, eos: int,
                 mask: int) -> None:
        super().__init__()
        self.config = cfg
        self.pad, self.cls, self.eos, self.mask = pad, cls, eos, mask
        self.embed_tokens = nn.Embedding(alphabet_size, cfg.embed_dim, padding_idx=pad)
        self.layers = nn.ModuleList(
            _Layer(cfg.embed_dim, cfg.attention_heads) for _ in range(cfg.num_layers)
        )
        self.emb_layer_norm_after = nn.LayerNorm(cfg.embed_dim)

    def rotary(self, t: int, device: torch.device, dtype: torch.dtype
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [t, 1, 1, d/2] for positions 0..t-1 (fair-esm's RotaryEmbedding, one half)."""
        d = self.config.embed_dim // self.config.attention_heads
        inv_freq = 1.0 / (10000 ** (torch.arange(0, d, 2, device=device).float() / d))
        freqs = torch.outer(torch.arange(t, device=device, dtype=torch.float32), inv_freq)
        work = torch.float32 if dtype == torch.bfloat16 else dtype
        return freqs.cos()[:, None, None].to(work), freqs.sin()[:, None, None].to(work)

    def hidden_states(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Representation after the final LayerNorm [b, t, c] (fair-esm's last repr layer)."""
        keep = keep_mask(lengths, tokens.shape[1])
        x = self.embed_tokens(tokens)
        if self.config.token_dropout:
            is_mask = tokens.eq(self.mask)
            x = x.masked_fill(is_mask[..., None], 0.0)
            observed = is_mask.sum(-1).to(x.dtype) / keep.sum(-1).to(x.dtype)
            x = x * (1 - MASK_RATIO_TRAIN) / (1 - observed)[:, None, None]
        x = x * keep[..., None].to(x.dtype)
        # boolean key mask [b, 1, 1, t], always passed: testing keep.all() would sync the device
        mask = keep[:, None, None, :]
        cos, sin = self.rotary(tokens.shape[1], tokens.device, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.emb_layer_norm_after(x)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.hidden_states(tokens, lengths).float()
        pos = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
        # residues sit at 1..n = 1..lengths-2: after <cls>, before <eos> and the padding
        residue = (pos >= 1) & (pos < (lengths - 1)[:, None]) & (pos <= POOL_MAX_RESIDUES)
        w = residue.to(torch.float32)
        return (x * w[..., None]).sum(1) / w.sum(1, keepdim=True)


def map_state_dict(state: Mapping[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """fair-esm keys -> encoder keys (pure).

    Strips `encoder.sentence_encoder.`, drops the LM head, contact head and the rotary `inv_freq`
    buffers (recomputed), and fuses each layer's q/k/v projections into one `qkv` tensor.
    Unknown keys are passed through so the key check reports them.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith((LM_HEAD_PREFIX, "encoder.contact_head.", "contact_head.")):
            continue
        name = key[len(SENTENCE_PREFIX) :] if key.startswith(SENTENCE_PREFIX) else key
        if name.endswith(".rot_emb.inv_freq"):
            continue
        out[name] = value
    for i in range(num_layers):
        for kind in ("weight", "bias"):
            parts = [f"layers.{i}.self_attn.{p}_proj.{kind}" for p in "qkv"]
            if all(p in out for p in parts):
                out[f"layers.{i}.qkv.{kind}"] = torch.cat([out.pop(p) for p in parts])
            old = f"layers.{i}.self_attn.out_proj.{kind}"
            if old in out:
                out[f"layers.{i}.out_proj.{kind}"] = out.pop(old)
    return out


def find_checkpoint(path: Path) -> Path:
    """The `esm2_*.pt` file: `path` itself, or the only one in folder `path`."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise WeightsError(f"{path}: no such file or folder (expected esm2_*.pt)")
    found = sorted(p for p in path.glob("esm2*.pt") if not p.name.endswith(REGRESSION_SUFFIX))
    if len(found) != 1:
        names = [p.name for p in found] or "none"
        raise WeightsError(f"{path}: expected exactly one esm2_*.pt checkpoint, found {names}")
    return found[0]


def read_checkpoint(ckpt: Path) -> tuple[Esm2Config, dict[str, torch.Tensor]]:
    """Read a fair-esm checkpoint safely (weights_only, only argparse.Namespace allowed)."""
    if not ckpt.name.startswith("esm2"):
        raise WeightsError(f"{ckpt}: an ESM-2 checkpoint name must start with 'esm2' (fair-esm rule)")
    data = read_state_file(ckpt, safe_globals=[argparse.Namespace])
    try:
        ns, state = data["cfg"]["model"], data["model"]
    except (KeyError, TypeError):
        raise WeightsError(f"{ckpt}: not a fair-esm checkpoint (no cfg.model / model)") from None
    return Esm2Config.from_namespace(ns, str(ckpt)), state


def build_module(cfg: Esm2Config, state: Mapping[str, torch.Tensor], source: str) -> Esm2Encoder:
    """An encoder holding the checkpoint's weights; raises WeightsError listing key problems."""
    alpha = _Alphabet()
    with torch.device("meta"):
        module = Esm2Encoder(cfg, alpha.size, alpha.pad, alpha.cls, alpha.eos, alpha.mask)
    load_into(module, map_state_dict(state, cfg.num_layers), source)
    return module.eval()


def load_esm2(
    weights: str | Path,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    token_budget: int | None = None,
) -> Embedder:
    """Load a fair-esm ESM-2 checkpoint (a file or a folder holding one) as an Embedder."""
    dev = resolve_device(device)
    if precision == FP8_PRECISION:
        check_fp8_device(dev)  # before reading gigabytes of weights
    dtype = COMPUTE_DTYPE if precision == FP8_PRECISION else torch_dtype(precision)
    ckpt = find_checkpoint(Path(weights))
    cfg, state = read_checkpoint(ckpt)
    # move first, then cast: a 3B fp16 checkpoint is cast on the GPU, not in host memory
    module = build_module(cfg, state, str(ckpt)).to(device=dev)
    if precision == FP8_PRECISION:
        probe(dev)
        to_fp8(module.layers)  # quantised from the checkpoint's own values
        for p in module.parameters():  # the rest (embeddings, layer norms) as bf16 runs them
            p.data = p.data.to(dtype)
    else:
        module = module.to(dtype=dtype)
    alpha = _Alphabet()
    return Embedder(
        name="esm2",
        kind="esm2",
        module=module,
        tokenize=alpha.encode,
        pad_id=alpha.pad,
        hidden_size=cfg.embed_dim,
        device=dev,
        precision=precision,
        token_budget=token_budget or DEFAULT_TOKEN_BUDGET,
        weight_files=[ckpt],
    )
