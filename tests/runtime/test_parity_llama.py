"""The Llama family against transformers' own implementation on seeded random tiny configs."""

from __future__ import annotations

import pytest
import torch
import transformers

from runtime import Engine
from runtime.kv import KVCache
from tests.runtime.hf_reference import make_checkpoint, reference_greedy, reference_logits

BASE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)

CONFIGS = {
    "llama2-untied": lambda: transformers.LlamaConfig(**BASE, tie_word_embeddings=False),
    "llama3-rope-scaling-tied": lambda: transformers.LlamaConfig(
        **BASE, tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64}),
    "llama-attention-bias": lambda: transformers.LlamaConfig(**BASE, attention_bias=True),
    "mistral-sliding-window": lambda: transformers.MistralConfig(**BASE, sliding_window=24),
    "qwen2-qkv-bias": lambda: transformers.Qwen2Config(**BASE, tie_word_embeddings=True),
    "qwen3-qk-norm": lambda: transformers.Qwen3Config(**BASE, head_dim=32, tie_word_embeddings=False),
}


def prompt(n: int, vocab: int, seed: int = 1) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g).tolist()


def engine_logits(engine: Engine, ids: list[int]) -> torch.Tensor:
    kv = KVCache(engine.pool, engine.config.max_position_embeddings)
    rows = []
    try:
        for lo in range(0, len(ids), 7):  # uneven chunks cross page boundaries on purpose
            chunk = ids[lo:lo + 7]
            kv.begin(len(chunk))
            rows.append(engine.model(torch.tensor(chunk), torch.arange(lo, lo + len(chunk)), kv, None,
                                     all_logits=True))
            kv.commit()
    finally:
        kv.release()
    return torch.cat(rows)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_transformers(name: str, tmp_path) -> None:
    ref = make_checkpoint(CONFIGS[name](), tmp_path)
    engine = Engine.from_pretrained(tmp_path, weights="fp32", page_size=8, prefill_chunk=16)
    ids = prompt(40, 256)
    with torch.inference_mode():
        diff = (engine_logits(engine, ids) - reference_logits(ref, ids)).abs().max().item()
    assert diff <= 1e-4, f"{name}: max |logit diff| {diff:.2e}"
    assert engine.generate(ids, 32) == reference_greedy(ref, ids, 32)
