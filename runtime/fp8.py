"""FP8 (e4m3) weights with 128x128 block scales in the DeepSeek-V3 layout, and a linear layer for them.

A weight W[out, in] is held as ``weight`` (float8_e4m3fn, [out, in]) and ``weight_scale_inv``
(float32, [ceil(out/128), ceil(in/128)]) with W ~= weight.float() * scale_inv[i // 128, j // 128].

On CPU, FP8Linear runs a fused dequantise-and-multiply C++ kernel (runtime/csrc/fp8_gemv.cpp, built
on first use with torch.utils.cpp_extension) for few tokens, and dequantises tile by tile into a
real matmul for many tokens. Without a compiler it falls back to pure torch with a warning.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite e4m3 magnitude
DEFAULT_BLOCK = (128, 128)
QUANT_CONFIG = {
    "quant_method": "fp8",
    "fmt": "e4m3",
    "activation_scheme": "dynamic",
    "weight_block_size": list(DEFAULT_BLOCK),
}
# Tokens from which dequantise-tile-then-matmul beats the fused kernel, by activation dtype. Measured
# on the 2-core Zen4 box (4096x4096 .. 512x512): bf16 crossed over at 12-16 tokens; fp32 (whose
# matmul is slower) still favoured the kernel at 16.
GEMM_MIN_TOKENS = {torch.bfloat16: 12, torch.float32: 16}
# Bytes of dequantised scratch per tile on the many-token path: bounds peak memory for huge layers.
DEQUANT_TILE_BYTES = 8 << 20
KERNEL_ENV = "STRATA_FP8_KERNEL"  # "0" forces the pure-torch path

# One extension for every C++ kernel: fp8_gemv (strata_fp8 ops) and page_scores (strata_sparse ops).
_CSRC = Path(__file__).parent / "csrc" / "fp8_gemv.cpp"
_SOURCES = (_CSRC, Path(__file__).parent / "csrc" / "page_scores.cpp")
_lock = threading.Lock()
_ops: object | None = None
_load_tried = False


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _block_tuple(block: tuple[int, int] | list[int]) -> tuple[int, int]:
    bn, bk = int(block[0]), int(block[1])
    if bn <= 0 or bk <= 0:
        raise ValueError(f"block sizes must be positive, got {block}")
    return bn, bk


def _expand_scale(scale_inv: torch.Tensor, shape: torch.Size, block: tuple[int, int]) -> torch.Tensor:
    bn, bk = block
    s = scale_inv.repeat_interleave(bn, dim=0).repeat_interleave(bk, dim=1)
    return s[: shape[0], : shape[1]]


def quantize_block_fp8(
    weight: torch.Tensor, block: tuple[int, int] = DEFAULT_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise a 2-D weight to e4m3 with one amax/448 scale per block; returns (weight_fp8, scale_inv)."""
    if weight.dim() != 2:
        raise ValueError(f"expected a 2-D weight, got shape {tuple(weight.shape)}")
    bn, bk = _block_tuple(block)
    out_f, in_f = weight.shape
    w = weight.detach().float()
    if out_f % bn or in_f % bk:  # pad partial edge blocks with zeros, which never raise an amax
        padded = torch.zeros(_cdiv(out_f, bn) * bn, _cdiv(in_f, bk) * bk, dtype=torch.float32, device=w.device)
        padded[:out_f, :in_f] = w
    else:
        padded = w.contiguous()
    tiles = padded.view(padded.shape[0] // bn, bn, padded.shape[1] // bk, bk)
    amax = tiles.abs().amax(dim=(1, 3))
    # An all-zero block gets scale 1 (any positive value would do); it quantises to zeros.
    scale_inv = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (tiles / scale_inv[:, None, :, None]).clamp_(-FP8_MAX, FP8_MAX)
    q = q.view_as(padded)[:out_f, :in_f].to(FP8_DTYPE).contiguous()
    return q, scale_inv.contiguous()


def dequantize_block_fp8(
    weight: torch.Tensor,
    scale_inv: torch.Tensor,
    dtype: torch.dtype = torch.float32,
    block: tuple[int, int] = DEFAULT_BLOCK,
) -> torch.Tensor:
    """weight.float() * scale_inv broadcast over its blocks, in `dtype` (pure torch, any device)."""
    bn, bk = _block_tuple(block)
    out_f, in_f = weight.shape
    w = weight.float()
    if out_f % bn == 0 and in_f % bk == 0:  # broadcast over a tiled view, no expanded scale matrix
        tiles = w.reshape(out_f // bn, bn, in_f // bk, bk) * scale_inv.float()[:, None, :, None]
        return tiles.reshape(out_f, in_f).to(dtype)
    return (w * _expand_scale(scale_inv.float(), weight.shape, (bn, bk))).to(dtype)


# --------------------------------------------------------------------------------------------
# The C++ kernel: built once per source hash, cached under STRATA_HOME (or ~/.cache/strata).


def _extensions_dir() -> Path:
    home = os.environ.get("STRATA_HOME")
    base = Path(home) if home else Path.home() / ".cache" / "strata"
    return base / "torch_extensions"


def _ensure_ninja_on_path() -> None:
    if shutil.which("ninja"):
        return
    candidates = [Path(sys.executable).parent]
    try:
        import ninja  # type: ignore[import-not-found]

        candidates.insert(0, Path(ninja.BIN_DIR))
    except ImportError:
        pass
    for d in candidates:
        if (d / "ninja").exists():
            os.environ["PATH"] = f"{d}{os.pathsep}{os.environ.get('PATH', '')}"
            return


def _build() -> object:
    from torch.utils import cpp_extension

    _ensure_ninja_on_path()
    flags = ["-O3", "-fno-math-errno", "-fopenmp"]  # OpenMP: at::parallel_for is serial without it
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in _SOURCES) + " ".join(flags).encode()
                            + torch.__version__.encode()).hexdigest()[:16]
    name = f"strata_fp8_{digest}"
    build_dir = _extensions_dir() / name
    build_dir.mkdir(parents=True, exist_ok=True)
    # No -march=native: the AVX512 path is compiled with target attributes and picked at run time.
    cpp_extension.load(
        name=name,
        sources=[str(p) for p in _SOURCES],
        build_directory=str(build_dir),
        extra_cflags=flags,
        extra_ldflags=["-fopenmp"],
        is_python_module=False,
        verbose=False,
    )
    _register_fakes()
    return torch.ops.strata_fp8


