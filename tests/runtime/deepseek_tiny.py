"""Tiny seeded DeepSeek-V2/V3 checkpoints for tests, saved by transformers itself."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

from tests.runtime.hf_reference import make_checkpoint

# Weights at 0.1 rather than transformers' 0.02: logits spread enough that greedy tokens and
# routing choices are decided by real differences, so a wrong detail changes them.
BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
            num_hidden_layers=3, num_attention_heads=4, n_routed_experts=8, num_experts_per_tok=2,
            kv_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=16,
            max_position_embeddings=512, initializer_range=0.1)
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 128,
        "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.707}


def v3_config(**overrides: object) -> transformers.DeepseekV3Config:
    defaults = dict(q_lora_rank=48, n_group=4, topk_group=2, first_k_dense_replace=1, n_shared_experts=1)
    return transformers.DeepseekV3Config(**{**BASE, **defaults, **overrides})


def v2_config(**overrides: object) -> transformers.DeepseekV2Config:
    defaults = dict(q_lora_rank=None, first_k_dense_replace=1, n_shared_experts=2, topk_method="greedy")
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
