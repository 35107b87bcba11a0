"""The Llama family: Llama 2/3, Mistral, Qwen2 (qkv bias), Qwen3 (q/k norm), dense or MoE layers.

Parameter names follow the Hugging Face checkpoints, so weights load by name.
"""

from __future__ import annotations

import torch
from torch import nn

from runtime.config import ModelConfig
from runtime.kv import KVCache
from runtime.layers import MLP, Attention, MoE, RMSNorm
from runtime.rope import Rotary
from strata.errors import ConfigError

# Media for one forward pass: (row indices within the pass [m], patch vectors [m, patch_dim]).
Media = tuple[torch.Tensor, torch.Tensor]


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.self_attn = Attention(cfg, layer)
        self.mlp: nn.Module = (MoE(cfg) if cfg.is_moe_layer(layer)
                               else MLP(cfg.hidden_size, cfg.intermediate_size, cfg.mlp_bias))
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], kv: KVCache) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), rope, kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class CausalLM(nn.Module):
    """A decoder-only language model that reads and writes its KV through a KVCache."""

    tied_weights = ("lm_head.weight", "model.embed_tokens.weight")

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Body(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.rotary = Rotary(cfg)

    def embed(self, ids: torch.Tensor, media: Media | None = None) -> torch.Tensor:
        """Input embeddings for token ids [n] -> [n, hidden]; text-only families take no media."""
        if media is not None:
            raise ConfigError(f"model_type '{self.config.model_type}' takes no image or video input")
        return self.model.embed_tokens(ids)

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, kv: KVCache,
                media: Media | None = None, all_logits: bool = False) -> torch.Tensor:
        """Run n new positions through the model; logits for the last one (or all) as float32."""
        x = self.embed(ids, media)
        rope = self.rotary(positions, x.dtype)
        for layer in self.model.layers:
            x = layer(x, rope, kv)
        x = x if all_logits else x[-1:]
        return self.lm_head(self.model.norm(x)).float()
