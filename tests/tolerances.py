"""Float32 error bounds for the suite's numeric comparisons: one home for every tolerance's reason.

A machine's BLAS (OpenBLAS core type, MKL, oneDNN) picks its own blocking and summation order, so
two float32 evaluations of the same sum agree only to within the rounding of that sum. The
worst-case bound (Higham, Accuracy and Stability of Numerical Algorithms, Sec. 3.1) grows as n*u
times the sum of the absolute values of the terms and is far too loose to test anything at
n = 3328 (it allows 0.2 on a probability). Higham & Mary's probabilistic bound (SIAM J. Sci. Comput.
41(5), 2019, Thm. 2.4) replaces n*u by lambda*sqrt(n)*u: it holds with probability at least
1 - 2n*exp(-lambda^2/2) for rounding errors that are independent and of mean zero, which blocked
BLAS sums satisfy. With lambda = 10 that failure probability is below 1e-17 for every sum here.
The bounds below apply it to what the suite compares, so a test passes on any x86 machine and
still catches a wrong formula (which moves results by orders of magnitude more than rounding).
"""

from __future__ import annotations

import numpy as np

F32_EPS = float(np.finfo(np.float32).eps)  # 2**-23: spacing of float32 numbers at 1.0
F32_UNIT_ROUNDOFF = F32_EPS / 2  # largest relative error of one float32 rounding
F64_UNIT_ROUNDOFF = float(np.finfo(np.float64).eps) / 2
BN_EPS = 1e-5  # torch.nn.BatchNorm1d's default eps, the one the original classifier was saved with


CONFIDENCE_LAMBDA = 10.0  # Higham & Mary's lambda: bound fails with probability < 2n*exp(-50)


def gamma(terms: int, unit_roundoff: float = F32_UNIT_ROUNDOFF) -> float:
    """Probabilistic relative error bound of a sum or dot product of `terms` terms."""
    return float(np.expm1(CONFIDENCE_LAMBDA * np.sqrt(terms) * unit_roundoff
                          + terms * unit_roundoff**2 / (1 - unit_roundoff)))


def sum_bound(terms: int, magnitude: float | np.ndarray,
              unit_roundoff: float = F32_UNIT_ROUNDOFF) -> float | np.ndarray:
    """|computed - exact| for a sum of `terms` products whose absolute values add to `magnitude`,
    whatever order the kernel adds them in."""
    return gamma(terms, unit_roundoff) * magnitude


def softmax_bound(logit_error: np.ndarray, unit_roundoff: float) -> np.ndarray:
    """A two-class softmax is a logistic of the logit difference, whose slope is at most 1/4: an
    error e0 + e1 in the difference moves a probability by at most (e0 + e1) / 4. Plus the
    rounding of exp, the sum and the division, one unit each on a value <= 1."""
    return logit_error.sum(axis=-1) / 4 + 3 * unit_roundoff


def mlp_probability_bound(state: dict[str, np.ndarray], x: np.ndarray,
                          unit_roundoff: float = F32_UNIT_ROUNDOFF) -> float:
    """Largest error an evaluation of the original classifier (Linear, BatchNorm in eval mode,
    ReLU, Linear, softmax) at this unit roundoff can make on these inputs and weights.

    Layer 1 sums `width` products (plus the bias); BatchNorm multiplies its error by
    |gamma| / sqrt(var + eps) and rounds twice more; ReLU does not amplify; layer 2 sums `hidden`
    products of the erroneous hidden values. Computed per row from |x| and |W|, then the max."""
    f64 = {k: np.abs(np.asarray(v, dtype=np.float64)) for k, v in state.items()}
    w1, b1 = f64["hidden_layer.weight"], f64["hidden_layer.bias"]
    w2, b2 = f64["output_layer.weight"], f64["output_layer.bias"]
    hidden, width = w1.shape
    scale = f64["bn1.weight"] / np.sqrt(f64["bn1.running_var"] + BN_EPS)
    pre = np.abs(x.astype(np.float64)) @ w1.T + b1  # [n, hidden]: sum of |terms| of layer 1
    pre_error = sum_bound(width + 1, pre, unit_roundoff)
    # BatchNorm: (h - mean) * scale + shift, each operation rounding once relative to its result.
    bn_magnitude = (pre + f64["bn1.running_mean"]) * scale + f64["bn1.bias"]
    hidden_error = pre_error * scale + sum_bound(4, bn_magnitude, unit_roundoff)
    logit_magnitude = bn_magnitude @ w2.T + b2  # [n, 2]
    logit_error = hidden_error @ w2.T + sum_bound(hidden + 1, logit_magnitude, unit_roundoff)
    return float(softmax_bound(logit_error, unit_roundoff).max())


def float32_result_bound(state: dict[str, np.ndarray], x: np.ndarray) -> float:
    """Our classifier against a float64 evaluation of the same module: both compute in float64,
    so what separates them is one rounding of each probability (<= 1) to float32, plus both
    sides' float64 rounding (about 1e-10 here: far below the float32 step)."""
    return F32_UNIT_ROUNDOFF + 2 * mlp_probability_bound(state, x, F64_UNIT_ROUNDOFF)


CONTRACT_TOLERANCE = 1e-5
"""DESIGN's contract for embeddings and scores in float32: the Triton path against the in-process
path, and a frame alone against the same frame batched with others (padding invariance). It is
what a real model must meet, so the tests hold the small encoders to it as well. Their activations
are LayerNorm outputs of magnitude ~1 and every sum is at most 4 * hidden width <= 256 terms long:
float32 rounding then moves a value by about sqrt(256) * u ~ 1e-6 per layer, and a score (a
logistic, slope <= 1/4) by less than its inputs. Measured here (2026-12-05, 2 cores): at most 1.5e-6
(test_esm2_matches_fair_esm). The contract
still catches a mask or pooling error, which moves values by 1e-2 or more."""

PROBABILITY_SUM_TOLERANCE = 2 * F32_UNIT_ROUNDOFF
"""|p0 + p1 - 1| for two written probabilities: they sum to 1 in float64 (to ~1e-16), then each is
rounded to float32 once, moving it by at most u * p; the two moves add up to at most u."""


def max_abs_diff(a: object, b: object) -> float:
    """max |a - b| over numpy arrays or torch tensors."""
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())
