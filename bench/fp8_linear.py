"""FP8Linear against bf16 / fp32 nn.Linear and naive dequantise+matmul, side by side in one process.

Run:  python bench/fp8_linear.py            (all shapes, n = 1, 8, 512)
      python bench/fp8_linear.py --quick    (fewer repeats, skips n = 512 on the big shapes)
Prints a markdown table of median milliseconds per call and ratios to bf16 nn.Linear. Columns:
bf16 / fp32 = nn.Linear in that dtype; fp8 bf16-x / fp8 fp32-x = FP8Linear with bf16 / fp32
activations; naive = dequantise the whole FP8 matrix to bf16 with torch ops, then matmul.
The variants run in interleaved rounds, so the big layers' weights are mostly cold in cache, as
they are when a model walks its layers once per token.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.fp8 import FP8Linear, dequantize_block_fp8, kernel_available, kernel_isa, weight_nbytes  # noqa: E402

SHAPES = [(4096, 4096), (1024, 4096), (4096, 1024), (512, 512), (256, 512)]  # (out, in)
TOKENS = [1, 8, 512]


def time_rounds(fns: dict[str, Callable[[], object]], min_s: float, max_rounds: int, stat: str) -> dict[str, float]:
    """Median (or min) ms per call; each round calls every variant once, so noise hits all alike."""
    for fn in fns.values():
        fn()  # warm-up: kernel build, first-touch of buffers
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < 3 or time.perf_counter() - start < min_s):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
        rounds += 1
    pick = (lambda v: v[0]) if stat == "min" else (lambda v: v[len(v) // 2])
    return {k: pick(sorted(v)) * 1e3 for k, v in times.items()}


def bench_shape(out_f: int, in_f: int, n: int, min_s: float, max_rounds: int, stat: str) -> dict[str, float]:
    torch.manual_seed(0)
    lin = nn.Linear(in_f, out_f, bias=False)
    lin_bf16 = nn.Linear(in_f, out_f, bias=False).to(torch.bfloat16)
    lin_bf16.weight.data.copy_(lin.weight.data)
    fp8 = FP8Linear.from_float(lin.weight.data)
    x32 = torch.randn(n, in_f)
    x16 = x32.to(torch.bfloat16)

    def naive() -> torch.Tensor:
        w = dequantize_block_fp8(fp8.weight, fp8.weight_scale_inv, torch.bfloat16)
        return x16 @ w.t()

    with torch.inference_mode():
        r = time_rounds(
            {
                "bf16": lambda: lin_bf16(x16),
                "fp32": lambda: lin(x32),
                "fp8 bf16-x": lambda: fp8(x16),
                "fp8 fp32-x": lambda: fp8(x32),
                "naive": naive,
            },
            min_s,
            max_rounds,
            stat,
        )
    r["bytes"] = weight_nbytes(fp8) / weight_nbytes(lin_bf16)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter run: fewer repeats, no n=512 on big shapes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stat", choices=["median", "min"], default="median", help="min resists a busy machine")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    if load > 0.5:  # other busy processes preempt one of the threads: ~8 ms stalls per parallel region
        print(f"WARNING: load average {load:.2f}: other processes are running, timings will be noisy\n")
    min_s, max_rounds = (0.1, 5) if args.quick else (1.0, 100)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.stat} of rounds, "
        f"kernel {'built' if kernel_available() else 'NOT built'} ({kernel_isa()})\n"
    )
    cols = ["bf16", "fp32", "fp8 bf16-x", "fp8 fp32-x", "naive"]
    print(
        "| out x in | n | "
        + " | ".join(f"{c} ms" for c in cols)
        + " | fp8 bf16-x / bf16 | fp8 fp32-x / bf16 | naive / bf16 | bytes fp8/bf16 |"
    )
    print("|" + "---|" * (len(cols) + 6))
    for out_f, in_f in SHAPES:
        for n in TOKENS:
            if args.quick and n == 512 and out_f * in_f > 1 << 22:
                continue
            r = bench_shape(out_f, in_f, n, min_s, max_rounds, args.stat)
            b = r["bf16"]
            print(
                f"| {out_f}x{in_f} | {n} | "
                + " | ".join(f"{r[c]:.3f}" for c in cols)
                + f" | {r['fp8 bf16-x'] / b:.2f} | {r['fp8 fp32-x'] / b:.2f} | {r['naive'] / b:.1f}"
                + f" | {r['bytes']:.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
