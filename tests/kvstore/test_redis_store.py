"""RedisStore against a real redis-server (tests/conftest.py starts one when none is given)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from kvstore.record import HEADER_BYTES
from kvstore.redis_store import RedisStore
from strata.errors import StoreError
from tests.kvstore.workers import page


@pytest.fixture
def namespace() -> str:
    return f"test:{uuid.uuid4().hex[:8]}"


@pytest.fixture
def store(redis_url: str, namespace: str) -> Iterator[RedisStore]:
    s = RedisStore(redis_url, namespace=namespace)
    yield s
    s.clear()
    s.close()


def test_round_trip_across_clients(store: RedisStore, redis_url: str, namespace: str) -> None:
    items = [page(i) for i in range(5)]
    assert store.put_many(items) == [True] * 5
    other = RedisStore(redis_url, namespace=namespace)  # "another machine"
    assert other.get_many([p[0] for p in items], [p[1] for p in items]) == [p[2] for p in items]
    assert other.get_summary(items[0][0]) == items[0][3]
    assert other.contains(items[0][0]) and not other.contains(page(99)[0])
    assert other.get(page(99)[0], page(99)[1]) is None
    stats = other.stats()
    assert stats["entries"] == 5 and stats["hits"] == 5 and stats["misses"] == 1
    other.close()


def test_keys_are_namespaced(store: RedisStore, redis_url: str, namespace: str) -> None:
    key, digest, payload, summary = page(1)
    store.put(key, digest, payload, summary)
    raw = redis.Redis.from_url(redis_url)
    assert raw.exists(f"{namespace}:page:{key.hex()}") and raw.exists(f"{namespace}:sum:{key.hex()}")
    raw.close()


def test_corrupt_record_is_a_miss_and_deleted(store: RedisStore, redis_url: str, namespace: str) -> None:
    key, digest, payload, summary = page(2)
    store.put(key, digest, payload, summary)
    raw = redis.Redis.from_url(redis_url)
    name = f"{namespace}:page:{key.hex()}"
    data = bytearray(raw.get(name))
    data[HEADER_BYTES + 7] ^= 0x40
    raw.set(name, bytes(data))
    assert store.get(key, digest) is None
    assert not raw.exists(name) and not store.contains(key)
    assert store.stats()["corrupt"] == 1 and store.stats()["bytes"] == 0
    raw.close()


def test_wrong_digest_is_a_miss(store: RedisStore) -> None:
    key, digest, payload, summary = page(3)
    store.put(key, digest, payload, summary)
    assert store.get(key, page(4)[1]) is None


def test_max_bytes_evicts_least_recently_used(redis_url: str, namespace: str) -> None:
    items = [page(i, size=10_000) for i in range(30)]
    budget = 12 * (len(items[0][2]) + 400)
    store = RedisStore(redis_url, max_bytes=budget, namespace=namespace)
    store.put_many(items[:8])
    time.sleep(0.002)  # a later access time than the puts, even on a coarse clock
    assert store.get(items[0][0], items[0][1]) == items[0][2]  # recent now
    for p in items[8:16]:
        store.put(*p)
    stats = store.stats()
    assert stats["bytes"] <= budget and stats["evicted"] > 0
    assert store.contains(items[0][0]) and not store.contains(items[1][0])
    assert store.contains(items[15][0])
    store.clear()
    store.close()


def test_ttl_is_set_and_verify_repairs(redis_url: str, namespace: str) -> None:
    store = RedisStore(redis_url, ttl_s=100, namespace=namespace)
    items = [page(i) for i in range(4)]
    store.put_many(items)
    raw = redis.Redis.from_url(redis_url)
    assert 0 < raw.ttl(f"{namespace}:page:{items[0][0].hex()}") <= 100
    raw.set(f"{namespace}:sum:{items[1][0].hex()}", b"junk")  # a corrupt summary
    raw.set(f"{namespace}:page:not-a-key", b"someone else's")  # ignored, never deleted
    raw.delete(f"{namespace}:page:{items[2][0].hex()}", f"{namespace}:sum:{items[2][0].hex()}")
    report = store.verify()
    assert (report["ok"], report["corrupt"], report["stale"], report["removed"]) == (2, 1, 1, 0)
    repaired = store.verify(repair=True)
    assert repaired["removed"] == 1 and store.stats()["entries"] == 2
    assert store.verify() == {"ok": 2, "corrupt": 0, "stale": 0, "removed": 0}
    assert raw.get(f"{namespace}:page:not-a-key") == b"someone else's"
    store.clear()
    assert not list(raw.scan_iter(match=f"{namespace}:*"))
    raw.close()
    store.close()


def test_unreachable_redis_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="unreachable"):
        RedisStore("redis://:secret@127.0.0.1:1/0", timeout_s=0.5)
    try:
        RedisStore("redis://:secret@127.0.0.1:1/0", timeout_s=0.5)
    except StoreError as exc:
        assert "secret" not in exc.message
