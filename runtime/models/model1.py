"""MODEL1, Strata's own architecture (model_type "strata_model1").

A decoder-only transformer: GQA + RoPE with a large theta, RMSNorm, DeepSeekMoE-style feed-forward
(routed top-k experts plus always-on shared experts, the first `first_k_dense_replace` layers
dense), and native multimodal input the way Fuyu does it: each image or video patch (its pixels in
(py, px, channel) order, scaled to [-1, 1]) is projected by one linear layer straight into the
token stream at a `<|patch|>` position. There is no separate vision encoder.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from runtime.config import ModelConfig
from runtime.models.llama import CausalLM, Media
from strata.errors import ConfigError

SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|pad|>", "<|image|>", "<|/image|>", "<|patch|>", "<|row|>",
                  "<|video|>", "<|/video|>")
SPECIAL_TOKEN_FIELDS = {
    "<|bos|>": "bos_token_id", "<|eos|>": "eos_token_id", "<|pad|>": "pad_token_id",
    "<|image|>": "image_start_token_id", "<|/image|>": "image_end_token_id",
    "<|patch|>": "image_patch_token_id", "<|row|>": "image_row_token_id",
    "<|video|>": "video_start_token_id", "<|/video|>": "video_end_token_id",
}


class Model1ForCausalLM(CausalLM):
    def __init__(self, cfg: ModelConfig) -> None:
        if cfg.patch_size <= 0:
            raise ConfigError("a strata_model1 config needs a positive 'patch_size'")
        if "image_patch_token_id" not in cfg.special_token_ids:
            raise ConfigError("a strata_model1 config needs 'image_patch_token_id'")
        super().__init__(cfg)
        self.patch_dim = cfg.patch_size * cfg.patch_size * cfg.num_channels
        self.patch_token_id = cfg.special_token_ids["image_patch_token_id"]
        self.model.patch_proj = nn.Linear(self.patch_dim, cfg.hidden_size, bias=True)

    def embed(self, ids: torch.Tensor, media: Media | None = None) -> torch.Tensor:
        """Token embeddings, with each patch row replaced by the projection of its pixels."""
        x = self.model.embed_tokens(ids)
        if media is None:
            return x
        rows, patches = media
        if patches.shape[-1] != self.patch_dim:
            raise ConfigError(f"patch vectors have {patches.shape[-1]} values; this model takes "
                              f"{self.patch_dim} ({self.config.patch_size}x{self.config.patch_size}x"
                              f"{self.config.num_channels})")
        if not bool((ids[rows] == self.patch_token_id).all()):
            raise ConfigError("patch vectors must sit at <|patch|> token positions")
        proj = cast(nn.Linear, self.model.patch_proj)
        projected = proj(patches.to(x.dtype))
        return x.index_copy(0, rows, projected)
