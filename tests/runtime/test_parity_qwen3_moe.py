"""Qwen3-MoE against transformers on seeded random tiny configs: routing, norm_topk_prob, layer choice."""

from __future__ import annotations

import pytest
import torch
import transformers

from runtime import Engine
from runtime.layers import MoE
from tests.runtime.hf_reference import make_checkpoint, reference_greedy, reference_logits
from tests.runtime.test_parity_llama import engine_logits, prompt

BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, num_experts=8,
            num_experts_per_tok=2, max_position_embeddings=512, router_aux_loss_coef=0.0)

CONFIGS = {
    "norm-topk": dict(norm_topk_prob=True),
    "no-norm-topk-tied": dict(norm_topk_prob=False, tie_word_embeddings=True),
    "sparse-step-2": dict(decoder_sparse_step=2, num_experts_per_tok=3),
    "mlp-only-layers": dict(mlp_only_layers=[0, 3]),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_transformers(name: str, tmp_path) -> None:
    ref = make_checkpoint(transformers.Qwen3MoeConfig(**{**BASE, **CONFIGS[name]}), tmp_path)
    engine = Engine.from_pretrained(tmp_path, weights="fp32", page_size=8, prefill_chunk=16)
    expected_moe = [i for i, layer in enumerate(ref.model.layers)
                    if type(layer.mlp).__name__.endswith("SparseMoeBlock")]
    ours = [i for i, layer in enumerate(engine.model.model.layers) if isinstance(layer.mlp, MoE)]
    assert ours == expected_moe
    ids = prompt(40, 256)
    with torch.inference_mode():
        diff = (engine_logits(engine, ids) - reference_logits(ref, ids)).abs().max().item()
    assert diff <= 1e-4, f"{name}: max |logit diff| {diff:.2e}"
    assert engine.generate(ids, 32) == reference_greedy(ref, ids, 32)
