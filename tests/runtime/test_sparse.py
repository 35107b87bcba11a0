"""Sparse attention over pages: the Quest bound, selection, exactness, offloaded pages, warm starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from runtime import Engine, SamplingParams
from runtime.kv import _attention
from runtime.sparse import PageSummaries, SparsePolicy, attend_selection, key_bounds, select_pages
from strata.settings import get_settings
from tests.runtime.model1_tiny import write_tiny_model1

PAGE, CHUNK, BUDGET = 16, 64, 64
PAGE_BYTES = 3 * 2 * PAGE * 2 * 16 * 4  # tiny model: 3 layers, K and V, 2 KV heads x 16, fp32


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_tiny_model1(tmp_path_factory.mktemp("m1"))


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path / "home"
    get_settings.cache_clear()


def prompt(n: int = 700) -> list[int]:
    return [1] + [(i * 7919) % 3000 + 16 for i in range(n - 1)]


def engine(model, budget: int = BUDGET, cache: bool = False) -> Engine:
    return Engine.from_pretrained(model, weights="fp32", page_size=PAGE, prefill_chunk=CHUNK, cache=cache,
                                  attention_budget=budget)


def test_quest_bound_holds_for_every_key() -> None:
    gen = torch.Generator().manual_seed(0)
    keys = torch.randn(40, PAGE, 2, 16, generator=gen) * torch.rand(40, 1, 2, 16, generator=gen) * 4
    keys[5] = keys[5, :1]  # a page of one repeated key: there the bound must be tight
    summaries = PageSummaries(1, 2, 16, dtype=torch.float32)
    summaries.set_layer(0, 0, key_bounds(keys))
    resident = PageSummaries(1, 2, 16)  # bfloat16, as sequences keep them
    resident.set_layer(0, 0, key_bounds(keys))
    box = resident.data[0].float()  # [H, n, 2D]
    for _ in range(20):
        q = torch.randn(2, 3, 16, generator=gen) * 3
        bound = summaries.scores(0, 40, q)  # [Hkv, G, pages]
        exact = torch.einsum("hgd,nphd->hgnp", q, keys).amax(dim=-1)
        assert bool((bound >= exact).all())
        torch.testing.assert_close(bound[..., 5], exact[..., 5], atol=1e-4, rtol=1e-5)
        # The bfloat16 box still holds every key: its bound, in float32, is never below a key's score.
        widened = torch.matmul(torch.cat((q, q.abs()), dim=-1), box.transpose(1, 2))
        assert bool((widened >= exact).all())
        # Its scores (q and the product in bfloat16) stay close to that bound: 1%, and 0.1 absolute
        # where 32 terms of up to ~30 cancel to a small sum.
        torch.testing.assert_close(resident.scores(0, 40, q), widened, rtol=1e-2, atol=0.1)


def test_selection_keeps_sink_and_window_within_budget() -> None:
    policy = SparsePolicy(budget=5 * PAGE, page_size=PAGE, sink_pages=1, local_pages=3)
    gen = torch.Generator().manual_seed(1)
    for n in (10, 50, 300):
        sel = select_pages(torch.randn(2, 4, n, generator=gen), policy)
        chosen = [set(sel.pages[sel.member[h]].tolist()) for h in range(2)]
        for pages in chosen:
            assert 0 in pages and set(range(n - 3, n)) <= pages
            assert len(pages) == min(n, policy.max_pages)
        assert sel.pages.tolist() == sorted(set().union(*chosen))


def test_selection_follows_the_bound() -> None:
    policy = SparsePolicy(budget=2 * PAGE, page_size=PAGE, sink_pages=1, local_pages=1)
    bounds = torch.zeros(1, 2, 20)
    bounds[0, 0, 7] = 5.0  # one head of the group wants page 7,
    bounds[0, 1, 12] = 50.0  # the other page 12 (its scale differs: each is taken relative to its best)
    bounds[0, 1, 3] = 49.0
    sel = select_pages(bounds, policy)
    assert set(sel.pages.tolist()) == {0, 7, 12, 19}


def test_attention_over_every_page_is_exact() -> None:
    gen = torch.Generator().manual_seed(2)
    pages, own, m = 6, 11, 5
    k = torch.randn(pages * PAGE + own, 2, 16, generator=gen)
    v = torch.randn(pages * PAGE + own, 2, 16, generator=gen)
    q = torch.randn(m, 8, 16, generator=gen)
    split = pages * PAGE
    out, _ = attend_selection(q, k[:split], v[:split], torch.ones(2, pages, dtype=torch.bool),
                              k[split:], v[split:], 0.25, PAGE)
    ref = _attention(q, k, v, k.shape[0] - m, 0.25, None)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_budget_covering_the_context_is_the_dense_path(model) -> None:
    ids, params = prompt(300), SamplingParams(max_new_tokens=8)
    dense = engine(model, budget=0).run(ids, params)
    covered = engine(model, budget=4096).run(ids, params)
    assert covered.token_ids == dense.token_ids
    assert covered.extra["fetched_pages"] == 0


def test_pages_served_from_lmdb_give_the_same_tokens(model, home, monkeypatch) -> None:
    ids, params = prompt(), SamplingParams(max_new_tokens=10, ignore_eos=True)
    resident = engine(model).run(ids, params)
    monkeypatch.setenv("STRATA_KV_DEVICE_BYTES", str(40 * PAGE_BYTES))  # 40 of the context's 44 pages
    monkeypatch.setenv("STRATA_KV_HOST_BYTES", "0")  # every page let go comes back from LMDB
    get_settings.cache_clear()
    small = engine(model, cache=True)
    assert small.cache is not None
    assert small.pool.max_pages == 20  # half the device tier holds whole pages,
    assert small.cache.layers.capacity == 20 * 3  # the other half single layers fetched for attention
    offloaded = small.run(ids, params)
    assert offloaded.token_ids == resident.token_ids
    assert offloaded.extra["fetched_pages"] >= offloaded.extra["loaded_layers"] > 0
    assert offloaded.extra["kv_peak_bytes"]["device"] <= 40 * PAGE_BYTES
    assert small.store.stats()["lmdb"]["hits"] > 0  # evicted pages really came back from disk
    small.close()


def test_warm_start_loads_summaries_and_selected_pages_only(model, home, monkeypatch) -> None:
    monkeypatch.setenv("STRATA_KV_HOST_BYTES", "0")
    get_settings.cache_clear()
    ids, params = prompt(900), SamplingParams(max_new_tokens=6, ignore_eos=True)
    first = engine(model, cache=True)
    cold = first.run(ids, params)
    first.close()
    fresh = engine(model, cache=True)  # an empty pool: only LMDB holds the pages
    one = fresh.run(ids, SamplingParams(max_new_tokens=1))
    pages = (len(ids) - 1) // PAGE
    assert one.cached_tokens == pages * PAGE
    policy = fresh.policy
    assert policy is not None
    # The sink and the window, then each layer's and head's top pages for the last prompt page.
    most = policy.sink_pages + policy.local_pages + 3 * 2 * (BUDGET // PAGE)
    assert 0 < fresh.store.stats()["lmdb"]["hits"] <= most < pages
    fresh.close()
    again = engine(model, cache=True)
    warm = again.run(ids, params)
    assert warm.cached_tokens == pages * PAGE and warm.token_ids == cold.token_ids
    again.close()


def test_a_corrupt_layer_is_never_served_and_the_retry_recomputes(model, home, monkeypatch) -> None:
    import lmdb

    from kvstore import record
    from strata.errors import StoreError

    monkeypatch.setenv("STRATA_KV_HOST_BYTES", "0")
    get_settings.cache_clear()
    ids, params = prompt(900), SamplingParams(max_new_tokens=4, ignore_eos=True)
    first = engine(model, cache=True)
    cold = first.run(ids, params)
    assert first.cache is not None
    keys = first.cache.keys_for(ids, [], "").keys
    first.close()
    env = lmdb.open(str(home / "lmdb"), max_dbs=8)
    pages = env.open_db(b"pages")
    with env.begin(write=True) as txn:  # one byte of layer 1 in every page between the sink and the window
        for key in keys[1:len(keys) - 8]:
            raw = bytearray(txn.get(key, db=pages))
            header = record.read_header(raw)
            raw[header.payload_offset + header.section_bytes + 5] ^= 0x40
            txn.put(key, bytes(raw), db=pages)
    env.close()
    fresh = engine(model, cache=True)
    with pytest.raises(StoreError, match="gone from every tier"):
        fresh.run(ids, params)
    assert fresh.store.stats()["lmdb"]["corrupt"] > 0  # found by its own check, dropped, not served
    fresh.close()
    retry = engine(model, cache=True)  # the cached run now ends at the first dropped page
    again = retry.run(ids, params)
    assert again.cached_tokens < len(ids) - PAGE and again.token_ids == cold.token_ids
    retry.close()


def test_sparse_without_a_persistent_tier_holds_every_page(model, home, monkeypatch) -> None:
    monkeypatch.setenv("STRATA_KV_DISK_BYTES", "0")
    get_settings.cache_clear()
    eng = engine(model, cache=True)
    out = eng.run(prompt(), SamplingParams(max_new_tokens=4, ignore_eos=True))
    assert out.extra["fetched_pages"] == 0
    eng.close()


def test_cli_reports_the_sparse_run(model, home) -> None:
    text = "a long question about everything in the material " * 40
    (home.parent / "prompt.txt").write_text(text)
    env = {**os.environ, "STRATA_HOME": str(home), "STRATA_PAGE_SIZE": str(PAGE), "STRATA_KV_HOST_BYTES": "0",
           "STRATA_PREFILL_CHUNK": str(CHUNK)}
    cmd = [sys.executable, "-m", "strata", "generate", "--model", str(model), "--prompt-file",
           str(home.parent / "prompt.txt"), "--max-new-tokens", "4", "--weights", "fp32", "--json",
           "--attention-budget", str(BUDGET)]
    runs = []
    for _ in range(2):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        runs.append(json.loads(done.stdout))
    cold, warm = runs
    assert cold["attention_budget"] == BUDGET and cold["cached_tokens"] == 0
    assert warm["cached_tokens"] > 0 and warm["token_ids"] == cold["token_ids"]
    assert {"device", "host", "summaries"} <= set(warm["kv_peak_bytes"])
    assert warm["ttft_s"] > 0 and warm["decode_tokens_per_s"] > 0


def test_attention_mass_recall_beats_the_selected_share(model) -> None:
    """On a tiny model made to attend sharply (q and k scaled), the selection finds mass by its bound."""
    from runtime.sparse_quality import compare

    eng = engine(model, budget=0)
    with torch.no_grad():
        for layer in eng.model.model.layers:
            layer.self_attn.q_proj.weight.mul_(3.0)
            layer.self_attn.k_proj.weight.mul_(3.0)
    ids = prompt(800)
    q = compare(eng, ids, steps=3, budget=BUDGET)
    share = q.selected_tokens / len(ids)
    assert 0.0 < q.recall_p10 <= q.recall_mean <= q.oracle_mean + 1e-5 <= 1.0 + 1e-5
    assert q.recall_mean > 1.3 * share  # better than attending a random set of as many pages
    assert 0.0 <= q.agreement <= 1.0
