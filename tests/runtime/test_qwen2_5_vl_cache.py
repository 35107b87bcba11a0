"""Qwen2.5-VL with the prefix cache, its tiers and sparse attention: media hashes in the page keys,
warm runs that skip the vision tower, and answers equal to cold runs."""

from __future__ import annotations

import pytest

from runtime import Engine, SamplingParams
from strata.settings import get_settings
from tests.runtime.qwen2_5_vl_tiny import (
    MixedPrompt,
    build_tokenizer,
    mixed_prompt,
    random_pixels,
    write_tiny_qwen2_5_vl,
)

PAGE, CHUNK = 8, 16
PARAMS = SamplingParams(max_new_tokens=12, ignore_eos=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen2_5_vl")
    write_tiny_qwen2_5_vl(path)
    return path


def engine(model, cache: bool = True, budget: int = 0) -> Engine:
    return Engine.from_pretrained(model, weights="fp32", kv_dtype="fp32", page_size=PAGE, prefill_chunk=CHUNK,
                                  cache=cache, attention_budget=budget)


def prompt(image_seed: int = 1, video_seed: int = 2, preamble: str = "") -> MixedPrompt:
    return mixed_prompt(build_tokenizer(), random_pixels(30, 45, seed=image_seed),
                        random_pixels(20, 20, seed=video_seed, frames=4), preamble=preamble)


def only_persistent_tier(monkeypatch, **env: str) -> None:
    """No host tier: a fresh engine's pages can only come from the persistent tier left on."""
    monkeypatch.setenv("STRATA_KV_HOST_BYTES", "0")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


def cold_then_warm(model, p: MixedPrompt, budget: int = 0) -> tuple:
    first = engine(model, budget=budget)
    cold = first.run(p.ids, PARAMS, p.media)
    first.close()
    fresh = engine(model, budget=budget)  # an empty pool: cached pages come from a persistent tier
    warm = fresh.run(p.ids, PARAMS, p.media)
    return cold, warm, fresh


def test_warm_run_from_lmdb_skips_the_vision_tower(model, home, monkeypatch) -> None:
    only_persistent_tier(monkeypatch)
    p = prompt()
    cold, warm, fresh = cold_then_warm(model, p)
    video = p.media[1]
    assert cold.cached_tokens == 0
    assert warm.cached_tokens == (len(p.ids) - 1) // PAGE * PAGE > video.start + video.length
    assert warm.token_ids == cold.token_ids
    assert fresh.model.vision_runs == 0  # both media lie in restored pages
    assert fresh.store.stats()["lmdb"]["hits"] > 0
    fresh.close()


def test_warm_run_from_redis(model, home, monkeypatch, redis_url) -> None:
    only_persistent_tier(monkeypatch, STRATA_KV_DISK_BYTES="0", STRATA_KV_REDIS_URL=redis_url)
    p = prompt(image_seed=11)
    cold, warm, fresh = cold_then_warm(model, p)
    assert warm.cached_tokens == (len(p.ids) - 1) // PAGE * PAGE and warm.token_ids == cold.token_ids
    assert fresh.store.stats()["redis"]["hits"] > 0
    fresh.close()


@pytest.mark.parametrize("changed", ["image", "video"])
def test_other_media_with_the_same_ids_miss_the_cache(model, home, changed) -> None:
    p = prompt()
    other = prompt(image_seed=5) if changed == "image" else prompt(video_seed=6)
    assert other.ids == p.ids
    eng = engine(model)
    eng.run(p.ids, PARAMS, p.media)
    runs = eng.model.vision_runs
    got = eng.run(other.ids, PARAMS, other.media)
    first_changed = other.media[0 if changed == "image" else 1].start
    assert got.cached_tokens == first_changed // PAGE * PAGE  # only pages before the changed media
    assert eng.model.vision_runs - runs == (2 if changed == "image" else 1)
    assert got.token_ids == engine(model, cache=False).run(other.ids, PARAMS, other.media).token_ids
    eng.close()


def test_sparse_warm_equals_cold(model, home, monkeypatch) -> None:
    only_persistent_tier(monkeypatch)
    p = prompt(preamble="The report below describes the two figures in detail. " * 8)
    budget = 4 * PAGE
    cold, warm, fresh = cold_then_warm(model, p, budget=budget)
    assert fresh.policy is not None and fresh.policy.is_sparse(len(p.ids) // PAGE)  # the budget is below the context
    assert warm.cached_tokens > p.media[1].start and warm.token_ids == cold.token_ids
    assert warm.extra["attention_budget"] == budget and warm.extra["fetched_pages"] > 0
    fresh.close()
