"""An embedding table held in e4m3 with 128x128 block scales: rows are dequantised on lookup.

Embeddings and the output head are a large share of a small model's bytes; keeping them FP8 is
what brings the whole checkpoint under 0.53x of bf16.
"""

from __future__ import annotations

import torch
from torch import nn

from runtime.fp8 import FP8_DTYPE, quantize_block_fp8


class FP8Embedding(nn.Module):
    weight: torch.Tensor  # buffers, typed for the checker (nn.Module's __getattr__ says Tensor | Module)
    weight_scale_inv: torch.Tensor

    def __init__(self, num_embeddings: int, embedding_dim: int, block: tuple[int, int] = (128, 128),
                 dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.block = (int(block[0]), int(block[1]))
        self.dtype = dtype
        rows, cols = -(-num_embeddings // self.block[0]), -(-embedding_dim // self.block[1])
        self.register_buffer("weight", torch.empty(num_embeddings, embedding_dim, dtype=FP8_DTYPE))
        self.register_buffer("weight_scale_inv", torch.empty(rows, cols, dtype=torch.float32))

    @classmethod
    def from_float(cls, weight: torch.Tensor, block: tuple[int, int] = (128, 128)) -> FP8Embedding:
        with torch.device("meta"):
            emb = cls(weight.shape[0], weight.shape[1], block)
        emb.weight, emb.weight_scale_inv = quantize_block_fp8(weight.float(), emb.block)
        return emb

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weight[ids].to(torch.float32)
        scales = self.weight_scale_inv[ids // self.block[0]]
        scales = scales.repeat_interleave(self.block[1], dim=-1)[..., :self.embedding_dim]
        return (rows * scales).to(self.dtype)
