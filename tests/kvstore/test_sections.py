"""Records in sections: one layer of a page read and checked alone, in every tier."""

from __future__ import annotations

import uuid
from pathlib import Path

import lmdb
import pytest

from kvstore import record
from kvstore.lmdb_store import LMDBStore
from kvstore.redis_store import RedisStore
from kvstore.tiers import TieredStore
from strata.errors import BadRequest
from tests.kvstore.workers import page

MiB = 1 << 20
SECTIONS = 8


def sectioned(i: int) -> tuple[bytes, bytes, bytes, bytes, list[bytes]]:
    """Page i with a payload of 8 distinguishable 2 KiB sections."""
    key, digest, _, summary = page(i)
    parts = [bytes([(i * 16 + s) % 256]) * 2048 for s in range(SECTIONS)]
    return key, digest, b"".join(parts), summary, parts


def test_a_section_is_served_after_its_own_check() -> None:
    _, digest, payload, _, parts = sectioned(1)
    raw = bytearray(record.encode(record.KIND_PAGE, digest, payload, SECTIONS))
    assert bytes(record.decode(raw, record.KIND_PAGE, digest)) == payload
    assert [bytes(record.decode_section(raw, record.KIND_PAGE, digest, s)) for s in range(SECTIONS)] == parts
    header = record.read_header(raw)
    raw[header.payload_offset + 5 * 2048 + 7] ^= 0x10  # one byte of layer 5
    assert bytes(record.decode_section(raw, record.KIND_PAGE, digest, 4)) == parts[4]
    for read in (lambda: record.decode_section(raw, record.KIND_PAGE, digest, 5),
                 lambda: record.decode(raw, record.KIND_PAGE, digest)):
        with pytest.raises(record.RecordError, match="checksum"):
            read()
    raw[header.payload_offset + 5 * 2048 + 7] ^= 0x10
    raw[record.HEADER_BYTES + 8 * 5] ^= 0x01  # the table entry of layer 5: the table's own checksum fails
    with pytest.raises(record.RecordError, match="checksum"):
        record.decode_section(raw, record.KIND_PAGE, digest, 0)
    with pytest.raises(record.RecordError, match="section 9 of 8"):
        record.decode_section(record.encode(record.KIND_PAGE, digest, payload, SECTIONS), record.KIND_PAGE,
                              digest, 9)


def test_sections_must_split_the_payload(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 8 * MiB)
    key, digest, payload, summary, _ = sectioned(2)
    for bad in (0, 3, -1, 5000):
        with pytest.raises(BadRequest, match="equal sections"):
            store.put(key, digest, payload, summary, bad)
    tiered = TieredStore(1 * MiB, store)
    with pytest.raises(BadRequest, match="equal sections"):
        tiered.put(key, digest, payload, summary, 3)
    tiered.close()


def test_lmdb_serves_one_section_and_drops_a_corrupt_one(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 8 * MiB)
    key, digest, payload, summary, parts = sectioned(3)
    assert store.put(key, digest, payload, summary, SECTIONS)
    assert store.get_sections([key], [digest], 6) == [parts[6]]
    store.close()
    env = lmdb.open(str(tmp_path), max_dbs=8, map_size=64 * MiB)
    pages = env.open_db(b"pages")
    with env.begin(write=True) as txn:
        raw = bytearray(txn.get(key, db=pages))
        raw[record.read_header(raw).payload_offset + 2 * 2048] ^= 0x01  # layer 2
        txn.put(key, bytes(raw), db=pages)
    env.close()
    store = LMDBStore(tmp_path, 8 * MiB)
    assert store.get_sections([key], [digest], 1) == [parts[1]]  # checked alone: still good
    assert store.get_sections([key], [digest], 2) == [None]  # never served; the entry is removed
    assert not store.contains(key) and store.stats()["corrupt"] == 1
    store.close()


def test_tiers_serve_sections_from_host_lmdb_and_redis(tmp_path: Path, redis_url: str) -> None:
    redis = RedisStore(redis_url, namespace=f"test:{uuid.uuid4().hex[:8]}")
    tiered = TieredStore(1 * MiB, LMDBStore(tmp_path / "a", 8 * MiB), redis)
    items = [sectioned(i) for i in range(4)]
    for key, digest, payload, summary, _ in items:
        assert tiered.put(key, digest, payload, summary, SECTIONS)
    assert tiered.flush(timeout=10)
    keys, digests = [it[0] for it in items], [it[1] for it in items]
    assert tiered.get_sections(keys, digests, 3) == [it[4][3] for it in items]  # from host RAM
    assert tiered.lmdb is not None and tiered.lmdb.stats()["hits"] == 0
    tiered.host.clear()
    assert tiered.get_sections(keys, digests, 7) == [it[4][7] for it in items]  # from LMDB
    assert tiered.lmdb.stats()["hits"] == 4
    only_redis = TieredStore(1 * MiB, None, redis)
    assert only_redis.get_sections(keys[:2], digests[:2], 0) == [it[4][0] for it in items[:2]]
    # A whole page fetched from Redis is promoted with its sections: host RAM serves a layer after.
    assert only_redis.get_many(keys[2:3], digests[2:3], SECTIONS) == [items[2][2]]
    assert only_redis.host.get_section(keys[2], digests[2], 5) == items[2][4][5]
    redis.clear()
    tiered.close()
