"""`strata demo-model`: a MODEL1 checkpoint with seeded random weights and a real BPE tokenizer.

The weights are random: the model is for demos, tests and benchmarks, and its answers carry no
meaning. Everything is deterministic: the same seed writes byte-identical files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from runtime.config import ModelConfig
from runtime.corpus import generate
from runtime.fp8 import quantize_block_fp8
from runtime.models.model1 import SPECIAL_TOKEN_FIELDS, SPECIAL_TOKENS, Model1ForCausalLM
from strata.errors import BadRequest

VOCAB_SIZE = 8192
BLOCK = (128, 128)


def demo_config(vocab_size: int = VOCAB_SIZE) -> dict[str, Any]:
    """About 50M parameters, about a quarter active per token (2 of 24 routed experts + 1 shared)."""
    cfg: dict[str, Any] = {
        "architectures": ["Model1ForCausalLM"], "model_type": "strata_model1",
        "vocab_size": vocab_size, "hidden_size": 512, "intermediate_size": 1024,
        "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 64,
        "max_position_embeddings": 1_048_576 + 8192, "rope_theta": 10_000_000.0, "rms_norm_eps": 1e-6,
        "hidden_act": "silu", "tie_word_embeddings": False,
        "n_routed_experts": 24, "num_experts_per_tok": 2, "n_shared_experts": 1,
        "moe_intermediate_size": 128, "first_k_dense_replace": 1, "norm_topk_prob": True,
        "routed_scaling_factor": 1.0, "patch_size": 16, "num_channels": 3,
        "min_image_pixels": 32 * 32, "max_image_pixels": 512 * 512,
    }
    for i, token in enumerate(SPECIAL_TOKENS):
        cfg[SPECIAL_TOKEN_FIELDS[token]] = i
    return cfg


def build_tokenizer(vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """A byte-level BPE trained on the generated corpus; special tokens take ids 0..8.

    `vocab_size` is an upper bound: training stops when no pair occurs twice.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    text = generate()
    tok.train_from_iterator((text[i:i + 4096] for i in range(0, len(text), 4096)), trainer=trainer)
    return tok


def random_weights(cfg: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights scaled so activations stay O(1) through the stack and logits are peaked."""
    torch.manual_seed(seed)
    model = Model1ForCausalLM(cfg)
    state = {}
    for name, p in model.state_dict().items():
        if name.endswith("norm.weight"):
            t = 1.0 + 0.1 * torch.randn_like(p)
        elif name.endswith("bias"):
            t = 0.02 * torch.randn_like(p)
        elif "embed_tokens" in name:
            t = torch.randn_like(p)
        else:
            fan_in = p.shape[-1]
            gain = 0.5 if name.endswith(("o_proj.weight", "down_proj.weight")) else 1.0
            t = torch.randn_like(p) * gain / fan_in ** 0.5
        state[name] = t.contiguous()
    return state


def to_fp8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DeepSeek-V3 layout: every matrix as e4m3 `weight` + float32 `weight_scale_inv` per 128x128 block."""
    out: dict[str, torch.Tensor] = {}
    for name, t in state.items():
        matrix = t.dim() == 2 and (".layers." in name or name.startswith(("lm_head", "model.embed_tokens",
                                                                             "model.patch_proj")))
        if matrix and not name.endswith("gate.weight"):
            out[name], out[name + "_scale_inv"] = quantize_block_fp8(t, BLOCK)
        else:
            out[name] = t.to(torch.bfloat16)
    return out


def write_demo_model(directory: str | Path, weights: str = "fp8", seed: int = 0) -> Path:
    """Write config.json, model.safetensors, tokenizer.json and a model card into `directory`."""
    if weights not in ("fp8", "bf16", "fp32"):
        raise BadRequest(f"weights must be fp8, bf16 or fp32, got '{weights}'")
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    # The output head has exactly the tokenizer's rows, so every sampled id decodes to text.
    raw = demo_config(tokenizer.get_vocab_size())
    cfg = ModelConfig.from_dict(raw)
    state = random_weights(cfg, seed)
    if weights == "fp8":
        state = to_fp8(state)
        raw["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                      "weight_block_size": list(BLOCK)}
        raw["dtype"] = "bfloat16"
    else:
        dtype = torch.float32 if weights == "fp32" else torch.bfloat16
        state = {k: v.to(dtype) for k, v in state.items()}
        raw["dtype"] = "float32" if weights == "fp32" else "bfloat16"
    tmp = path / "model.safetensors.tmp"
    save_file(state, str(tmp), metadata={"format": "pt", "strata": "demo, random weights"})
    tmp.replace(path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    tokenizer.save(str(path / "tokenizer.json"))
    (path / "README.md").write_text(model_card(cfg, weights, seed))
    return path


def parameter_counts(cfg: ModelConfig) -> tuple[int, int]:
    """(total, active per token) parameters of a MODEL1 config."""
    with torch.device("meta"):
        model = Model1ForCausalLM(cfg)
    total = sum(p.numel() for p in model.parameters())
    per_expert = 3 * cfg.hidden_size * cfg.moe_intermediate_size
    moe_layers = sum(cfg.is_moe_layer(i) for i in range(cfg.num_hidden_layers))
    idle = moe_layers * (cfg.num_experts - cfg.num_experts_per_tok) * per_expert
    embedding = cfg.vocab_size * cfg.hidden_size  # a lookup, not a multiply
    return total, total - idle - embedding


def model_card(cfg: ModelConfig, weights: str, seed: int) -> str:
    total, active = parameter_counts(cfg)
    return f"""# Strata MODEL1 demo checkpoint

**Random weights.** This checkpoint was written by `strata demo-model` with seeded random weights
(seed {seed}). It exists for demos, tests and benchmarks of the runtime, the KV cache and the API.
**Its answers carry no meaning.** Point `--model` at a real checkpoint (Llama, Mistral, Qwen2/3,
Qwen3-MoE in the Hugging Face layout) for real answers.

- model_type: `strata_model1` (GQA + RoPE theta {cfg.rope_theta:g}, RMSNorm, DeepSeekMoE-style
  experts: {cfg.num_experts} routed, top-{cfg.num_experts_per_tok}, {cfg.n_shared_experts} shared;
  Fuyu-style patch input, {cfg.patch_size}x{cfg.patch_size}x{cfg.num_channels} patches)
- parameters: {total / 1e6:.1f}M total, {active / 1e6:.1f}M active per token
- weights: {weights}{" (e4m3, 128x128 block scales, DeepSeek-V3 layout)" if weights == "fp8" else ""}
- context: {cfg.max_position_embeddings} positions
- tokenizer: byte-level BPE, {cfg.vocab_size} tokens, trained at build time on generated text
"""
