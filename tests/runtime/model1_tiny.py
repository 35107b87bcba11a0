"""A tiny MODEL1 checkpoint for tests: the demo architecture at toy width."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from runtime.config import ModelConfig
from runtime.demo import build_tokenizer, demo_config, random_weights, to_fp8


def tiny_config(vocab_size: int) -> dict:
    raw = demo_config(vocab_size)
    raw.update(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, head_dim=16, n_routed_experts=6, num_experts_per_tok=2,
               moe_intermediate_size=32, patch_size=4, max_position_embeddings=4096)
    return raw


def write_tiny_model1(path: Path, weights: str = "fp32", seed: int = 0) -> Path:
    tok = build_tokenizer()
    raw = tiny_config(tok.get_vocab_size())
    state = random_weights(ModelConfig.from_dict(raw), seed)
    if weights == "fp8":
        state = to_fp8(state)
        raw["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
        raw["dtype"] = "bfloat16"
    else:
        raw["dtype"] = "float32"
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(raw))
    tok.save(str(path / "tokenizer.json"))
    return path


def patch_tokens(cfg: ModelConfig, rows: int, cols: int) -> list[int]:
    ids = cfg.special_token_ids
    out = [ids["image_start_token_id"]]
    for _ in range(rows):
        out += [ids["image_patch_token_id"]] * cols + [ids["image_row_token_id"]]
    return out + [ids["image_end_token_id"]]


def random_patches(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.rand(n, dim, generator=torch.Generator().manual_seed(seed)) * 2 - 1
