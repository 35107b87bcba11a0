"""DeepSeek-V2 and DeepSeek-V3: multi-head latent attention (MLA) and DeepSeekMoE with group-limited routing.

MLA runs in the absorbed form. transformers expands the cached latent c (kv_lora_rank dims, after
kv_a_layernorm) per head into k_nope = W_UK c and v = W_UV c. Since q_nope . (W_UK c) =
(W_UK^T q_nope) . c, a head's score is [W_UK^T q_nope ; q_pe] . [c ; k_pe] and its output is
W_UV (sum_t a_t c_t): MQA with one KV head of kv_lora_rank + qk_rope_head_dim dims whose value is
the key itself. So the cache stores only that latent, one plane per layer (KVLayout.shared_kv), and
page summaries and sparse page selection score it with the absorbed query. The rope dims that ride
along in the value are dropped after attention (about 1/9 more work in the value product than a
narrower value view, and no second layout in any attention path).

Routing: V3 scores experts with a sigmoid, chooses with scores + e_score_correction_bias inside the
topk_group best of n_group groups (a group scores the sum of its top two), and weighs the chosen
experts by their unbiased scores (normalised if norm_topk_prob) times routed_scaling_factor. V2
scores with a softmax, "greedy" or "group_limited_greedy" (a group scores its best expert). The
first first_k_dense_replace layers (and, for V2, layers off moe_layer_freq) are dense.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from runtime.config import ModelConfig
from runtime.kv import KVCache
from runtime.layers import MLP, MoE, RMSNorm, Router
from runtime.models.llama import CausalLM
from runtime.rope import Rotary, apply_rotary, apply_rotary_interleaved, yarn_factor, yarn_mscale
from strata.errors import ConfigError

TOPK_METHODS = {"deepseek_v3": ("noaux_tc",), "deepseek_v2": ("greedy", "group_limited_greedy")}
LATENT_NORM_EPS = 1e-6  # transformers builds q_a_layernorm and kv_a_layernorm with the default eps
_LAYER = re.compile(r"model\.layers\.(\d+)\.")


class LatentProjection(nn.Module):
    """kv_b_proj as a float matrix [heads * (nope + v), rank]: absorption reads it per head and never
    runs it as a linear layer, so an FP8 checkpoint's copy is dequantised once at load."""

    def __init__(self, rank: int, heads: int, nope: int, value: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(heads * (nope + value), rank))
        self.heads, self.nope, self.value = heads, nope, value

    def split(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_UK [heads, nope, rank] and W_UV [heads, value, rank]."""
        w = self.weight.view(self.heads, self.nope + self.value, -1)
        return w[:, :self.nope], w[:, self.nope:]


class LatentAttention(nn.Module):
    """MLA over the paged cache: queries absorbed into the latent space, one latent KV head."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer, self.heads = layer, cfg.num_attention_heads
        self.rank, self.nope, self.rope = cfg.kv_lora_rank, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim
        self.value = cfg.v_head_dim
        qk_dim, hidden, bias = self.nope + self.rope, cfg.hidden_size, cfg.attention_bias
        q_rank = cfg.q_lora_rank
        self.q_lora = q_rank is not None
        if q_rank is None:
            self.q_proj = nn.Linear(hidden, self.heads * qk_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(hidden, q_rank, bias=bias)
            self.q_a_layernorm = RMSNorm(q_rank, LATENT_NORM_EPS)
            self.q_b_proj = nn.Linear(q_rank, self.heads * qk_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(hidden, self.rank + self.rope, bias=bias)
        self.kv_a_layernorm = RMSNorm(self.rank, LATENT_NORM_EPS)
        self.kv_b_proj = LatentProjection(self.rank, self.heads, self.nope, self.value)
        self.o_proj = nn.Linear(self.heads * self.value, hidden, bias=bias)
        self.rotate = apply_rotary_interleaved if cfg.rope_interleave else apply_rotary
        self.scale = softmax_scale(cfg)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], kv: KVCache) -> torch.Tensor:
        n = x.shape[0]
        q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x))) if self.q_lora else self.q_proj(x)
        q_nope, q_pe = q.view(n, self.heads, -1).split([self.nope, self.rope], dim=-1)
        latent, k_pe = self.kv_a_proj_with_mqa(x).split([self.rank, self.rope], dim=-1)
        latent = self.kv_a_layernorm(latent)
        q_pe, k_pe = self.rotate(q_pe, *rope), self.rotate(k_pe.view(n, 1, self.rope), *rope)
        w_uk, w_uv = self.kv_b_proj.split()
        query = torch.cat((torch.einsum("nhd,hdr->nhr", q_nope, w_uk), q_pe), dim=-1)
        key = torch.cat((latent.view(n, 1, self.rank), k_pe), dim=-1)
        out = kv.attend(self.layer, query, key, key, self.scale)
        out = torch.einsum("nhr,hvr->nhv", out[..., :self.rank], w_uv)
        return self.o_proj(out.reshape(n, self.heads * self.value))


def softmax_scale(cfg: ModelConfig) -> float:
    """qk_head_dim ** -0.5, times YaRN's mscale(factor, mscale_all_dim) squared as transformers does."""
    scale = float((cfg.qk_nope_head_dim + cfg.qk_rope_head_dim) ** -0.5)
    mscale_all_dim = cfg.rope_params.get("mscale_all_dim")
    if cfg.rope_type != "default" and mscale_all_dim:
        m = yarn_mscale(yarn_factor(cfg), float(mscale_all_dim))
        scale = scale * m * m
    return scale


