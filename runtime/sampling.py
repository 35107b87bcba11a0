"""Turning logits into tokens: greedy, temperature, top-k, top-p, seeded; and streaming detokenisation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from strata.errors import BadRequest


@dataclass(slots=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise BadRequest("max_new_tokens must not be negative")
        if self.temperature < 0:
            raise BadRequest("temperature must not be negative")
        if not 0 < self.top_p <= 1:
            raise BadRequest("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise BadRequest("top_k must not be negative")


class Sampler:
    """Picks the next token from float32 logits [vocab]; greedy at temperature 0."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.generator = torch.Generator()
        self.generator.manual_seed(params.seed if params.seed is not None else torch.seed())

    def __call__(self, logits: torch.Tensor) -> int:
        p = self.params
        if p.temperature == 0:
            return int(torch.argmax(logits))
        logits = logits / p.temperature
        if p.top_k:
            kth = torch.topk(logits, min(p.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if p.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, 0) - sorted_probs < p.top_p
            sorted_probs = sorted_probs * keep
            probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator))


class StreamDecoder:
    """Incremental detokenisation: yields text only once its bytes form whole characters."""

    def __init__(self, tokenizer: object | None) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0

    @property
    def text(self) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)  # type: ignore[attr-defined]

    def feed(self, token: int) -> str:
        self.ids.append(token)
        text = self.text
        if text.endswith("\ufffd"):
            return ""  # a multi-byte character split across tokens: wait for the rest
        delta, self.emitted = text[self.emitted:], len(text)
        return delta
