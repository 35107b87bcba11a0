"""Microbenchmarks behind two choices in sparse decode (docs/sparse.md, docs/runtime.md).

scoring    one decode step's page scoring at 1M tokens (16,384 pages x 8 layers x 2 KV heads x 64):
           float32 [pages, L, H, 2, D] (the first layout) vs layer-major float32 vs layer-major bf16
           (torch matmul) vs layer-major bf16 in the C++ kernel (runtime/csrc/page_scores.cpp)
attention  q.k and weights.v for 4 query heads per KV head over L keys in [L, Hkv, D] layout:
           one batched matmul vs one 2-D matmul per KV head, in bfloat16 and float32
stored     the same per KV head for bfloat16 K/V (as the pool stores them), 1 query (decode) and 64
           (a prefill segment): bfloat16 matmuls vs the slice converted to float32 first

    .venv/bin/python bench/sparse_kernels.py

Times are ms per call, best of 5 repeats of 50 calls, 2 threads; the ratios within a row are the
result (the machine is shared).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_ms(fn: Callable[[], object], calls: int = 50, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1000)
    return round(best, 3)


def scoring(pages: int = 16384, layers: int = 8, heads: int = 2, dim: int = 64, group: int = 4) -> dict:
    gen = torch.Generator().manual_seed(0)
    first = torch.randn(pages, layers, heads, 2, dim, generator=gen)
    q = torch.randn(heads, group, dim, generator=gen)
    qq = torch.cat((q, q.abs()), dim=-1)
    major = first.permute(1, 2, 0, 3, 4).reshape(layers, heads, pages, 2 * dim).contiguous()
    major_bf16 = major.bfloat16()

    def strided() -> None:
        for layer in range(layers):
            torch.matmul(qq, first[:, layer].flatten(2).permute(1, 2, 0))

    def layer_major(box: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            for layer in range(layers):
                torch.matmul(qq.to(box.dtype), box[layer].transpose(1, 2))
        return run

    def kernel() -> None:
        for layer in range(layers):
            torch.ops.strata_sparse.page_scores(qq, major_bf16[layer])

    row = {"bench": "scoring", "pages": pages, "layers": layers,
           "f32_strided_ms": best_ms(strided, 10), "f32_layer_major_ms": best_ms(layer_major(major), 10),
           "bf16_layer_major_ms": best_ms(layer_major(major_bf16), 10)}
    from runtime import fp8

    if fp8.kernel_available():
        row["bf16_kernel_ms"] = best_ms(kernel, 10)
    return row


def attention(keys: int, dtype: torch.dtype, heads: int = 2, group: int = 4, dim: int = 64) -> dict:
    gen = torch.Generator().manual_seed(1)
    k = torch.randn(keys, heads, dim, generator=gen).to(dtype)
    v = torch.randn(keys, heads, dim, generator=gen).to(dtype)
    g = torch.randn(heads, group, dim, generator=gen).to(dtype)
    w = torch.randn(heads, group, keys, generator=gen).to(dtype)
    return {"bench": "attention", "keys": keys, "dtype": str(dtype).removeprefix("torch."),
            "qk_batched_ms": best_ms(lambda: torch.matmul(g, k.permute(1, 2, 0))),
            "qk_per_head_ms": best_ms(lambda: [torch.mm(g[h], k[:, h].t()) for h in range(heads)]),
            "wv_batched_ms": best_ms(lambda: torch.matmul(w, v.permute(1, 0, 2))),
            "wv_per_head_ms": best_ms(lambda: [torch.mm(w[h], v[:, h]) for h in range(heads)])}


def stored(keys: int, queries: int, heads: int = 2, group: int = 4, dim: int = 64) -> dict:
    gen = torch.Generator().manual_seed(2)
    k = torch.randn(keys, heads, dim, generator=gen).bfloat16()
    v = torch.randn(keys, heads, dim, generator=gen).bfloat16()
    g = torch.randn(heads, group * queries, dim, generator=gen).bfloat16()
    w = torch.softmax(torch.randn(heads, group * queries, keys, generator=gen), dim=-1)

    def bf16() -> None:
        for h in range(heads):
            torch.mm(g[h], k[:, h].t())
            torch.mm(w[h].bfloat16(), v[:, h])

    def f32() -> None:
        for h in range(heads):
            torch.mm(g[h].float(), k[:, h].float().t())
            torch.mm(w[h], v[:, h].float())

    calls = 50 if queries == 1 else 5
    return {"bench": "stored", "keys": keys, "queries": queries,
            "bf16_ms": best_ms(bf16, calls), "f32_converted_ms": best_ms(f32, calls)}


def main() -> None:
    torch.set_num_threads(2)
    print(json.dumps(scoring()), flush=True)
    for dtype in (torch.bfloat16, torch.float32):
        for keys in (512, 4736, 8192):
            print(json.dumps(attention(keys, dtype)), flush=True)
    for queries in (1, 64):
        for keys in (4736, 8192):
            print(json.dumps(stored(keys, queries)), flush=True)


if __name__ == "__main__":
    main()
