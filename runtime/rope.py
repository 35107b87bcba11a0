"""Rotary position embeddings: inverse frequencies per rope type, applied in the rotate-half layout."""

from __future__ import annotations

import math

import torch

from runtime.config import ModelConfig


def inverse_frequencies(cfg: ModelConfig) -> torch.Tensor:
    """The float32 inverse frequencies for `cfg`, computed the way transformers computes them."""
    dim = cfg.head_dim
    # Always on the CPU: models are built under torch.device("meta"), and these are real numbers.
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").to(torch.float32) / dim
    inv_freq = 1.0 / (cfg.rope_theta ** exponents)
    params = cfg.rope_params
    if cfg.rope_type == "linear":
        inv_freq = inv_freq / float(params["factor"])
    elif cfg.rope_type == "llama3":
        inv_freq = _llama3(inv_freq, params)
    return inv_freq


def _llama3(inv_freq: torch.Tensor, params: dict) -> torch.Tensor:
    factor = float(params["factor"])
    low, high = float(params["low_freq_factor"]), float(params["high_freq_factor"])
    old_len = float(params["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


class Rotary:
    """cos/sin tables computed per call from positions (no max-length table: contexts reach 1M)."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.inv_freq = inverse_frequencies(cfg)

    def __call__(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [n, heads, dim] by the tables [n, dim]."""
    cos, sin = cos[:, None, :], sin[:, None, :]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
