"""The CUDA path, checked in one run on a GPU machine: FP8 GEMM, the device tier, decode speed.

    bash scripts/cuda_check.sh fetch   # where PyPI is reachable: wheels the GPU image lacks -> .whl/
    bash scripts/cuda_check.sh run     # on the GPU machine: installs .whl/, runs this file

Writes cuda_check.json and cuda_check.md to $OUT (or the current directory). The parts:

1. FP8 GEMM against bf16 at LLM shapes: torch._scaled_mm with per-tensor and rowwise scales, and
   Strata's blockwise path (runtime.fp8.fp8_linear: 1x128 activation, 128x128 weight scales, or its
   dequantise fallback). Time ratios bf16/fp8 (goal >= 1.6x) and the relative error of each
   against the exactly dequantised product.
2. The device tier: the demo model (FP8 weights) with its page pool on the GPU; greedy tokens
   against the CPU engine on the same prompt, and a second (warm, prefix-cached) run against the
   first.
3. Decode tokens/s at 8K and 128K tokens of context on the GPU (dense attention, bf16 and FP8 KV).

Timings use CUDA events after warm-up; each row is the median of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
GEMM_SHAPES = ((4096, 7168, 2048), (4096, 2048, 7168), (8192, 8192, 8192), (16384, 7168, 18432))


def cuda_time(fn: Callable[[], Any], repeats: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of fn() on the current CUDA stream."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-12))


def gemm(dev: torch.device) -> list[dict[str, Any]]:
    """bf16 matmul vs FP8 GEMMs at (M, K, N): x [M, K] @ w[N, K].T."""
    rows = []
    for m, k, n in GEMM_SHAPES:
        rows.append(gemm_row(dev, m, k, n))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def gemm_row(dev: torch.device, m: int, k: int, n: int) -> dict[str, Any]:
    from runtime import fp8 as fp8_module
    from runtime.fp8 import dequantize_block_fp8, fp8_linear, quantize_block_fp8

    torch.manual_seed(0)
    x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
    w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
    ms_bf16 = cuda_time(lambda: x @ w.t())
    row: dict[str, Any] = {"shape": f"{m}x{k}x{n}", "bf16_ms": ms_bf16,
                           "bf16_tflops": 2 * m * k * n / ms_bf16 / 1e9}
    # Per-tensor scales: the plain FP8 tensor-core GEMM.
    sx, sw = x.abs().amax().float() / FP8_MAX, w.abs().amax().float() / FP8_MAX
    xq, wq = (x.float() / sx).to(FP8), (w.float() / sw).to(FP8)
    ref = (xq.float() * sx) @ (wq.float() * sw).t()
    try:
        y = torch._scaled_mm(xq, wq.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16)
        row["tensorwise_ms"] = cuda_time(lambda: torch._scaled_mm(xq, wq.t(), scale_a=sx, scale_b=sw,
                                                                  out_dtype=torch.bfloat16))
        row["tensorwise_speedup"] = ms_bf16 / row["tensorwise_ms"]
        row["tensorwise_rel_err"] = rel_err(y, ref)
    except (RuntimeError, NotImplementedError) as exc:
        row["tensorwise_error"] = str(exc)[:200]
    # Rowwise scales (one per activation row, one per weight row).
    rx = x.abs().amax(1, keepdim=True).float().clamp_min(1e-12) / FP8_MAX
    rw = w.abs().amax(1, keepdim=True).float().clamp_min(1e-12) / FP8_MAX
    xr, wr = (x.float() / rx).to(FP8), (w.float() / rw).to(FP8)
    try:
        y = torch._scaled_mm(xr, wr.t(), scale_a=rx, scale_b=rw.t(), out_dtype=torch.bfloat16)
        row["rowwise_ms"] = cuda_time(lambda: torch._scaled_mm(xr, wr.t(), scale_a=rx, scale_b=rw.t(),
                                                               out_dtype=torch.bfloat16))
        row["rowwise_speedup"] = ms_bf16 / row["rowwise_ms"]
        row["rowwise_rel_err"] = rel_err(y, (xr.float() * rx) @ (wr.float() * rw).t())
    except (RuntimeError, NotImplementedError) as exc:
        row["rowwise_error"] = str(exc)[:200]
    # Strata's checkpoint layout: 128x128 weight blocks (what DeepSeek-V3 ships), activations
    # quantised per 1x128 on the fly inside fp8_linear.
    wb, sb = quantize_block_fp8(w.float().cpu())
    wb, sb = wb.to(dev), sb.to(dev)
    ref_b = x.float() @ dequantize_block_fp8(wb, sb, torch.float32).t()
    y = fp8_linear(x, wb, sb)
    row["blockwise_ms"] = cuda_time(lambda: fp8_linear(x, wb, sb))
    row["blockwise_speedup"] = ms_bf16 / row["blockwise_ms"]
    row["blockwise_rel_err"] = rel_err(y, ref_b)
    layout = fp8_module._SCALED_MM_OK.get(dev.index)
    row["blockwise_scaled_mm"] = getattr(layout, "__name__", "dequantise fallback")
    return row


def engine_checks(dev: torch.device, home: Path) -> dict[str, Any]:
    """The demo model with its page pool on the GPU: tokens vs CPU, warm vs cold, decode speed."""
    os.environ["STRATA_HOME"] = str(home)
    os.environ["STRATA_KV_DEVICE_BYTES"] = str(8 << 30)
    os.environ["STRATA_ATTENTION_BUDGET"] = "0"
    from runtime import Engine
    from runtime.demo import write_demo_model
    from runtime.sampling import SamplingParams
    from strata.settings import get_settings

    get_settings.cache_clear()
    model = write_demo_model(home / "demo-model", weights="fp8")
    out: dict[str, Any] = {}
    prompt = [(i * 7919) % 4000 + 10 for i in range(300)]
    params = SamplingParams(max_new_tokens=32, ignore_eos=True)
    cpu = Engine.from_pretrained(model, device="cpu", cache=False)
    cpu_tokens = cpu.run(prompt, params).token_ids
    del cpu
    gpu = Engine.from_pretrained(model, device=str(dev), cache=True)
    cold = gpu.run(prompt, params)
    warm = gpu.run(prompt, params)
    out["device_tier"] = {
        "pool_device": str(gpu.pool.data.device),
        "greedy_agreement_cpu_vs_gpu": sum(a == b for a, b in zip(cold.token_ids, cpu_tokens, strict=True)) / 32,
        "warm_equals_cold": warm.token_ids == cold.token_ids,
        "warm_cached_tokens": warm.cached_tokens,
        "cold_ttft_s": cold.ttft_s, "warm_ttft_s": warm.ttft_s,
    }
    print(json.dumps(out["device_tier"]), flush=True)
    gpu.close()
    out["decode"] = []
    for kv_dtype in ("bf16", "fp8"):
        engine = Engine.from_pretrained(model, device=str(dev), kv_dtype=kv_dtype, cache=False, prefill_chunk=4096)
        for length in (8192, 131072):
            out["decode"].append(decode_speed(engine, length, kv_dtype))
            print(json.dumps(out["decode"][-1]), flush=True)
        del engine
        torch.cuda.empty_cache()
    return out


@torch.inference_mode()
def decode_speed(engine: Any, length: int, kv_dtype: str, steps: int = 64) -> dict[str, Any]:
    ids = [(i * 104729) % 4000 + 10 for i in range(length)]
    kv = engine.new_sequence()
    try:
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = engine.prefill(kv, ids)
        torch.cuda.synchronize()
        prefill_s = time.perf_counter() - t0
        token = int(logits[-1].argmax())
        for _ in range(4):  # warm-up
            token = int(engine.decode_step(kv, token)[-1].argmax())
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            token = int(engine.decode_step(kv, token)[-1].argmax())
        torch.cuda.synchronize()
        step_s = (time.perf_counter() - t0) / steps
    finally:
        kv.release()
    return {"context": length, "kv_dtype": kv_dtype, "prefill_tokens_per_s": length / prefill_s,
            "decode_ms_per_token": step_s * 1e3, "decode_tokens_per_s": 1 / step_s,
            "pool_bytes": engine.pool.resident_bytes}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"GPU: {result['gpu']}, torch {result['torch']}", "",
             "| shape MxKxN | bf16 ms | tensorwise FP8 x | rowwise FP8 x | Strata blockwise x (scaled_mm?) |",
             "|---|---|---|---|---|"]
    for r in result["gemm"]:
        lines.append(f"| {r['shape']} | {r['bf16_ms']:.3f} | {r.get('tensorwise_speedup', 0):.2f} | "
                     f"{r.get('rowwise_speedup', 0):.2f} | {r['blockwise_speedup']:.2f} ({r['blockwise_scaled_mm']}) |")
    engine = result.get("engine", {})
    if engine:
        lines += ["", f"Device tier: {json.dumps(engine['device_tier'])}", "",
                  "| context | KV | prefill tok/s | decode ms/token | decode tok/s |", "|---|---|---|---|---|"]
        for r in engine["decode"]:
            lines.append(f"| {r['context']} | {r['kv_dtype']} | {r['prefill_tokens_per_s']:.0f} | "
                         f"{r['decode_ms_per_token']:.2f} | {r['decode_tokens_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-engine", action="store_true", help="only the GEMM part")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check runs on a GPU machine (see the module docstring)")
    dev = torch.device("cuda:0")
    result: dict[str, Any] = {"gpu": torch.cuda.get_device_name(dev), "torch": torch.__version__,
                              "gemm": gemm(dev)}
    if not args.skip_engine:
        with tempfile.TemporaryDirectory() as tmp:
            result["engine"] = engine_checks(dev, Path(tmp))
    out = Path(os.environ.get("OUT", "."))
    (out / "cuda_check.json").write_text(json.dumps(result, indent=1))
    (out / "cuda_check.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
