"""The serving variants the GPU sweep measures (bench/gpu_sweep.py), each checked on CPU:
compiled vs eager, the fp8 arithmetic emulated against a float reference within its written
bound, the fp8 and compile load failures, and two instances per model through a real tritonserver.
"""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from encoders import load_embedder
from encoders.common import WIDTH_BUCKET, bucket_width
from encoders.errors import WeightsError
from encoders.fp8 import FP8_MAX, Fp8Linear, error_bound, quantize_rows, to_fp8
from export.cli import main as export_main
from export.layout import weights_dir
from orchestrator.embed.triton.server import TritonServer

AMINO = list("ACDEFGHIKLMNPQRSTVWY")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("variant_artifacts")
    assert export_main(["demo", "--out", str(out), "--seed", "5"]) == 0
    return out


def _proteins(n: int, lo: int, hi: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(AMINO, int(rng.integers(lo, hi + 1)))) for _ in range(n)]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_bucket_width_rounds_up_to_the_bucket() -> None:
    assert [bucket_width(w) for w in (1, 64, 65, 102, 172, 1026)] == [64, 64, 128, 128, 192, 1088]
    assert all(bucket_width(w) % WIDTH_BUCKET == 0 for w in range(1, 1100))


@pytest.mark.slow
@pytest.mark.server
def test_compiled_matches_eager_and_does_not_recompile(artifacts: Path) -> None:
    """fp32 on CPU, <= 1e-5 (float32 sums in another order by the fused kernels: measured ~5e-7).
    Costs ~40 s on two cores: inductor compiles one C++ graph per width bucket it meets."""
    from torch._dynamo.utils import counters

    wd = weights_dir(artifacts, "esm2")
    seqs = _proteins(9, 100, 170, seed=1) + ["M"]  # frames, and one row of 3 tokens
    eager = load_embedder("esm2", wd).embed(seqs)
    compiled = load_embedder("esm2", wd, compile=True)
    got = compiled.embed(seqs)
    assert np.abs(got - eager).max() <= 1e-5
    graphs = counters["stats"]["unique_graphs"]
    # other batch sizes and widths inside the buckets already met: no new graph
    for part in (seqs[:1], seqs[2:7], seqs[:3] + seqs[-1:]):
        assert np.abs(compiled.embed(part) - load_embedder("esm2", wd).embed(part)).max() <= 1e-5
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.slow
def test_compile_failure_fails_the_load_with_one_line(artifacts: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A real failure: inductor is pointed at a C++ compiler that does not exist."""
    import torch._dynamo
    import torch._inductor.config as inductor

    torch._dynamo.reset()
    monkeypatch.setattr(inductor.cpp, "cxx", ("/nonexistent/c++",))
    monkeypatch.setattr(inductor, "fx_graph_cache", False)
    try:
        with pytest.raises(WeightsError) as info:
            load_embedder("esm2", weights_dir(artifacts, "esm2"), compile=True)
    finally:
        torch._dynamo.reset()
    message = str(info.value)
    assert "torch.compile failed at load" in message and "\n" not in message


def test_fp8_linear_emulated_is_within_the_written_bound() -> None:
    """The fp8 GEMM's arithmetic on CPU (e4m3 operands, fp32 sums) against float64, with an
    outlier channel and an outlier token: every element within encoders.fp8.error_bound."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 256, generator=gen)
    x[3] *= 40.0  # a token with large activations: its own scale absorbs it
    x[:, 7] *= 25.0  # an outlier feature: costs the other features of each token precision
    lin = torch.nn.Linear(256, 96)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(96, 256, generator=gen) / 16)
        lin.weight[5] *= 30.0
    fp8 = Fp8Linear(lin, emulate=True)
    got = fp8(x).double()
    ref = x.double() @ lin.weight.double().T + lin.bias.double()
    bound = error_bound(x.double(), lin.weight.detach().double())
    # + bf16 rounding of the output (2^-9 relative) and fp32 summation (256 terms, ~2^-24 each)
    slack = ref.abs() * 2.0 ** -8 + 256 * 2.0 ** -24 * (x.abs().double() @ lin.weight.abs().double().T)
    err = (got - ref).abs()
    assert (err <= bound + slack).all()
    assert err.max() > 0  # the operands were really rounded to e4m3
    rel = (err / (x.abs().double() @ lin.weight.abs().double().T)).max()
    assert rel < 0.13  # the bound's worst case, 2 * 2^-4 + 2^-8, relative to sum |x||w|


