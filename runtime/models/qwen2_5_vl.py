"""Qwen2.5-VL (model_type "qwen2_5_vl"): the Qwen2 decoder with M-RoPE, fed by transformers' vision tower.

The language model is Strata's own (runtime.layers: GQA with q/k/v bias over the paged KV cache).
M-RoPE gives every position three rows (time, height, width) and `mrope_section` splits the rotary
frequencies among them. Text carries one value in all three rows, so text alone is ordinary RoPE;
the placeholder tokens of an image or video (<|image_pad|>, <|video_pad|>) take their grid
coordinates instead. The vision tower (a windowed ViT ending in a 2x2 patch merger) is
transformers' own module, built from the checkpoint's vision_config and loaded from its
`visual.*` tensors; its output rows replace the placeholder embeddings one for one.

Positions depend only on the prompt's ids and media grids, so `rope_positions` computes them for
the whole request up front: a chunked prefill, or a warm run that restores cached pages first,
slices the same table. Generated tokens continue at `index + delta` in all three rows, where delta
is (largest prompt position + 1) - prompt length, as transformers does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
    Qwen2_5_VLVisionRotaryEmbedding,
)

from runtime.config import ModelConfig
from runtime.models.llama import CausalLM, Media
from runtime.rope import inverse_frequencies
from strata.errors import BadRequest, ConfigError


@dataclass(slots=True)
class VisionInput:
    """One image or video in the prompt, already through the image processor (ingest.qwen_vision).

    `start`/`length` cover exactly its run of placeholder tokens (t*h*w / merge^2 of them);
    `patches` is the processor's pixel_values [t*h*w, channels * temporal_patch * patch * patch];
    `second_per_grid` (videos) is the time one temporal grid step covers, which spaces the time
    positions. Ingest's MediaSpan carries the same fields and is taken as it is.
    """

    start: int
    length: int
    patches: torch.Tensor
    grid_thw: tuple[int, int, int]
    media_hash: bytes
    kind: str = "image"  # "video" for a video; anything else is a still image
    second_per_grid: float = 1.0


class MRotary:
    """cos/sin for positions [3, n] (or [n] for text), each frequency reading its section's row."""

    def __init__(self, cfg: ModelConfig, section: Sequence[int]) -> None:
        self.inv_freq = inverse_frequencies(cfg)
        rows = [i % 3 for i, width in enumerate(section) for _ in range(int(width))]
        if len(rows) != self.inv_freq.numel():
            raise ConfigError(f"mrope_section {list(section)} sums to {len(rows)}; head_dim {cfg.head_dim} "
                              f"needs {self.inv_freq.numel()}")
        self.rows = torch.tensor(rows, dtype=torch.long, device="cpu")  # built under torch.device("meta")

    def __call__(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        if positions.dim() == 1:
            positions = positions.expand(3, -1)
        freqs = positions.to(torch.float32)[self.rows].T * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(dtype), emb.sin().to(dtype)


class Qwen2_5_VLForCausalLM(CausalLM):
    def __init__(self, cfg: ModelConfig) -> None:
        vision = cfg.raw.get("vision_config")
        if not isinstance(vision, dict):
            raise ConfigError("a qwen2_5_vl config needs a 'vision_config' object")
        for name in ("image_token_id", "video_token_id"):
            if name not in cfg.special_token_ids:
                raise ConfigError(f"a qwen2_5_vl config needs '{name}'")
        section = cfg.rope_params.get("mrope_section")
        if not section:
            raise ConfigError("a qwen2_5_vl config needs rope 'mrope_section'")
        super().__init__(cfg)
        self.rotary = MRotary(cfg, section)  # type: ignore[assignment]
        vcfg = Qwen2_5_VLVisionConfig(**vision)
        vcfg._attn_implementation = "sdpa"
        self.visual = Qwen2_5_VisionTransformerPretrainedModel(vcfg)
        # The loader builds on the meta device and fills parameters only; these frequencies are
        # a computed buffer, so they are made for real here.
        with torch.device("cpu"):
            self.visual.rotary_pos_emb = Qwen2_5_VLVisionRotaryEmbedding(vcfg)
        self.merge = int(vcfg.spatial_merge_size)
        self.tokens_per_second = vcfg.tokens_per_second
        self.patch_values = math.prod(self.visual.patch_embed.proj.weight.shape[1:])  # channels * t * p * p
        self.pad_ids = (cfg.special_token_ids["image_token_id"], cfg.special_token_ids["video_token_id"])
        self.vision_runs = 0  # images and videos encoded: a warm run over cached pages adds none

    # -- media ---------------------------------------------------------------------------------
    def embed(self, ids: torch.Tensor, media: Media | None = None) -> torch.Tensor:
        """Token embeddings with the vision tower's rows (media = (rows, vectors)) at placeholders."""
        x = self.model.embed_tokens(ids)
        if media is None:
            return x
        rows, vectors = media
        if not bool(torch.isin(ids[rows], torch.tensor(self.pad_ids)).all()):
            raise BadRequest("vision rows must sit at <|image_pad|> / <|video_pad|> positions")
        return x.index_copy(0, rows, vectors.to(x.dtype))

    @torch.inference_mode()
    def encode(self, item: VisionInput) -> torch.Tensor:
        """The vision tower's output for one image or video: [length, hidden]."""
        self.vision_runs += 1
        dtype = self.visual.patch_embed.proj.weight.dtype
        pixels = torch.as_tensor(item.patches).to(dtype)
        out = self.visual(pixels, grid_thw=torch.tensor([item.grid_thw], dtype=torch.long))
        return out.pooler_output  # type: ignore[no-any-return]

    def media_feed(self, ids: list[int], media: Sequence[Any], start: int) -> MediaFeed:
        """What each prefill chunk from `start` on receives; media wholly before `start` never runs."""
        items = [self._check(ids, m) for m in media]
        return MediaFeed(self, [m for m in items if m.start + m.length > start])

    def _check(self, ids: list[int], item: Any) -> VisionInput:
        grid = getattr(item, "grid_thw", None)
        if grid is None or len(grid) != 3:
            raise BadRequest(f"qwen2_5_vl media need a (t, h, w) grid_thw (VisionInput), got {type(item).__name__}")
        t, h, w = (int(v) for v in grid)
        if h % self.merge or w % self.merge or min(t, h, w) <= 0:
            raise BadRequest(f"media grid {item.grid_thw} is not a positive multiple of the merge size {self.merge}")
        if item.length != t * h * w // self.merge ** 2:
            raise BadRequest(f"media at {item.start} spans {item.length} tokens; its grid {item.grid_thw} "
                             f"needs {t * h * w // self.merge ** 2}")
        if tuple(item.patches.shape) != (t * h * w, self.patch_values):
            raise BadRequest(f"pixel values of shape {tuple(item.patches.shape)}; grid {item.grid_thw} "
                             f"needs {(t * h * w, self.patch_values)}")
        video = item.kind == "video"
        pad = self.pad_ids[video]
        if item.start < 0 or any(tok != pad for tok in ids[item.start:item.start + item.length]) \
                or item.start + item.length > len(ids):
            name = "<|video_pad|>" if video else "<|image_pad|>"
            raise BadRequest(f"media at {item.start} (length {item.length}) must cover a run of {name} tokens")
        return item

    # -- positions -----------------------------------------------------------------------------
    def rope_positions(self, ids: list[int], media: Sequence[Any], total: int) -> torch.Tensor:
        """M-RoPE positions [3, max(total, len(ids))]: the prompt's, then generated tokens'."""
        n = len(ids)
        out = torch.empty(3, max(total, n), dtype=torch.long)
        items = sorted((self._check(ids, m) for m in media), key=lambda m: m.start)
        placeholders = sum(1 for tok in ids if tok in self.pad_ids)
        if placeholders != sum(m.length for m in items):
            raise BadRequest(f"the prompt has {placeholders} image/video placeholder tokens but media for "
                             f"{sum(m.length for m in items)}")
        cur, i = 0, 0
        for item in items:
            if item.start < i:
                raise BadRequest(f"media spans overlap at position {item.start}")
            out[:, i:item.start] = torch.arange(cur, cur + item.start - i)
            cur += item.start - i
            out[:, item.start:item.start + item.length] = self._grid_positions(item, cur)
            cur += max(item.grid_thw[1], item.grid_thw[2]) // self.merge
            i = item.start + item.length
        out[:, i:n] = torch.arange(cur, cur + n - i)
        delta = int(out[:, :n].max()) + 1 - n
        out[:, n:] = torch.arange(n, out.shape[1]) + delta
        return out

    def _grid_positions(self, item: VisionInput, offset: int) -> torch.Tensor:
        """(time, row, column) of each merged patch, as transformers' get_vision_position_ids."""
        t, h, w = item.grid_thw[0], item.grid_thw[1] // self.merge, item.grid_thw[2] // self.merge
        step = (self.tokens_per_second * torch.tensor(item.second_per_grid, dtype=torch.float32)
                if item.kind == "video" else 1)
        grid = torch.meshgrid((torch.arange(t) * step).long(), torch.arange(h) + offset,
                              torch.arange(w) + offset, indexing="ij")
        positions = torch.stack(grid).reshape(3, -1)
        positions[0] += offset
        return positions


class MediaFeed:
    """Vision rows per prefill chunk: each item is encoded once, at its first chunk, and dropped
    after its last, so memory holds the media of one chunk rather than of the whole prompt."""

    def __init__(self, model: Qwen2_5_VLForCausalLM, items: list[VisionInput]) -> None:
        self.model = model
        self.items = sorted(items, key=lambda m: m.start)
        self.encoded: dict[int, torch.Tensor] = {}

    def __call__(self, lo: int, hi: int) -> Media | None:
        rows, vectors = [], []
        for index, item in enumerate(self.items):
            a, b = max(item.start, lo), min(item.start + item.length, hi)
            if a >= b:
                continue
            if index not in self.encoded:
                self.encoded[index] = self.model.encode(item)
            rows.append(torch.arange(a - lo, b - lo))
            vectors.append(self.encoded[index][a - item.start:b - item.start])
            if item.start + item.length <= hi:
                del self.encoded[index]
        if not rows:
            return None
        return torch.cat(rows), torch.cat(vectors)
