"""build_prompt: sources -> one budgeted, deterministic, source-mapped Prompt."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ingest.cache import ExtractCache
from ingest.collect import Collector
from ingest.items import Item
from ingest.options import IngestOptions
from ingest.pack import plan
from ingest.prompt import DROPPED, LedgerItem, Prompt
from ingest.target import MAX_DEFAULT_BUDGET, Target
from ingest.textfile import estimate_full
from strata.errors import BadRequest, IngestError, StrataError
from strata.settings import get_settings


def default_budget(target: Target) -> int:
    """The model's context, up to 1,000,000 tokens."""
    return min(target.max_context, MAX_DEFAULT_BUDGET)


def cache_dir(options: IngestOptions) -> Path | None:
    """Where extractions are cached (the only place build_prompt writes), or None."""
    if not options.use_cache:
        return None
    return options.cache_dir or get_settings().home / "extracts"


def build_prompt(
    sources: Sequence[str | Path],
    target: Target,
    budget: int | None = None,
    options: IngestOptions | None = None,
    progress: bool = False,
) -> Prompt:
    """Ingest every source and pack it into at most `budget` tokens (BOS included).

    The material is ordered stable-first, each item at the best level the budget allows; the
    ledger says what happened to every input. The caller appends its question afterwards.
    """
    options = options or IngestOptions()
    budget = default_budget(target) if budget is None else budget
    if budget <= 0:
        raise BadRequest("budget must be positive")
    if not sources:
        raise IngestError("nothing to ingest: no source given")
    cache = ExtractCache(cache_dir(options), options.cache_max_bytes)
    collector = Collector(target, options, cache, progress)
    try:
        items = collector.collect([Path(s) for s in sources])
        if not items and all(e.status == "error" and e.kind == "source" for e in collector.ledger):
            why = "; ".join(f"{e.path}: {e.reason}" for e in collector.ledger)
            raise IngestError(f"nothing to ingest: {why}")
        prompt = Prompt(budget=budget, warnings=collector.warnings, stats=collector.stats)
        if target.bos_token_id is not None:
            prompt.token_ids.append(target.bos_token_id)
        choice = _plan(items, budget - len(prompt.token_ids), collector)  # may parse outlines
    finally:
        cache.flush()
    chunks: list = [prompt.token_ids]
    offset = len(prompt.token_ids)
    for item, level in zip(items, choice, strict=True):
        offset = _append(prompt, chunks, offset, item, level)
    # One join at the end: a million tokens as numpy chunks, not a million list appends.
    prompt.token_ids = np.concatenate([np.asarray(c, dtype=np.int64) for c in chunks]).tolist()
    prompt.ledger.extend(collector.ledger)
    if cache.disabled_reason:
        prompt.warnings.append(cache.disabled_reason)
    if len(prompt.token_ids) > budget:  # the packer's promise; a breach is a bug, never shipped
        raise StrataError(f"packed {len(prompt.token_ids)} tokens into a budget of {budget}")
    return prompt


# Material whose estimated size is within this factor of the budget is tokenized whole up front
# (exact packing); beyond it, sizes are estimated and only what the plan keeps is tokenized.
EXACT_FACTOR = 2
MAX_ROUNDS = 16


def _plan(items: list[Item], avail: int, collector: Collector) -> list[int | None]:
    """Plan with exact costs; for material far over the budget, tokenize only what is kept.

    Large mode starts every file's full level from a size estimate, whatever the cache holds,
    so a cold and a warm ingest plan alike. Each round tokenizes the files whose full text the
    plan keeps and plans again; the final plan's kept levels all have exact costs.
    """
    files = [it for it in items if it.text is not None]
    estimates = [estimate_full(it.text, collector.target) for it in files]
    if sum(estimates) <= EXACT_FACTOR * avail:
        collector.tokenize([it.text for it in files])
        return plan(items, avail)
    for it, estimate in zip(files, estimates, strict=True):
        it.levels[0].known_tokens, it.levels[0].estimated = estimate, True
    collector.warnings.append(
        f"material is about {sum(estimates):,} tokens for a budget of {avail:,}: only kept files were tokenized"
    )
    for _ in range(MAX_ROUNDS):
        choice = plan(items, avail)
        need = [it for it, c in zip(items, choice, strict=True) if c == 0 and it.levels[0].estimated]
        if not need:
            return choice
        collector.tokenize([it.text for it in need])
        for it in need:
            it.levels[0].piece()  # renders, and the estimate becomes the exact cost
    for it in files:  # out of rounds: full text not yet measured is not offered
        if it.levels[0].estimated:
            it.levels.pop(0)
    return plan(items, avail)


def _append(prompt: Prompt, chunks: list, offset: int, item: Item, level_index: int | None) -> int:
    """Place one item's chosen level at `offset`; returns the offset after it."""
    if level_index is None:
        prompt.ledger.append(LedgerItem(item.path, item.kind, DROPPED, 0, "budget exhausted: not even its path fits"))
        return offset
    level = item.levels[level_index]
    piece = level.piece()
    chunks.extend(piece.chunks)
    for span in piece.spans:
        span.start += offset
        span.end += offset
    prompt.source_map.extend(piece.spans)
    for media in piece.media:
        media.start += offset
    prompt.media.extend(piece.media)
    prompt.ledger.append(LedgerItem(item.path, item.kind, level.status, piece.length, level.reason))
    return offset + piece.length