def test_quantize_rows_uses_the_whole_e4m3_range_per_row() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [1e-6, 3e-6, -2e-6]])
    q, scale = quantize_rows(x)
    assert q.dtype == torch.float8_e4m3fn and scale.shape == (3, 1)
    assert q.float().abs().amax(dim=1).tolist() == [FP8_MAX, 0.0, FP8_MAX]
    assert torch.allclose(q.float() * scale, x, rtol=2.0 ** -4, atol=0)


@pytest.mark.slow
def test_fp8_encoder_emulated_stays_close_to_fp32(artifacts: Path) -> None:
    """The whole tiny ESM-2 with every layer GEMM in emulated fp8, the rest in bf16."""
    wd = weights_dir(artifacts, "esm2")
    seqs = _proteins(12, 20, 170, seed=2)
    ref = load_embedder("esm2", wd).embed(seqs)
    emb = load_embedder("esm2", wd)
    module = to_fp8(emb.module.layers, emulate=True) and emb.module
    for p in module.parameters():
        p.data = p.data.to(torch.bfloat16)
    assert sum(isinstance(m, Fp8Linear) for m in module.modules()) == 4 * len(module.layers)
    got = emb.embed(seqs)
    cos = _cosine(got, ref)
    # random demo weights: 0.999 measured; far from fp32's 1e-5, so fp8 stays opt-in
    assert cos.min() > 0.99 and not np.array_equal(got, ref)


@pytest.mark.parametrize("device", ["cpu"])
def test_fp8_without_fp8_tensor_cores_refuses_to_load(artifacts: Path, device: str) -> None:
    with pytest.raises(WeightsError) as info:
        load_embedder("esm2", weights_dir(artifacts, "esm2"), device=device, precision="fp8")
    message = str(info.value)
    assert "fp8 tensor cores" in message and "\n" not in message
    with pytest.raises(WeightsError, match="unknown precision 'fp8'"):
        load_embedder("dnabert_s", weights_dir(artifacts, "dnabert_s"), precision="fp8")


@pytest.mark.server
def test_two_instances_through_tritonserver_give_identical_outputs(artifacts: Path,
                                                                   tmp_path: Path) -> None:
    """esm2 with `count: 2`: both instances load (two log lines) and every concurrent answer is
    the in-process embedding (<= 1e-6: merged batches pad rows to other widths, which changes
    float32 sums only in the last bit)."""
    import tritonclient.grpc as grpcclient

    repo = tmp_path / "repo"
    shutil.copytree(artifacts / "model_repository", repo)
    cfg = repo / "esm2" / "config.pbtxt"
    cfg.write_text(re.sub(r"count: 1", "count: 2", cfg.read_text()))
    seqs = _proteins(16, 100, 170, seed=3)
    expected = load_embedder("esm2", weights_dir(artifacts, "esm2")).embed(seqs)
    with TritonServer(repo, ready_timeout=180) as server:
        def ask(i: int) -> np.ndarray:
            client = grpcclient.InferenceServerClient(server.grpc_url)
            part = seqs[i % 4 * 4:(i % 4 + 1) * 4]
            inp = grpcclient.InferInput("SEQUENCE", [len(part), 1], "BYTES")
            inp.set_data_from_numpy(np.array([[s.encode()] for s in part], dtype=object))
            out = client.infer("esm2", [inp]).as_numpy("EMBEDDING")
            client.close()
            return out

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(ask, range(32)))
        log = Path(server.log_path).read_text(errors="replace")
    assert log.count("esm2: loaded Embedder(esm2") == 2, log[-2000:]
    for i, got in enumerate(answers):
        assert np.abs(got - expected[i % 4 * 4:(i % 4 + 1) * 4]).max() <= 1e-6
