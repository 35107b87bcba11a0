"""TieredStore: host RAM over real LMDB over a real Redis; promotion, budgets, failures."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from kvstore.lmdb_store import LMDBStore
from kvstore.redis_store import RedisStore
from kvstore.store import PageStore
from kvstore.tiers import TieredStore, open_store
from strata.settings import Settings
from tests.conftest import free_port, wait_for_port
from tests.kvstore.workers import page

MiB = 1 << 20


def test_every_store_implements_the_protocol(tmp_path: Path, redis_url: str) -> None:
    lmdb = LMDBStore(tmp_path, 8 * MiB)
    redis = RedisStore(redis_url, namespace=f"test:{uuid.uuid4().hex[:8]}")
    tiered = TieredStore(1 * MiB, lmdb, redis)
    assert all(isinstance(s, PageStore) for s in (lmdb, redis, tiered))
    tiered.clear()
    tiered.close()


def test_put_reaches_every_tier_and_get_promotes(tmp_path: Path, redis_url: str) -> None:
    ns = f"test:{uuid.uuid4().hex[:8]}"
    tiered = TieredStore(1 * MiB, LMDBStore(tmp_path, 8 * MiB), RedisStore(redis_url, namespace=ns))
    items = [page(i) for i in range(6)]
    for p in items:
        assert tiered.put(*p)
    assert tiered.flush(timeout=10)
    assert tiered.lmdb.stats()["entries"] == 6 and tiered.redis.stats()["entries"] == 6
    key, digest, payload, summary = items[0]
    assert tiered.get(key, digest) == payload and tiered.host.hits == 1

    tiered.host.clear()  # host miss -> LMDB hit -> back in host
    assert tiered.get(key, digest) == payload
    assert tiered.host.contains(key) and tiered.host.get_summary(key) == summary

    tiered.host.clear()
    tiered.lmdb.clear()  # only Redis has it now: hit, then written back to host and LMDB
    assert tiered.get_many([p[0] for p in items], [p[1] for p in items]) == [p[2] for p in items]
    assert tiered.flush(timeout=10)
    assert tiered.lmdb.get(key, digest) == payload and tiered.lmdb.get_summary(key) == summary
    stats = tiered.stats()
    assert stats["redis"]["hits"] == 6 and stats["lmdb"]["misses"] >= 6
    tiered.clear()
    tiered.close()


def test_summary_comes_from_the_fastest_tier(tmp_path: Path) -> None:
    tiered = TieredStore(1 * MiB, LMDBStore(tmp_path, 8 * MiB))
    key, digest, payload, summary = page(1)
    tiered.put(key, digest, payload, summary)
    tiered.flush(timeout=10)
    tiered.host.clear()
    assert tiered.get_summary(key) == summary
    assert tiered.host.get_summary(key) == summary and not tiered.host.contains(key)
    assert tiered.get(key, digest) == payload  # summary-only entry completed by the page
    assert tiered.host.contains(key)
    tiered.close()


def test_host_budget_is_respected(tmp_path: Path) -> None:
    tiered = TieredStore(100_000, LMDBStore(tmp_path, 8 * MiB))
    items = [page(i) for i in range(20)]  # ~17-23 KiB each
    for p in items:
        tiered.put(*p)
    assert tiered.flush(timeout=10)
    host = tiered.stats()["host"]
    assert host["bytes"] <= 100_000 and host["evicted"] > 0 and host["entries"] < 20
    assert all(tiered.get(p[0], p[1]) == p[2] for p in items)  # the rest come from LMDB
    tiered.close()


def test_redis_failure_is_a_miss_not_an_error(tmp_path: Path) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server binary not found")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, server)
        redis = RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
        tiered = TieredStore(1 * MiB, LMDBStore(tmp_path, 8 * MiB), redis)
    finally:
        server.kill()  # the shared server goes away while the store is open
        server.wait()
    key, digest, payload, summary = page(1)
    assert tiered.get(key, digest) is None and not tiered.contains(key)
    assert tiered.put(key, digest, payload, summary)  # LMDB still takes it
    assert tiered.flush(timeout=10)
    stats = tiered.stats()
    assert stats["redis"]["errors"] >= 2 and "error" in stats["redis"]
    assert stats["writers"]["redis"]["failed"] == 1 and stats["lmdb"]["entries"] == 1
    tiered.close()


def test_open_store_from_settings(tmp_path: Path, redis_url: str) -> None:
    settings = Settings(
        home=tmp_path,
        kv_host_bytes=2 * MiB,
        kv_disk_bytes=16 * MiB,
        kv_redis_url=redis_url,
        kv_redis_ttl_s=60,
        kv_redis_max_bytes=8 * MiB,
        kv_write_queue=7,
    )
    store = open_store(settings)
    assert store.lmdb.path == tmp_path / "lmdb" and store.lmdb.capacity == 16 * MiB
    assert store.host.budget == 2 * MiB and store.redis is not None
    assert (store.redis.ttl_s, store.redis.max_bytes) == (60, 8 * MiB)
    assert all(w.max_queue == 7 for w in store._writers.values())
    store.close()
    no_disk = open_store(Settings(home=tmp_path, kv_disk_bytes=0), path=tmp_path / "x")
    assert no_disk.lmdb is None and no_disk.redis is None
    no_disk.close()


def test_host_tier_checks_the_digest_and_completes_entries() -> None:
    from kvstore.host import HostTier

    host = HostTier(1 * MiB)
    key, digest, payload, summary = page(1)
    assert host.put(key, None, None, summary)  # a summary alone
    assert host.get(key, digest) is None and host.get_summary(key) == summary
    assert host.put(key, digest, payload, None)  # the page joins its summary
    assert host.get(key, digest) == payload and host.get_summary(key) == summary
    assert host.get(key, page(2)[1]) is None  # another page's tokens: a miss
    assert not host.put(page(3)[0], digest, b"x" * (2 * MiB), b"")  # larger than the budget
    assert host.stats()["entries"] == 1


def test_summaries_in_one_call_across_tiers(tmp_path: Path, redis_url: str) -> None:
    ns = f"test:{uuid.uuid4().hex[:8]}"
    tiered = TieredStore(1 * MiB, LMDBStore(tmp_path, 8 * MiB), RedisStore(redis_url, namespace=ns))
    items = [page(i) for i in range(6)]
    for p in items:
        tiered.put(*p)
    assert tiered.flush(timeout=10)
    tiered.host.clear()
    for p in items[3:]:
        tiered.lmdb._drop([p[0]])  # pages 3..5 only in Redis now
    keys = [p[0] for p in items] + [page(99)[0]]
    assert tiered.get_summaries(keys) == [p[3] for p in items] + [None]
    assert all(tiered.host.get_summary(p[0]) == p[3] for p in items)  # now resident in RAM
    assert tiered.redis.get_summaries([items[4][0], page(98)[0]]) == [items[4][3], None]
    tiered.clear()
    tiered.close()


def test_threads_reading_and_writing_while_the_map_grows_and_evicts(tmp_path: Path) -> None:
    import threading

    lmdb = LMDBStore(tmp_path, 1536 * 1024, initial_map_bytes=1 * MiB, lru_grain_s=0)
    tiered = TieredStore(256 * 1024, lmdb, writer_queue=64)
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(seed * 1000, seed * 1000 + 150):
                tiered.put(*page(i))
                for j in range(max(seed * 1000, i - 20), i, 3):
                    key, digest, payload, _ = page(j)
                    got = tiered.get(key, digest)
                    assert got is None or got == payload, f"page {j} served wrong bytes"
        except BaseException as exc:  # surfaced below: a thread's assert must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert tiered.flush(timeout=30)
    stats = tiered.stats()
    assert stats["lmdb"]["bytes"] <= 1536 * 1024 and stats["lmdb"]["map_bytes"] > 1 * MiB
    assert stats["writers"]["lmdb"]["failed"] == 0
    # Under load the writer may skip pages (its queue is bounded by design); eviction is owed
    # only once more than the capacity was written. 16 KiB is every page's smallest size.
    if stats["writers"]["lmdb"]["written"] * 16 * 1024 > 1536 * 1024:
        assert stats["lmdb"]["evicted"] > 0
    assert stats["lmdb"]["puts"] == stats["writers"]["lmdb"]["written"]
    report = lmdb.verify()
    assert report["corrupt"] == 0 and report["stale_lru"] == 0 and report["orphans"] == 0
    before = lmdb.stats()["hits"]
    for i in [i for s in range(4) for i in range(s * 1000, s * 1000 + 150)]:
        key, digest, payload, _ = page(i)
        assert tiered.get(key, digest) in (None, payload)
    assert lmdb.stats()["hits"] - before >= report["ok"] - tiered.host.stats()["entries"] > 0
    tiered.close()
