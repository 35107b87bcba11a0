"""DeepSeek-V3 native FP8 checkpoints (e4m3 + weight_scale_inv per 128x128 block) loaded as they are."""

from __future__ import annotations

import pytest
import torch
import transformers
from safetensors import safe_open

from runtime import Engine
from runtime.fp8 import FP8Linear, dequantize_block_fp8
from tests.runtime.deepseek_tiny import YARN, make_deepseek, v3_config, write_native_fp8
from tests.runtime.hf_reference import reference_greedy, reference_logits
from tests.runtime.test_parity_llama import engine_logits, prompt


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(native FP8 dir, transformers on the exactly dequantised weights). Width 160: partial blocks."""
    root = tmp_path_factory.mktemp("ds3fp8")
    make_deepseek(v3_config(hidden_size=160, rope_parameters=YARN), root / "float")
    write_native_fp8(root / "float", root / "fp8", root / "exact")
    ref = transformers.AutoModelForCausalLM.from_pretrained(root / "exact", dtype=torch.float32)
    return root / "fp8", ref.eval()


def test_fp8_tensors_are_kept_as_stored(checkpoints) -> None:
    path, _ = checkpoints
    engine = Engine.from_pretrained(path, cache=False)
    assert engine.weights == "fp8"
    attn = engine.model.model.layers[1].self_attn
    name = "model.layers.1.self_attn.q_a_proj.weight"
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        stored, scale = f.get_tensor(name), f.get_tensor(name + "_scale_inv")
        kv_b = f.get_tensor("model.layers.1.self_attn.kv_b_proj.weight")
        kv_b_scale = f.get_tensor("model.layers.1.self_attn.kv_b_proj.weight_scale_inv")
    assert isinstance(attn.q_a_proj, FP8Linear)
    assert torch.equal(attn.q_a_proj.weight.view(torch.uint8), stored.view(torch.uint8))
    assert torch.equal(attn.q_a_proj.weight_scale_inv, scale)
    # kv_b_proj is absorbed into queries and outputs: dequantised once at load, in the compute dtype.
    expected = dequantize_block_fp8(kv_b, kv_b_scale, torch.bfloat16, (128, 128))
    assert torch.equal(attn.kv_b_proj.weight, expected)
    gate = engine.model.model.layers[1].mlp.gate
    assert gate.weight.dtype == gate.e_score_correction_bias.dtype == torch.float32


def test_dequantised_in_fp32_matches_transformers(checkpoints) -> None:
    """weights="fp32" dequantises every block exactly: the same numbers transformers runs."""
    path, ref = checkpoints
    engine = Engine.from_pretrained(path, weights="fp32", kv_dtype="fp32", page_size=8, prefill_chunk=16,
                                    cache=False)
    ids = prompt(40, 256)
    with torch.inference_mode():
        diff = (engine_logits(engine, ids) - reference_logits(ref, ids)).abs().max().item()
    assert diff <= 1e-4, f"max |logit diff| {diff:.2e}"
    assert engine.generate(ids, 32) == reference_greedy(ref, ids, 32)


def test_fp8_compute_stays_close_to_transformers(tmp_path) -> None:
    """Weights as stored: FP8 matmuls, bf16 activations, and (the loader's policy) the bf16 embedding
    and head quantised on load too. Dense feed-forward layers here: on this tiny random model a
    routing choice flips under bf16 alone (measured with routed experts, bf16 weights: cosine min
    0.71), which would measure the router's knife edge rather than FP8. Measured with dense layers,
    40 positions, logits std 1.27: FP8 max |logit diff| 0.48, cosine min 0.992, top-1 0.925; bf16
    weights 0.096, 0.9996, 0.975. The bounds allow about twice the measured error."""
    make_deepseek(v3_config(hidden_size=160, rope_parameters=YARN, first_k_dense_replace=3), tmp_path / "float")
    write_native_fp8(tmp_path / "float", tmp_path / "fp8", tmp_path / "exact")
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "exact", dtype=torch.float32).eval()
    engine = Engine.from_pretrained(tmp_path / "fp8", page_size=8, prefill_chunk=16, cache=False)
    assert engine.weights == "fp8"
    ids = prompt(40, 256)
    with torch.inference_mode():
        ours, theirs = engine_logits(engine, ids), reference_logits(ref, ids)
    cosine = torch.nn.functional.cosine_similarity(ours, theirs, dim=-1)
    assert (ours - theirs).abs().max().item() <= 1.0
    assert cosine.min().item() >= 0.98 and cosine.mean().item() >= 0.995
    assert (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item() >= 0.85
