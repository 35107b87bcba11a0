"""The prefix cache: reuse across processes and tiers, isolation by model/layout/tenant, corruption."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass

import lmdb
import pytest
import torch

from runtime import Engine, SamplingParams
from strata.settings import get_settings
from tests.runtime.model1_tiny import patch_tokens, random_patches, write_tiny_model1

PAGE = 16


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_model1(tmp_path_factory.mktemp("m1"))


def prompt(n: int = 150) -> list[int]:
    return list(range(30, 30 + n))


def generate_in_fresh_process(model, home, *extra: str) -> dict:
    env = {**os.environ, "STRATA_HOME": str(home), "STRATA_PAGE_SIZE": str(PAGE)}
    cmd = [sys.executable, "-m", "strata", "generate", "--model", str(model), "--prompt-file",
           str(home.parent / "prompt.txt"), "--max-new-tokens", "12", "--weights", "fp32", "--json", *extra]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_reuse_from_a_fresh_process(model, home) -> None:
    text = "the second question about a repository should be nearly free " * 12
    (home.parent / "prompt.txt").write_text(text)
    cold = generate_in_fresh_process(model, home)
    warm = generate_in_fresh_process(model, home)
    full_pages = (cold["prompt_tokens"] - 1) // PAGE
    assert cold["cached_tokens"] == 0
    assert warm["cached_tokens"] == full_pages * PAGE > 0
    assert warm["token_ids"] == cold["token_ids"]
    off = generate_in_fresh_process(model, home, "--no-cache")
    assert off["cached_tokens"] == 0 and off["token_ids"] == cold["token_ids"]


def test_same_process_uses_the_pool_then_the_host_tier(model, home) -> None:
    engine = Engine.from_pretrained(model, weights="fp32", page_size=PAGE)
    ids = prompt()
    cold = engine.run(ids, SamplingParams(max_new_tokens=8))
    warm = engine.run(ids, SamplingParams(max_new_tokens=8))
    assert warm.cached_tokens == (len(ids) - 1) // PAGE * PAGE and warm.token_ids == cold.token_ids
    engine.pool.keyed.clear()  # forget the device tier: the host tier must serve
    engine.pool.key_of.clear()
    host = engine.run(ids, SamplingParams(max_new_tokens=8))
    assert host.cached_tokens == warm.cached_tokens and host.token_ids == cold.token_ids
    longer = engine.run(ids + [99] * 40, SamplingParams(max_new_tokens=8))
    assert longer.cached_tokens >= warm.cached_tokens
    engine.close()


@pytest.mark.parametrize("change", ["kv_dtype", "page_size", "model", "tenant"])
def test_never_receives_another_configurations_pages(model, home, tmp_path, change) -> None:
    ids = prompt()
    first = Engine.from_pretrained(model, weights="fp32", page_size=PAGE, kv_dtype="fp32")
    first.run(ids, SamplingParams(max_new_tokens=2), tenant="alice")
    first.close()
    kwargs = dict(weights="fp32", page_size=PAGE, kv_dtype="fp32")
    tenant, path = "alice", model
    if change == "kv_dtype":
        kwargs["kv_dtype"] = "bf16"
    elif change == "page_size":
        kwargs["page_size"] = PAGE * 2
    elif change == "model":
        path = write_tiny_model1(tmp_path / "other", seed=1)
    else:
        tenant = "bob"
    second = Engine.from_pretrained(path, **kwargs)
    assert second.run(ids, SamplingParams(max_new_tokens=2), tenant=tenant).cached_tokens == 0
    same = Engine.from_pretrained(model, weights="fp32", page_size=PAGE, kv_dtype="fp32")
    assert same.run(ids, SamplingParams(max_new_tokens=2), tenant="alice").cached_tokens > 0


def test_corrupt_entry_is_never_served(model, home) -> None:
    ids = prompt()
    engine = Engine.from_pretrained(model, weights="fp32", page_size=PAGE)
    cold = engine.run(ids, SamplingParams(max_new_tokens=8))
    engine.close()
    env = lmdb.open(str(home / "lmdb"), max_dbs=8, readonly=False, lock=True)
    pages = env.open_db(b"pages", create=False)
    with env.begin(write=True, db=pages) as txn:
        key, raw = sorted(txn.cursor(), key=lambda kv: kv[0])[0]
        broken = bytearray(raw)
        broken[len(broken) // 2] ^= 0xFF
        txn.put(key, bytes(broken))
    env.close()
    fresh = Engine.from_pretrained(model, weights="fp32", page_size=PAGE)
    warm = fresh.run(ids, SamplingParams(max_new_tokens=8))
    assert warm.token_ids == cold.token_ids
    assert warm.cached_tokens < (len(ids) - 1) // PAGE * PAGE  # the broken page and those after it recomputed
    fresh.close()


@dataclass
class Span:
    start: int
    length: int
    patches: torch.Tensor
    media_hash: bytes


def test_media_hash_enters_the_keys(model, home) -> None:
    engine = Engine.from_pretrained(model, weights="fp32", page_size=PAGE)
    cfg = engine.config
    text = list(range(40, 80))
    image = patch_tokens(cfg, 4, 4)
    ids = text + image + list(range(80, 140))
    dim = cfg.patch_size ** 2 * cfg.num_channels
    a = Span(len(text), len(image), random_patches(16, dim, 1), b"a" * 16)
    b = Span(len(text), len(image), random_patches(16, dim, 2), b"b" * 16)
    first = engine.run(ids, SamplingParams(max_new_tokens=4), [a])
    again = engine.run(ids, SamplingParams(max_new_tokens=4), [a])
    other = engine.run(ids, SamplingParams(max_new_tokens=4), [b])
    assert again.cached_tokens > len(text) + len(image) and again.token_ids == first.token_ids
    assert other.cached_tokens == len(text) // PAGE * PAGE  # only pages before the image are shared
    engine.close()


def test_small_pool_evicts_and_stays_correct(model, home) -> None:
    engine = Engine.from_pretrained(model, weights="fp32", page_size=PAGE, cache=True)
    reference = engine.run(prompt(300), SamplingParams(max_new_tokens=6)).token_ids
    engine.pool.max_pages = engine.pool.capacity  # no more growth: new pages must evict cached ones
    for offset in range(5):
        engine.run(list(range(200 + offset, 500 + offset)), SamplingParams(max_new_tokens=2))
    assert engine.run(prompt(300), SamplingParams(max_new_tokens=6)).token_ids == reference
    engine.close()