def _register_fakes() -> None:
    """Shape-only versions of the ops, so torch.compile can trace through FP8Linear."""

    @torch.library.register_fake("strata_fp8::gemv")
    def _gemv(x, w, scale_inv, bn, bk, bias):  # type: ignore[no-untyped-def]
        return x.new_empty(x.shape[0], w.shape[0])

    @torch.library.register_fake("strata_fp8::dequant_")
    def _dequant(w, scale_inv, bn, bk, row0, out):  # type: ignore[no-untyped-def]
        return out


def _kernel_ops() -> object | None:
    """torch.ops.strata_fp8 once the kernel is built, or None (with one warning) when it cannot be."""
    global _ops, _load_tried
    if os.environ.get(KERNEL_ENV, "1") == "0":
        return None
    if _load_tried:
        return _ops
    with _lock:
        if not _load_tried:
            try:
                _ops = _build()
            except Exception as exc:  # a missing compiler or a failed build must not be fatal
                log.warning("FP8 C++ kernel unavailable, using the pure-torch path: %s", exc)
                _ops = None
            _load_tried = True
    return _ops


def kernel_available() -> bool:
    """True when the C++ kernel built and loaded (and is not disabled by STRATA_FP8_KERNEL=0)."""
    return _kernel_ops() is not None


def kernel_isa() -> str:
    """The kernel's code path on this CPU ("avx512", "avx2" or "scalar"), or "torch" without it."""
    ops = _kernel_ops()
    return ops.isa() if ops is not None else "torch"  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Forward paths.


def _linear_cpu(
    x2: torch.Tensor, w: torch.Tensor, s: torch.Tensor, bias: torch.Tensor | None, block: tuple[int, int]
) -> torch.Tensor:
    ops = _kernel_ops()
    if ops is None:
        y = x2.float() @ dequantize_block_fp8(w, s, torch.float32, block).t()
        return (y if bias is None else y + bias.float()).to(x2.dtype)
    if x2.shape[0] < GEMM_MIN_TOKENS[x2.dtype]:
        return ops.gemv(x2, w, s, block[0], block[1], bias)  # type: ignore[attr-defined]
    return _dequant_matmul(ops, x2, w, s, bias, block)


_scratch = threading.local()


def _scratch_tile(rows: int, cols: int, dtype: torch.dtype) -> torch.Tensor:
    """A reused per-thread buffer of at most DEQUANT_TILE_BYTES (fresh big buffers fault in slowly)."""
    bufs: dict[torch.dtype, torch.Tensor] = _scratch.__dict__.setdefault("bufs", {})
    need = rows * cols
    if dtype not in bufs or bufs[dtype].numel() < need:
        bufs[dtype] = torch.empty(need, dtype=dtype)
    return bufs[dtype][:need].view(rows, cols)


