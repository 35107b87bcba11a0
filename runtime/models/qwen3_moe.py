"""Qwen3-MoE: the Llama-family decoder with q/k RMSNorm and softmax top-k routed experts.

Routing (norm_topk_prob) and the choice of MoE layers (decoder_sparse_step, mlp_only_layers)
come from the config; runtime.layers.MoE holds the experts under the checkpoint's own names
(mlp.gate.weight, mlp.experts.N.{gate,up,down}_proj.weight).
"""

from __future__ import annotations

from runtime.config import ModelConfig
from runtime.models.llama import CausalLM


class Qwen3MoeForCausalLM(CausalLM):
    def __init__(self, cfg: ModelConfig) -> None:
        if not cfg.num_experts:
            from strata.errors import ConfigError

            raise ConfigError("a qwen3_moe config needs num_experts > 0")
        super().__init__(cfg)
