"""The opt-in fp8 path (`precision: fp8`, Hopper and newer): the encoder's GEMMs in float8.

Each `nn.Linear` of the transformer layers becomes an `Fp8Linear`: the weight is stored as
float8 e4m3 with one fp32 scale per output channel (amax of the row / 448), the activations are
scaled per token (amax of the row / 448) and cast to e4m3 on the fly, the product is accumulated
in fp32 (`torch._scaled_mm` with row-wise scales on the GPU), then scaled back and the bias added.
Everything else (embeddings, layer norms, rotary, attention, pooling) runs in bf16, as
`precision: bf16` does. It stays opt-in: random weights cannot show the outliers of trained
weights, which per-channel scales only partly absorb; check a sample with `orchestrator compare`.

Error bound (what `tests/test_encoders_variants.py` checks on CPU, with the GPU's arithmetic
emulated: products of two e4m3 numbers are exact in fp32, so dequantising and multiplying in fp32
differs from the tensor cores only in the order of the fp32 sums). Rounding a value v to e4m3
(3 mantissa bits, round to nearest) after dividing by its scale s errs by at most
e(v) = max(2^-4 |v|, 2^-10 s): relative 2^-4 for normal numbers, half the subnormal spacing
(2^-9 s) below 2^-6 s. So each output element y = sum_k x_k w_k + b obeys
|y_fp8 - y| <= sum_k (e(x_k) |w_k| + |x_k| e(w_k) + e(x_k) e(w_k)) + fp32 summation error.
"""

from __future__ import annotations

import torch
from torch import nn

from encoders.errors import WeightsError

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3fn value
MANTISSA_ERROR = 2.0 ** -4  # half an ulp relative to a normal e4m3 value (3 mantissa bits)
SUBNORMAL_ERROR = 2.0 ** -10  # half the subnormal spacing 2^-9, in units of the scale
MIN_CAPABILITY = (8, 9)  # Ada / Hopper: the first tensor cores with fp8
COMPUTE_DTYPE = torch.bfloat16  # what the non-GEMM parts and the GEMM outputs run in


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(e4m3 values, fp32 scales [rows, 1]) with x ~= values * scales, one scale per row."""
    work = x.float()
    amax = work.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    return (work / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def error_bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The worst-case |y_fp8 - y| of x [m, k] @ w [n, k].T (module docstring), before fp32 sums."""
    sx = quantize_rows(x)[1]
    sw = quantize_rows(w)[1]
    ex = torch.maximum(MANTISSA_ERROR * x.abs(), SUBNORMAL_ERROR * sx)
    ew = torch.maximum(MANTISSA_ERROR * w.abs(), SUBNORMAL_ERROR * sw)
    return ex @ w.abs().T + x.abs() @ ew.T + ex @ ew.T


class Fp8Linear(nn.Module):
    """y = x @ W.T + b with W in e4m3 (per-channel scales), x scaled per token, fp32 sums.

    `emulate=True` computes the same products in fp32 from the dequantised operands (CPU tests);
    otherwise `torch._scaled_mm` runs them on the fp8 tensor cores.
    """

    def __init__(self, linear: nn.Linear, emulate: bool = False) -> None:
        super().__init__()
        weight, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", scale.reshape(1, -1))  # [1, out] for _scaled_mm
        bias = linear.bias.detach().to(COMPUTE_DTYPE) if linear.bias is not None else None
        self.register_buffer("bias", bias)
        self.emulate = emulate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        xq, xs = quantize_rows(x.reshape(-1, shape[-1]))
        if self.emulate:
            y = (xq.float() @ self.weight.float().T) * xs * self.weight_scale
            if self.bias is not None:
                y = y + self.bias.float()
            y = y.to(COMPUTE_DTYPE)
        else:
            y = torch._scaled_mm(xq, self.weight.T, scale_a=xs, scale_b=self.weight_scale,
                                 bias=self.bias, out_dtype=COMPUTE_DTYPE)
        return y.reshape(*shape[:-1], y.shape[-1])


def check_fp8_device(device: torch.device) -> None:
    """WeightsError (one line) unless `device` is a GPU whose tensor cores do fp8."""
    if device.type != "cuda":
        raise WeightsError(f"precision fp8 needs a CUDA GPU with fp8 tensor cores (compute "
                           f"capability >= {MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}, e.g. H100); "
                           f"device {device} has none: use fp16 or bf16")
    cap = torch.cuda.get_device_capability(device)
    if cap < MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        raise WeightsError(f"precision fp8 needs fp8 tensor cores (compute capability >= "
                           f"{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]}); {name} has "
                           f"{cap[0]}.{cap[1]}: use fp16 or bf16")


def to_fp8(module: nn.Module, emulate: bool = False) -> nn.Module:
    """Replace every nn.Linear below `module` by an Fp8Linear (in place); returns `module`."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Fp8Linear(child, emulate=emulate))
        else:
            to_fp8(child, emulate=emulate)
    return module


def probe(device: torch.device) -> None:
    """Run one small fp8 GEMM on `device`; WeightsError naming the reason when it fails.

    Called at load, so a card or torch build that cannot do row-wise scaled fp8 GEMMs fails the
    model's load with one line instead of failing (or answering) later.
    """
    lin = nn.Linear(64, 32).to(device)
    try:
        Fp8Linear(lin)(torch.randn(16, 64, device=device, dtype=COMPUTE_DTYPE))
        torch.cuda.synchronize(device)
    except (RuntimeError, NotImplementedError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise WeightsError(f"precision fp8: this card or torch build cannot run row-wise scaled "
                           f"fp8 GEMMs ({first}): use fp16 or bf16") from None