@torch.compiler.disable  # eager on purpose: it reuses a scratch buffer across calls
def _dequant_matmul(
    ops: object,
    x2: torch.Tensor,
    w: torch.Tensor,
    s: torch.Tensor,
    bias: torch.Tensor | None,
    block: tuple[int, int],
) -> torch.Tensor:
    """Many tokens: dequantise a tile of weight rows at a time into scratch and run a real matmul."""
    compute = torch.bfloat16 if x2.dtype == torch.bfloat16 else torch.float32
    out_f, in_f = w.shape
    rows = min(out_f, max(1, DEQUANT_TILE_BYTES // (in_f * compute.itemsize)))
    xc = x2.to(compute)
    b = bias.to(compute) if bias is not None else None
    y = torch.empty(x2.shape[0], out_f, dtype=compute)
    for r0 in range(0, out_f, rows):
        r1 = min(out_f, r0 + rows)
        tile = ops.dequant_(w, s, block[0], block[1], r0, _scratch_tile(r1 - r0, in_f, compute))  # type: ignore[attr-defined]
        part = y if r1 - r0 == out_f else torch.empty(x2.shape[0], r1 - r0, dtype=compute)
        if b is None:
            torch.mm(xc, tile.t(), out=part)
        else:  # fused, so a bf16 result is rounded once
            torch.addmm(b[r0:r1], xc, tile.t(), out=part)
        if part is not y:
            y[:, r0:r1] = part
    return y.to(x2.dtype)


def _linear_cuda(
    x2: torch.Tensor, w: torch.Tensor, s: torch.Tensor, bias: torch.Tensor | None, block: tuple[int, int]
) -> torch.Tensor:
    """Blockwise torch._scaled_mm (1x128 activation scales, 128x128 weight scales) where the build
    and the GPU take it, else dequantise and matmul.

    PyTorch's blockwise scaling wants particular scale layouts, which have moved between releases;
    the first call on a device tries each known layout, keeps the first whose product matches the
    dequantised reference, and remembers the answer (None: none works, always dequantise).
    """
    shapes_ok = x2.shape[1] % 128 == 0 and w.shape[0] % 128 == 0
    key = x2.device.index
    if block == (128, 128) and shapes_ok and _SCALED_MM_OK.get(key, True) is not None:
        xs = x2.float().reshape(x2.shape[0], -1, 128)
        x_scale = xs.abs().amax(-1).clamp_min(1e-12) / FP8_MAX
        xq = (xs / x_scale[..., None]).view_as(x2).to(FP8_DTYPE)
        chosen = _SCALED_MM_OK.get(key, True)
        layouts = _SCALE_LAYOUTS if chosen is True else (chosen,)
        for layout in layouts:
            try:
                sa, sb = layout(x_scale, s)
                y = torch._scaled_mm(xq, w.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)
            except (RuntimeError, NotImplementedError, ValueError) as exc:
                log.debug("blockwise torch._scaled_mm layout %s refused: %s", layout.__name__, exc)
                continue
            if chosen is True:
                ref = x2.float() @ dequantize_block_fp8(w, s, torch.float32, block).t()
                err = float((y.float() - ref).norm() / ref.norm().clamp_min(1e-12))
                if err > 0.05:
                    log.debug("blockwise layout %s gives relative error %.3f; not used", layout.__name__, err)
                    continue
                _SCALED_MM_OK[key] = layout
            y = y if bias is None else y + bias.to(y.dtype)
            return y.to(x2.dtype)
        log.warning("blockwise torch._scaled_mm is not available here; FP8 weights are dequantised per call")
        _SCALED_MM_OK[key] = None
    y = x2 @ dequantize_block_fp8(w, s, x2.dtype, block).t()
    return y if bias is None else y + bias.to(y.dtype)


def _outer_major(x_scale: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # [M, K/128] stored column-major; weight scales [N/128, K/128] seen as [K/128, N/128] column-major.
    return x_scale.t().contiguous().t(), s.t()


def _row_major(x_scale: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x_scale.contiguous(), s.t().contiguous()


def _outer_major_b_plain(x_scale: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x_scale.t().contiguous().t(), s.contiguous()


_SCALE_LAYOUTS: tuple[Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], ...] = (
    _outer_major, _row_major, _outer_major_b_plain)


# Per CUDA device: True = not tried yet, a layout function = use it, None = dequantise instead.
_SCALED_MM_OK: dict[int | None, Any] = {}


def fp8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale_inv: torch.Tensor,
    bias: torch.Tensor | None = None,
    block: tuple[int, int] = DEFAULT_BLOCK,
) -> torch.Tensor:
    """y = x @ dequantize(weight, scale_inv).T + bias for x [..., in] (fp32 or bf16), in x's dtype.

    Inference only: on CPU the result carries no autograd history.
    """
    if x.dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"FP8 linear takes fp32 or bf16 activations, got {x.dtype}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    weight = weight.contiguous()  # no-ops for tensors FP8Linear built; loaders may hand in views
    scale_inv = scale_inv.float().contiguous()
    if x.device.type == "cuda":
        y = _linear_cuda(x2, weight, scale_inv, bias, block)
    else:
        with torch.no_grad():  # inference only: the kernel has no backward
            y = _linear_cpu(x2.contiguous(), weight, scale_inv, bias, block)
    return y.reshape(*lead, weight.shape[0])


# --------------------------------------------------------------------------------------------
# The layer.


class FP8Linear(nn.Module):
    """A linear layer over e4m3 weights with block scales; weight and scale are buffers, not trained."""

    in_features: int
    out_features: int
    weight: torch.Tensor
    weight_scale_inv: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        block: tuple[int, int] = DEFAULT_BLOCK,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.block = _block_tuple(block)
        bn, bk = self.block
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=FP8_DTYPE, device=device))
        scale_shape = (_cdiv(out_features, bn), _cdiv(in_features, bk))
        self.register_buffer("weight_scale_inv", torch.empty(scale_shape, dtype=torch.float32, device=device))
        self.bias: nn.Parameter | None
        if bias:
            bias_t = torch.empty(out_features, dtype=torch.float32, device=device)
            self.bias = nn.Parameter(bias_t, requires_grad=False)
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_quantized(
        cls,
        weight_fp8: torch.Tensor,
        scale_inv: torch.Tensor,
        bias: torch.Tensor | None = None,
        block: tuple[int, int] = DEFAULT_BLOCK,
    ) -> FP8Linear:
        """Wrap an already quantised weight (e.g. straight from a DeepSeek-V3-style checkpoint)."""
        if weight_fp8.dtype != FP8_DTYPE:
            raise TypeError(f"weight must be {FP8_DTYPE}, got {weight_fp8.dtype}")
        out_f, in_f = weight_fp8.shape
        m = cls(in_f, out_f, bias=bias is not None, block=block, device="meta")
        bn, bk = m.block
        if tuple(scale_inv.shape) != (_cdiv(out_f, bn), _cdiv(in_f, bk)):
            raise ValueError(f"scale_inv shape {tuple(scale_inv.shape)} does not fit weight {(out_f, in_f)}")
        m.weight = weight_fp8.contiguous()
        m.weight_scale_inv = scale_inv.float().contiguous()
        if bias is not None:
            m.bias = nn.Parameter(bias.detach().float().contiguous(), requires_grad=False)
        return m

    @classmethod
    def from_float(
        cls, weight: torch.Tensor, bias: torch.Tensor | None = None, block: tuple[int, int] = DEFAULT_BLOCK
    ) -> FP8Linear:
        """Quantise a float weight [out, in] (and keep its bias in fp32)."""
        q, s = quantize_block_fp8(weight, block)
        return cls.from_quantized(q, s, bias, block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fp8_linear(x, self.weight, self.weight_scale_inv, self.bias, self.block)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, block={self.block}"
        )


def weight_nbytes(module: nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (each tensor counted once)."""
    seen: set[int] = set()
    total = 0
    for t in [*module.parameters(), *module.buffers()]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def swap_linears_to_fp8(model: nn.Module, skip: Callable[[str], bool], block: tuple[int, int] = DEFAULT_BLOCK) -> None:
    """Replace every nn.Linear whose qualified name skip() rejects by FP8Linear.from_float, in place.

    Each float weight is dropped as soon as its layer is swapped, so peak memory grows by at most
    one layer's worth of scratch.
    """
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and not skip(n)]
    for name, lin in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        bias = lin.bias.detach() if lin.bias is not None else None
        setattr(parent, child, FP8Linear.from_float(lin.weight.detach(), bias, block))
        lin.weight = None  # type: ignore[assignment]  # release the float copy now, not at the end
        lin.bias = None  # type: ignore[assignment]
