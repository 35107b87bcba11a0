"""KV page bytes per token for real model configs, from the layout the engine builds (no weights needed).

MLA (DeepSeek-V3) stores one latent plane of kv_lora_rank + qk_rope_head_dim per layer; GQA stores
K and V for every KV head. Both come from KVLayout.for_model(...).page_bytes, scales included.

    .venv/bin/python bench/page_bytes.py [--page-size 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.config import ModelConfig  # noqa: E402
from runtime.kv import KVLayout  # noqa: E402

# The attention fields of the published config.json files (deepseek-ai/DeepSeek-V3,
# deepseek-ai/DeepSeek-V2-Lite, meta-llama/Meta-Llama-3-70B, Qwen/Qwen3-235B-A22B).
CONFIGS: dict[str, dict] = {
    "DeepSeek-V3 (MLA)": dict(
        model_type="deepseek_v3", vocab_size=129280, hidden_size=7168, num_hidden_layers=61,
        num_attention_heads=128, num_key_value_heads=128, max_position_embeddings=163840, kv_lora_rank=512,
        q_lora_rank=1536, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128, n_routed_experts=256,
        num_experts_per_tok=8, moe_intermediate_size=2048, intermediate_size=18432,
        rope_scaling={"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                      "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}),
    "DeepSeek-V2-Lite (MLA)": dict(
        model_type="deepseek_v2", vocab_size=102400, hidden_size=2048, num_hidden_layers=27,
        num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=163840, kv_lora_rank=512,
        q_lora_rank=None, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128, n_routed_experts=64,
        num_experts_per_tok=6, moe_intermediate_size=1408, intermediate_size=10944),
    "Llama-3-70B (GQA 8x128)": dict(
        model_type="llama", vocab_size=128256, hidden_size=8192, num_hidden_layers=80, num_attention_heads=64,
        num_key_value_heads=8, max_position_embeddings=8192, intermediate_size=28672),
    "Qwen3-235B-A22B (GQA 4x128)": dict(
        model_type="qwen3_moe", vocab_size=151936, hidden_size=4096, num_hidden_layers=94, num_attention_heads=64,
        num_key_value_heads=4, head_dim=128, max_position_embeddings=40960, num_experts=128,
        num_experts_per_tok=8, moe_intermediate_size=1536, intermediate_size=12288),
}


def bytes_per_token(raw: dict, storage: str, page_size: int) -> float:
    """KV bytes per token of `raw` (a config.json dict) with `storage` pages of `page_size` positions."""
    layout = KVLayout.for_model(ModelConfig.from_dict(raw), page_size, storage, torch.bfloat16)
    return layout.page_bytes / page_size


def table(page_size: int) -> str:
    """A markdown table: bytes per token in fp8 and bf16, per 1M tokens, and the ratio to MLA."""
    mla = bytes_per_token(CONFIGS["DeepSeek-V3 (MLA)"], "fp8", page_size)
    lines = ["| model | layers | stored per layer per token | fp8 B/token | bf16 B/token | fp8 GiB / 1M tokens "
             "| fp8 vs DeepSeek-V3 |", "|---|---|---|---|---|---|---|"]
    for name, raw in CONFIGS.items():
        cfg = ModelConfig.from_dict(raw)
        planes = "1 latent" if cfg.latent_kv else "K + V"
        fp8, bf16 = bytes_per_token(raw, "fp8", page_size), bytes_per_token(raw, "bf16", page_size)
        lines.append(f"| {name} | {cfg.num_hidden_layers} | {planes} x {cfg.num_key_value_heads} x {cfg.head_dim} "
                     f"| {fp8:,.0f} | {bf16:,.0f} | {fp8 * 2**20 / 2**30:,.1f} | {fp8 / mla:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--page-size", type=int, default=64)
    args = parser.parse_args()
    print(f"KV page bytes per token, page size {args.page_size} (fp8 includes one float32 scale per page, "
          f"layer, plane and KV head)\n")
    print(table(args.page_size))


if __name__ == "__main__":
    main()