class GroupLimitedRouter(Router):
    """DeepSeek routing in float32: (weights [n, k] in x's dtype, expert ids [n, k])."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.v3 = cfg.model_type == "deepseek_v3"
        # A parameter, not a buffer, so the loader fills it by name like every other tensor.
        self.e_score_correction_bias = nn.Parameter(torch.zeros(cfg.num_experts)) if self.v3 else None
        self.groups, self.topk_group = cfg.n_group, cfg.topk_group
        self.grouped = self.v3 or cfg.topk_method == "group_limited_greedy"
        self.normalise = self.v3 and cfg.norm_topk_prob  # transformers' V2 never renormalises

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = F.linear(x.float(), self.weight.float())
        if self.e_score_correction_bias is not None:
            scores = logits.sigmoid()
            choice = scores + self.e_score_correction_bias.float()
        else:
            scores = choice = logits.softmax(dim=-1)
        if self.grouped:
            choice = self._limit_to_groups(choice)
        experts = torch.topk(choice, self.top_k, dim=-1, sorted=False).indices
        weights = scores.gather(1, experts)
        if self.normalise:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return (weights * self.scaling).to(x.dtype), experts

    def _limit_to_groups(self, choice: torch.Tensor) -> torch.Tensor:
        """Experts outside the topk_group best groups masked out (-inf for V3, 0 for V2, as transformers)."""
        grouped = choice.view(choice.shape[0], self.groups, -1)
        group_scores = grouped.topk(2, dim=-1).values.sum(dim=-1) if self.v3 else grouped.amax(dim=-1)
        keep = torch.topk(group_scores, self.topk_group, dim=-1, sorted=False).indices
        mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, keep, True)
        mask = mask[:, :, None].expand_as(grouped).reshape_as(choice)
        return choice.masked_fill(~mask, float("-inf") if self.v3 else 0.0)


class DeepseekMoE(MoE):
    """Routed experts under group-limited routing plus the always-on shared experts."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__(cfg)
        self.gate = GroupLimitedRouter(cfg)


class DeepseekDecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.self_attn = LatentAttention(cfg, layer)
        self.mlp: nn.Module = (DeepseekMoE(cfg) if is_moe_layer(cfg, layer)
                               else MLP(cfg.hidden_size, cfg.intermediate_size))
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], kv: KVCache) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, kv)
        return x + self.mlp(self.post_attention_layernorm(x))


def is_moe_layer(cfg: ModelConfig, layer: int) -> bool:
    """DeepSeek's rule: routed experts from first_k_dense_replace on, every moe_layer_freq-th layer."""
    return bool(cfg.num_experts) and layer >= cfg.first_k_dense_replace and layer % cfg.moe_layer_freq == 0


class DeepseekForCausalLM(CausalLM):
    """DeepSeek-V2 / V3 (model_type deepseek_v2, deepseek_v3) over a latent KV cache."""

    # Routing decides which experts run: keep its inputs in float32 whatever the weight dtype.
    float32_params = ("mlp.gate.weight", "mlp.gate.e_score_correction_bias")

    def __init__(self, cfg: ModelConfig) -> None:
        check_config(cfg)
        nn.Module.__init__(self)  # CausalLM's embed and forward; the body is built here
        self.config = cfg
        self.model = nn.Module()  # type: ignore[assignment]  # forward reads embed_tokens, layers, norm
        self.model.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.model.layers = nn.ModuleList(DeepseekDecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.model.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = Rotary(cfg)

    def ignores_tensor(self, name: str) -> bool:
        """Multi-token-prediction layers (model.layers.{num_hidden_layers}...) ship in the checkpoint
        but are not part of next-token decoding."""
        match = _LAYER.match(name)
        return match is not None and int(match.group(1)) >= self.config.num_hidden_layers


def check_config(cfg: ModelConfig) -> None:
    """Refuse DeepSeek settings this runtime would silently get wrong."""
    if not cfg.latent_kv:
        raise ConfigError(f"a {cfg.model_type} config needs kv_lora_rank > 0 (multi-head latent attention)")
    if cfg.mlp_bias:
        raise ConfigError("mlp_bias is not supported for DeepSeek models")
    if cfg.moe_layer_freq < 1:
        raise ConfigError(f"moe_layer_freq must be positive, got {cfg.moe_layer_freq}")
    if not cfg.num_experts:
        return
    method = "noaux_tc" if cfg.model_type == "deepseek_v3" else cfg.topk_method
    if method not in TOPK_METHODS[cfg.model_type]:
        raise ConfigError(f"topk_method '{cfg.topk_method}' is not supported for {cfg.model_type}; supported: "
                          f"{', '.join(TOPK_METHODS[cfg.model_type])}")
    scoring = cfg.raw.get("scoring_func")
    expected = "sigmoid" if cfg.model_type == "deepseek_v3" else "softmax"
    if scoring not in (None, expected):
        raise ConfigError(f"scoring_func '{scoring}' is not supported for {cfg.model_type} (only {expected})")
    grouped = cfg.model_type == "deepseek_v3" or method == "group_limited_greedy"
    if grouped and (cfg.n_group < 1 or cfg.num_experts % cfg.n_group or not 1 <= cfg.topk_group <= cfg.n_group):
        raise ConfigError(f"n_group ({cfg.n_group}) must divide n_routed_experts ({cfg.num_experts}) and "
                          f"topk_group ({cfg.topk_group}) must be in 1..n_group")
