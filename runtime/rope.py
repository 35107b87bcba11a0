"""Rotary position embeddings: inverse frequencies per rope type, applied in the rotate-half layout."""

from __future__ import annotations

import math

import torch

from runtime.config import ModelConfig


def inverse_frequencies(cfg: ModelConfig) -> torch.Tensor:
    """The float32 inverse frequencies for `cfg`, computed the way transformers computes them."""
    dim = cfg.rope_dim
    # Always on the CPU: models are built under torch.device("meta"), and these are real numbers.
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device="cpu").to(torch.float32) / dim
    inv_freq = 1.0 / (cfg.rope_theta ** exponents)
    params = cfg.rope_params
    if cfg.rope_type == "linear":
        inv_freq = inv_freq / float(params["factor"])
    elif cfg.rope_type == "llama3":
        inv_freq = _llama3(inv_freq, params)
    elif cfg.rope_type == "yarn":
        inv_freq = _yarn(cfg.rope_theta ** exponents, cfg)
    return inv_freq


def yarn_factor(cfg: ModelConfig) -> float:
    """YaRN's context extension factor (DeepSeek may leave it to max / original positions)."""
    params = cfg.rope_params
    factor = params.get("factor")
    if factor is None:
        return cfg.max_position_embeddings / float(params["original_max_position_embeddings"])
    return float(factor)


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def attention_factor(cfg: ModelConfig) -> float:
    """The factor YaRN applies to cos and sin (1 for every other rope type)."""
    params = cfg.rope_params
    if cfg.rope_type != "yarn":
        return 1.0
    if params.get("attention_factor") is not None:
        return float(params["attention_factor"])
    factor, mscale, mscale_all_dim = yarn_factor(cfg), params.get("mscale"), params.get("mscale_all_dim")
    if mscale and mscale_all_dim:
        return yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
    return yarn_mscale(factor)


def _yarn(pos_freqs: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Interpolate low frequencies by the factor, keep high ones, ramp between (transformers' yarn)."""
    params, dim, base = cfg.rope_params, cfg.rope_dim, cfg.rope_theta
    factor = yarn_factor(cfg)
    old_len = float(params.get("original_max_position_embeddings") or cfg.max_position_embeddings)
    beta_fast, beta_slow = params.get("beta_fast") or 32, params.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(old_len / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # as transformers does, to avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32, device="cpu") - low) / (high - low)).clamp(0, 1)
    extrapolation = 1 - ramp
    # 1 / (factor * pos_freqs), not inv_freq / factor: the same rounding as transformers.
    return 1.0 / (factor * pos_freqs) * (1 - extrapolation) + 1.0 / pos_freqs * extrapolation


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
        self.factor = attention_factor(cfg)

    def __call__(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        if self.factor != 1.0:
            cos, sin = cos * self.factor, sin * self.factor
        return cos.to(dtype), sin.to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [n, heads, dim] by the tables [n, dim]."""
    cos, sin = cos[:, None, :], sin[:, None, :]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def apply_rotary_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs (x0, x1), (x2, x3), ... of x [n, heads, dim]; the result comes out
    de-interleaved (rotated evens, then rotated odds), as transformers' DeepSeek does. Queries and
    keys are permuted alike, so their dot products are those of the interleaved layout."""
    half = x.shape[-1] // 2
    cos, sin = cos[:, None, :half], sin[:, None, :half]
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.cat((even * cos - odd * sin, odd * cos + even * sin), dim=-1)
