"""Tiny random Hugging Face models (seeded) saved as checkpoints, and transformers' own outputs."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers


def make_checkpoint(config: transformers.PretrainedConfig, path: Path,
                    seed: int = 0) -> transformers.PreTrainedModel:
    """Build the transformers model for `config` with seeded random weights and save it to `path`."""
    torch.manual_seed(seed)
    config._attn_implementation = "sdpa"
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # the default init leaves norms at 1; perturb them so they are tested
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(torch.randn_like(p) * 0.1)
            elif name.endswith("bias"):
                p.copy_(torch.randn_like(p) * 0.02)
    model.eval()
    model.save_pretrained(path)
    return model


def reference_logits(model: transformers.PreTrainedModel, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def reference_greedy(model: transformers.PreTrainedModel, ids: list[int], n: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                             pad_token_id=0, eos_token_id=None)
    return out[0, len(ids):].tolist()
