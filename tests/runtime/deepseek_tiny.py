"""Tiny seeded DeepSeek-V2/V3 checkpoints for tests, saved by transformers itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers

from tests.runtime.hf_reference import make_checkpoint

# Weights at 0.1 rather than transformers' 0.02: logits spread enough that greedy tokens and
# routing choices are decided by real differences, so a wrong detail changes them.
BASE: dict[str, Any] = dict(vocab_size=256, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
            num_hidden_layers=3, num_attention_heads=4, n_routed_experts=8, num_experts_per_tok=2,
            kv_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16,
            max_position_embeddings=512, initializer_range=0.1)
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 128,
        "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.707}


def v3_config(**overrides: Any) -> transformers.DeepseekV3Config:
    defaults: dict[str, Any] = dict(q_lora_rank=48, n_group=4, topk_group=2, first_k_dense_replace=1,
                                    n_shared_experts=1)
    return transformers.DeepseekV3Config(**{**BASE, **defaults, **overrides})


def v2_config(**overrides: Any) -> transformers.DeepseekV2Config:
    defaults: dict[str, Any] = dict(q_lora_rank=None, first_k_dense_replace=1, n_shared_experts=2, topk_method="greedy")
    return transformers.DeepseekV2Config(**{**BASE, **defaults, **overrides})


def make_deepseek(config: transformers.PretrainedConfig, path: Path,
                  seed: int = 0) -> transformers.PreTrainedModel:
    """Save a seeded model; V3's e_score_correction_bias (zero at init) is set at random first."""
    model = make_checkpoint(config, path, seed)
    if config.model_type == "deepseek_v3":
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, buf in model.named_buffers():
                if name.endswith("e_score_correction_bias"):
                    buf.copy_(torch.rand(buf.shape, generator=g) * 0.2)
        model.save_pretrained(path)
    return model


FP8_QUANTIZATION = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                    "weight_block_size": [128, 128]}


def write_native_fp8(float_dir: Path, fp8_dir: Path, exact_dir: Path) -> None:
    """From a saved float checkpoint, write it as DeepSeek-V3 ships (every layer matrix but the router
    as e4m3 + float32 weight_scale_inv per 128x128 block, the rest bf16, e_score_correction_bias
    float32, plus an MTP layer) to `fp8_dir`, and the exactly dequantised float32 weights to `exact_dir`."""
    import json

    from safetensors.torch import load_file, save_file

    from runtime.fp8 import dequantize_block_fp8, quantize_block_fp8

    raw = json.loads((float_dir / "config.json").read_text())
    fp8: dict[str, torch.Tensor] = {}
    exact: dict[str, torch.Tensor] = {}
    for name, t in load_file(str(float_dir / "model.safetensors")).items():
        if t.dim() == 2 and ".layers." in name and not name.endswith("gate.weight"):
            q, scale = quantize_block_fp8(t, (128, 128))
            fp8[name], fp8[name + "_scale_inv"] = q, scale
            exact[name] = dequantize_block_fp8(q, scale, torch.float32, (128, 128))
        else:
            fp8[name] = t if name.endswith("e_score_correction_bias") else t.to(torch.bfloat16)
            exact[name] = fp8[name].float()
    # DeepSeek-V3 ships its multi-token-prediction module as one more layer; decoding ignores it.
    mtp, hidden = f"model.layers.{raw['num_hidden_layers']}.", raw["hidden_size"]
    fp8[mtp + "eh_proj.weight"], fp8[mtp + "eh_proj.weight_scale_inv"] = quantize_block_fp8(
        torch.randn(hidden, 2 * hidden) * 0.1, (128, 128))
    fp8[mtp + "enorm.weight"] = torch.ones(hidden, dtype=torch.bfloat16)
    for path, state, extra in ((fp8_dir, fp8, {"quantization_config": FP8_QUANTIZATION, "dtype": "bfloat16"}),
                               (exact_dir, exact, {"dtype": "float32"})):
        path.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path / "model.safetensors"))
        (path / "config.json").write_text(json.dumps({**raw, **extra}))
