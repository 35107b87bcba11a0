"""FP8 block-quantised weights: quantise/dequantise bounds, the C++ kernel against a torch reference."""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import nn

from runtime import fp8
from runtime.fp8 import (
    FP8Linear,
    dequantize_block_fp8,
    kernel_available,
    quantize_block_fp8,
    swap_linears_to_fp8,
    weight_nbytes,
)

SHAPES = [(256, 512), (300, 200), (129, 1000), (64, 64)]  # (out, in); most not multiples of 128


def _weight(out_f: int, in_f: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Blocks of very different magnitudes, so a wrong scale index shows up.
    rows = torch.logspace(-3, 2, out_f).unsqueeze(1)
    return torch.randn(out_f, in_f, generator=g) * rows


@pytest.mark.parametrize("shape", SHAPES)
def test_round_trip_error_bound(shape: tuple[int, int]) -> None:
    w = _weight(*shape)
    q, s = quantize_block_fp8(w)
    assert q.dtype == torch.float8_e4m3fn and q.shape == w.shape
    assert s.dtype == torch.float32 and s.shape == (-(-shape[0] // 128), -(-shape[1] // 128))
    back = dequantize_block_fp8(q, s)
    scale = fp8._expand_scale(s, w.shape, (128, 128))
    # e4m3 keeps 3 mantissa bits: round to nearest is off by at most 2^-4 of the value in the normal
    # range, and by half the subnormal step (2^-9 / 2) of the scale below it.
    bound = w.abs() / 16 + scale * 2.0**-10
    assert ((back - w).abs() <= bound * (1 + 1e-6)).all()
    # The block amax maps to 448 exactly, so it survives (up to fp32 rounding of amax/448*448).
    assert torch.allclose(back.abs().amax(), w.abs().amax(), rtol=1e-6)


def test_zero_blocks_are_safe() -> None:
    w = _weight(256, 384)
    w[:128, 128:256] = 0
    q, s = quantize_block_fp8(w)
    assert torch.isfinite(s).all() and (s > 0).all()
    back = dequantize_block_fp8(q, s)
    assert (back[:128, 128:256] == 0).all()
    assert torch.isfinite(back).all()
    qz, sz = quantize_block_fp8(torch.zeros(100, 50))
    assert (dequantize_block_fp8(qz, sz) == 0).all()


def _reference(x: torch.Tensor, lin: FP8Linear) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 x @ dequantised W.T (+ bias) and |x| @ |W|.T, the scale of fp32 accumulation error."""
    w = dequantize_block_fp8(lin.weight, lin.weight_scale_inv, block=lin.block)
    xf = x.float()
    y = xf @ w.t()
    if lin.bias is not None:
        y = y + lin.bias
    return y, xf.abs() @ w.abs().t()


def _check(y: torch.Tensor, x: torch.Tensor, lin: FP8Linear, weights_rounded: bool = False) -> None:
    ref, mag = _reference(x, lin)
    assert y.dtype == x.dtype and y.shape == ref.shape
    if x.dtype == torch.float32:
        tol = 1e-5 * mag + 1e-6
    elif not weights_rounded:  # fp32 accumulation, bias added in fp32, the output rounded once to bf16
        tol = 2.0**-8 * ref.abs() + 1e-5 * mag + 1e-6
    else:  # a bf16 GEMM, as nn.Linear in bf16 runs it: W*scale, bias and the result round to bf16
        b = lin.bias.abs() if lin.bias is not None else 0.0
        tol = 2.0**-8 * (ref.abs() + mag + b) + 1e-6
    err = (y.float() - ref).abs()
    assert (err <= tol).all(), f"max error {err.max().item():.3g}, worst ratio {(err / tol).max().item():.3g}"


needs_kernel = pytest.mark.skipif(not kernel_available(), reason="C++ FP8 kernel did not build")


def test_kernel_builds_where_a_compiler_exists() -> None:
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler on this machine")
    assert kernel_available()


@needs_kernel
@pytest.mark.parametrize("isa", ["native", "avx2", "scalar"])
@pytest.mark.parametrize("n", [1, 3, 8, 9, 13, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(256, 512), (300, 200), (129, 1000), (96, 2200)])
def test_kernel_matches_reference(
    shape: tuple[int, int], dtype: torch.dtype, n: int, isa: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if isa != "native":  # caps the code path; on a CPU without AVX2 "avx2" runs the scalar one
        monkeypatch.setenv("STRATA_FP8_ISA", isa)
    monkeypatch.setattr(fp8, "DEQUANT_TILE_BYTES", 64 * 1024)  # several tiles on the many-token path
    out_f, in_f = shape
    lin = FP8Linear.from_float(_weight(out_f, in_f), bias=torch.randn(out_f))
    x = torch.randn(n, in_f).to(dtype)
    with torch.inference_mode():
        y = lin(x)
    _check(y, x, lin, weights_rounded=n >= fp8.GEMM_MIN_TOKENS[dtype])


@needs_kernel
@pytest.mark.parametrize("shape", [(300, 200), (256, 384)])
def test_kernel_dequant_is_bit_exact(shape: tuple[int, int]) -> None:
    out_f, in_f = shape
    q, s = quantize_block_fp8(_weight(out_f, in_f))
    ops = fp8._kernel_ops()
    ref = dequantize_block_fp8(q, s)
    got = ops.dequant_(q, s, 128, 128, 0, torch.empty(out_f, in_f))  # type: ignore[attr-defined]
    assert torch.equal(got, ref)
    rows = torch.empty(100, in_f, dtype=torch.bfloat16)
    got16 = ops.dequant_(q, s, 128, 128, 44, rows)  # type: ignore[attr-defined]
    assert torch.equal(got16, ref[44:144].to(torch.bfloat16))
    assert torch.equal(dequantize_block_fp8(q, s, torch.bfloat16), ref.to(torch.bfloat16))


@pytest.mark.parametrize("block", [(100, 100), (64, 64), (128, 192)])
@pytest.mark.parametrize("n", [1, 5, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_other_block_sizes(block: tuple[int, int], n: int, dtype: torch.dtype) -> None:
    w = _weight(200, 300)
    q, s = quantize_block_fp8(w, block)
    assert s.shape == (-(-200 // block[0]), -(-300 // block[1]))
    assert ((dequantize_block_fp8(q, s, block=block) - w).abs() <= w.abs() / 16 + s.max() * 2.0**-10).all()
    lin = FP8Linear.from_quantized(q, s, bias=torch.randn(200), block=block)
    x = torch.randn(n, 300).to(dtype)
    _check(lin(x), x, lin, weights_rounded=n >= fp8.GEMM_MIN_TOKENS[dtype])


def test_called_with_grad_enabled() -> None:
    lin = FP8Linear(256, 128, bias=True)
    q, s = quantize_block_fp8(_weight(128, 256))
    lin.load_state_dict({"weight": q, "weight_scale_inv": s, "bias": torch.randn(128)})
    for n in (2, 40):
        x = torch.randn(n, 256, requires_grad=True)
        _check(lin(x), x.detach(), lin, weights_rounded=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_tokens(dtype: torch.dtype) -> None:
    lin = FP8Linear.from_float(_weight(130, 260), bias=torch.randn(130))
    assert lin(torch.empty(0, 260, dtype=dtype)).shape == (0, 130)


def test_leading_dims_and_no_bias() -> None:
    lin = FP8Linear.from_float(_weight(130, 260))
    x = torch.randn(2, 5, 260)
    y = lin(x)
    assert y.shape == (2, 5, 130)
    _check(y.reshape(10, 130), x.reshape(10, 260), lin)


@pytest.mark.parametrize("n", [1, 40])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_fallback_matches(dtype: torch.dtype, n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    lin = FP8Linear.from_float(_weight(300, 200), bias=torch.randn(300))
    x = torch.randn(n, 200).to(dtype)
    y_kernel = lin(x)
    monkeypatch.setenv(fp8.KERNEL_ENV, "0")
    assert not kernel_available()
    y_torch = lin(x)
    _check(y_torch, x, lin)
    _check(y_kernel, x, lin, weights_rounded=n >= fp8.GEMM_MIN_TOKENS[dtype])


def test_a_failed_build_warns_and_falls_back(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise RuntimeError("Error building extension 'strata_fp8'")

    monkeypatch.setattr(fp8, "_build", broken)
    monkeypatch.setattr(fp8, "_load_tried", False)
    monkeypatch.setattr(fp8, "_ops", None)
    with caplog.at_level("WARNING", logger="runtime.fp8"):
        assert not kernel_available()
    assert "pure-torch" in caplog.text
    lin = FP8Linear.from_float(_weight(64, 192))
    x = torch.randn(3, 192)
    _check(lin(x), x, lin)


@pytest.mark.parametrize("shape", [(512, 512), (4096, 1024)])
def test_weight_bytes_ratio(shape: tuple[int, int]) -> None:
    out_f, in_f = shape
    ref = nn.Linear(in_f, out_f, bias=False, dtype=torch.bfloat16)
    lin = FP8Linear.from_float(ref.weight.detach())
    assert weight_nbytes(lin) / weight_nbytes(ref) <= 0.53


def test_meta_init_then_load_checkpoint_tensors() -> None:
    q, s = quantize_block_fp8(_weight(200, 300))
    lin = FP8Linear(300, 200, bias=True, block=(128, 128), device="meta")
    bias = torch.randn(200)
    lin.load_state_dict({"weight": q, "weight_scale_inv": s, "bias": bias}, assign=True)
    assert lin.weight.dtype == torch.float8_e4m3fn and lin.weight_scale_inv.shape == (2, 3)
    x = torch.randn(4, 300)
    _check(lin(x), x, lin)


def test_from_quantized_rejects_a_wrong_scale_shape() -> None:
    q, s = quantize_block_fp8(_weight(256, 256))
    with pytest.raises(ValueError):
        FP8Linear.from_quantized(q, s[:1])
    with pytest.raises(TypeError):
        FP8Linear.from_quantized(q.float(), s)


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 64)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"up": nn.Linear(64, 192, bias=True), "down": nn.Linear(192, 64)}) for _ in range(2)
        )
        self.gate = nn.Linear(64, 4, bias=False)
        self.lm_head = nn.Linear(64, 10, bias=False)


def test_swap_linears_to_fp8() -> None:
    model = _Tiny()
    old = model.get_submodule("layers.0.up")
    x = torch.randn(3, 64)
    expected = old(x)
    swap_linears_to_fp8(model, skip=lambda name: name == "lm_head" or name.endswith("gate"))
    up = model.get_submodule("layers.0.up")
    assert isinstance(up, FP8Linear) and isinstance(model.get_submodule("layers.1.down"), FP8Linear)
    assert type(model.lm_head) is nn.Linear and type(model.gate) is nn.Linear
    assert old.weight is None  # the float copy was released
    y = up(x)
    _check(y, x, up)
    # Against the float layer: within the quantisation error (2^-4 of each weight) plus the bias.
    assert (
        (y - expected).abs() <= (x.abs() @ up.weight.float().abs().t()) * up.weight_scale_inv.max() / 16 + 1e-4
    ).all()
