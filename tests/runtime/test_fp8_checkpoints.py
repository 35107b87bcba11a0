"""FP8 weights through the loader: native checkpoints as they are, float ones quantised on load."""

from __future__ import annotations

import torch
from safetensors import safe_open

from runtime import Engine
from runtime.fp8 import FP8Linear, weight_nbytes
from runtime.fp8_embedding import FP8Embedding
from tests.runtime.model1_tiny import write_tiny_model1


def test_native_fp8_loads_as_is(tmp_path) -> None:
    path = write_tiny_model1(tmp_path, weights="fp8")
    engine = Engine.from_pretrained(path)
    assert engine.weights == "fp8"
    q = engine.model.model.layers[1].self_attn.q_proj
    assert isinstance(q, FP8Linear) and isinstance(engine.model.model.embed_tokens, FP8Embedding)
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        stored = f.get_tensor("model.layers.1.self_attn.q_proj.weight")
        scale = f.get_tensor("model.layers.1.self_attn.q_proj.weight_scale_inv")
    assert torch.equal(q.weight.view(torch.uint8), stored.view(torch.uint8))
    assert torch.equal(q.weight_scale_inv, scale)


def test_fp8_bytes_and_agreement_with_float(tmp_path) -> None:
    path = write_tiny_model1(tmp_path, weights="fp32")
    fp8 = Engine.from_pretrained(path, weights="fp8")
    bf16 = Engine.from_pretrained(path, weights="bf16")
    assert weight_nbytes(fp8.model) <= 0.53 * weight_nbytes(bf16.model)
    ids = fp8.encode("the cache keeps pages of the prefix so the second question is nearly free")
    with torch.inference_mode():
        from tests.runtime.test_parity_llama import engine_logits

        a, b = engine_logits(fp8, ids), engine_logits(bf16, ids)
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1).min().item()
    assert cosine >= 0.98, cosine


def test_dequantised_fp8_matches_fp8_within_rounding(tmp_path) -> None:
    path = write_tiny_model1(tmp_path, weights="fp8")
    as_fp8 = Engine.from_pretrained(path, weights="fp8")
    as_fp32 = Engine.from_pretrained(path, weights="fp32")
    assert as_fp32.weights == "fp32"
    ids = list(range(30, 90))
    from tests.runtime.test_parity_llama import engine_logits

    with torch.inference_mode():
        a, b = engine_logits(as_fp8, ids), engine_logits(as_fp32, ids)
    # Same weights; the FP8 path computes activations in bf16, which can flip a close MoE routing
    # choice at a position or two, so the bound is on the mean and on top-1 agreement.
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert cosine.mean().item() >= 0.995 and cosine.min().item() >= 0.95
    assert (a.argmax(-1) == b.argmax(-1)).float().mean().item() >= 0.9


def test_kv_fp8_pages(tmp_path) -> None:
    path = write_tiny_model1(tmp_path)
    fp8 = Engine.from_pretrained(path, weights="fp32", kv_dtype="fp8", page_size=16)
    bf16 = Engine.from_pretrained(path, weights="fp32", kv_dtype="bf16", page_size=16)
    assert fp8.layout.page_bytes <= 0.55 * bf16.layout.page_bytes
    ids = list(range(40, 240))
    from tests.runtime.test_parity_llama import engine_logits

    with torch.inference_mode():
        a, b = engine_logits(fp8, ids), engine_logits(bf16, ids)
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert cosine.mean().item() >= 0.995 and cosine.min().item() >= 0.95
