"""MODEL1 has no transformers reference: its routing and patch path are checked against first principles."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F

from runtime import Engine, SamplingParams
from runtime.config import ModelConfig
from runtime.demo import demo_config, parameter_counts
from runtime.layers import MoE
from strata.errors import BadRequest, ConfigError
from tests.runtime.model1_tiny import patch_tokens, random_patches, write_tiny_model1


@dataclass
class Span:
    start: int
    length: int
    patches: torch.Tensor
    media_hash: bytes = b"0" * 16


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    return Engine.from_pretrained(write_tiny_model1(tmp_path_factory.mktemp("m1")), weights="fp32")


def test_demo_size_and_sparsity() -> None:
    total, active = parameter_counts(ModelConfig.from_dict(demo_config(8192)))
    assert 30e6 <= total <= 60e6
    assert 0.2 <= active / total <= 0.35


def dense_moe_reference(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, weighted by the renormalised top-k softmax; plus the shared expert."""
    probs = torch.softmax(x @ moe.gate.weight.T, dim=-1)
    top = torch.topk(probs, moe.gate.top_k, dim=-1)
    weights = torch.zeros_like(probs).scatter(1, top.indices, top.values)
    weights = weights / weights.sum(-1, keepdim=True)
    outs = torch.stack([e.down_proj(F.silu(e.gate_proj(x)) * e.up_proj(x)) for e in moe.experts], dim=1)
    shared = moe.shared_experts(x)
    return (weights[..., None] * outs).sum(1) + shared


def test_moe_routing_matches_dense_reference(engine: Engine) -> None:
    layers = engine.model.model.layers
    assert not isinstance(layers[0].mlp, MoE)  # first_k_dense_replace = 1
    moe = layers[1].mlp
    assert isinstance(moe, MoE) and moe.shared_experts is not None
    x = torch.randn(33, engine.config.hidden_size, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        got, want = moe(x), dense_moe_reference(moe, x)
        weights, experts = moe.gate(x)
    assert torch.allclose(got, want, atol=1e-5)
    assert experts.shape == (33, 2) and torch.allclose(weights.sum(-1), torch.ones(33), atol=1e-6)
    assert len(experts.unique()) > 2  # tokens really spread over experts


def test_patches_enter_the_stream_at_patch_positions(engine: Engine) -> None:
    cfg = engine.config
    text = engine.encode("look at this picture: ")
    image = patch_tokens(cfg, 2, 3)
    ids = text + image + engine.encode(" what is it?", add_bos=False)
    patches = random_patches(6, cfg.patch_size ** 2 * cfg.num_channels, seed=1)
    model = engine.model
    rows = torch.tensor([i for i, t in enumerate(ids) if t == cfg.special_token_ids["image_patch_token_id"]])
    with torch.inference_mode():
        emb = model.embed(torch.tensor(ids), (rows, patches))
        assert torch.allclose(emb[rows], model.model.patch_proj(patches))
        others = torch.ones(len(ids), dtype=torch.bool).index_fill(0, rows, False)
        assert torch.equal(emb[others], model.model.embed_tokens(torch.tensor(ids))[others])
    first = engine.run(ids, SamplingParams(max_new_tokens=8), [Span(len(text), len(image), patches)])
    other = random_patches(6, patches.shape[1], seed=2)
    second = engine.run(ids, SamplingParams(max_new_tokens=8), [Span(len(text), len(image), other)])
    without = engine.run(ids, SamplingParams(max_new_tokens=8))
    assert len({tuple(first.token_ids), tuple(second.token_ids), tuple(without.token_ids)}) > 1


def test_patch_count_must_match(engine: Engine) -> None:
    cfg = engine.config
    ids = [1, *patch_tokens(cfg, 1, 2)]
    bad = random_patches(3, cfg.patch_size ** 2 * cfg.num_channels, seed=1)
    with pytest.raises(BadRequest, match="<\\|patch\\|> tokens but 3 patches"):
        engine.run(ids, SamplingParams(max_new_tokens=1), [Span(1, len(ids) - 1, bad)])
    wrong_dim = random_patches(2, 7, seed=1)
    with pytest.raises(ConfigError, match="patch vectors have 7 values"):
        engine.run(ids, SamplingParams(max_new_tokens=1), [Span(1, len(ids) - 1, wrong_dim)])


def test_chunked_prefill_equals_one_pass(tmp_path) -> None:
    path = write_tiny_model1(tmp_path)
    ids = list(range(20, 300))
    whole = Engine.from_pretrained(path, weights="fp32", prefill_chunk=4096, page_size=16)
    chunked = Engine.from_pretrained(path, weights="fp32", prefill_chunk=37, page_size=16)
    assert whole.generate(ids, 24) == chunked.generate(ids, 24)
