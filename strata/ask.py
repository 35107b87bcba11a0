"""Asking a question about ingested material: the one function the CLI, the API and the jobs call.

The material comes first and the question last, so every question about the same material shares
its prefix (and its cached KV pages). Citations come from what the answer attended to: the
attention mass of the last layer during decoding, summed per source span.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ingest.prompt import Prompt, SourceSpan
from runtime import Engine, Generation, SamplingParams
from strata.errors import BadRequest

QUESTION_TEMPLATE = "\n\nQuestion: {question}\nAnswer:"
MAX_QUESTION_CHARS = 32_000
UNCITED_KINDS = ("tree", "note")


@dataclass(slots=True)
class Citation:
    label: str
    path: str
    kind: str
    start: int
    end: int
    score: float
    line_start: int | None = None
    line_end: int | None = None
    page: int | None = None
    time_s: float | None = None


@dataclass(slots=True)
class AskResult:
    answer: str
    citations: list[Citation]
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    ttft_s: float
    decode_tokens_per_s: float
    total_s: float
    finish_reason: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "citations": [asdict(c) for c in self.citations],
            "usage": {"prompt_tokens": self.prompt_tokens, "cached_tokens": self.cached_tokens,
                      "completion_tokens": self.completion_tokens,
                      "total_tokens": self.prompt_tokens + self.completion_tokens},
            "timings": {"ttft_s": self.ttft_s, "decode_tokens_per_s": self.decode_tokens_per_s,
                        "total_s": self.total_s},
            "finish_reason": self.finish_reason,
            **self.extra,
        }


def question_ids(engine: Engine, prompt: Prompt, question: str) -> list[int]:
    """The full prompt: the material's tokens, then the framed question."""
    if not question.strip():
        raise BadRequest("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise BadRequest(f"the question is longer than {MAX_QUESTION_CHARS} characters")
    return [*prompt.token_ids, *engine.encode(QUESTION_TEMPLATE.format(question=question), add_bos=False)]


class AskStream:
    """Text deltas as they are produced; `result` once the iteration ends."""

    def __init__(self, prompt: Prompt, generation: Generation, max_citations: int) -> None:
        self.prompt, self.generation, self.max_citations = prompt, generation, max_citations
        self.result: AskResult | None = None

    def __iter__(self) -> Iterator[str]:
        for event in self.generation:
            if event.text:
                yield event.text
        done = self.generation.result
        assert done is not None
        cites = cite(self.prompt, done.attention, self.max_citations)
        self.result = AskResult(done.text, cites, done.prompt_tokens, done.cached_tokens,
                                done.completion_tokens, done.ttft_s, done.decode_tokens_per_s, done.total_s,
                                done.finish_reason, dict(done.extra))


def ask_stream(engine: Engine, prompt: Prompt, question: str, params: SamplingParams,
               max_citations: int = 5, tenant: str = "") -> AskStream:
    """Start answering `question` about `prompt`; iterate for text. One at a time per engine."""
    ids = question_ids(engine, prompt, question)
    generation = engine.stream(ids, params, prompt.media, attribution=max_citations > 0, tenant=tenant)
    return AskStream(prompt, generation, max_citations)


def ask(engine: Engine, prompt: Prompt, question: str, params: SamplingParams,
        max_citations: int = 5, tenant: str = "") -> AskResult:
    """Answer `question` about `prompt`, with citations and usage."""
    stream = ask_stream(engine, prompt, question, params, max_citations, tenant)
    for _ in stream:
        pass
    assert stream.result is not None
    return stream.result


def cite(prompt: Prompt, mass: torch.Tensor | None, limit: int) -> list[Citation]:
    """The `limit` source spans that drew the most attention, best first."""
    if mass is None or limit <= 0 or not prompt.source_map:
        return []
    spans = [s for s in prompt.source_map if s.kind not in UNCITED_KINDS and s.end <= mass.shape[0]]
    if not spans:
        return []
    totals = torch.cumsum(torch.cat((torch.zeros(1), mass.float())), 0)
    scored = sorted(((float(totals[s.end] - totals[s.start]), i) for i, s in enumerate(spans)),
                    key=lambda t: (-t[0], t[1]))
    whole = float(totals[-1]) or 1.0
    return [_citation(spans[i], score / whole) for score, i in scored[:limit] if score > 0]


def _citation(span: SourceSpan, score: float) -> Citation:
    return Citation(label=span.label(), path=span.path, kind=span.kind, start=span.start, end=span.end,
                    score=round(score, 4), line_start=span.line_start, line_end=span.line_end,
                    page=span.page, time_s=span.time_s)
