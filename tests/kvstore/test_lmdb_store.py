"""LMDBStore against real LMDB files in temporary directories."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from kvstore.lmdb_store import LMDBStore
from kvstore.record import HEADER_BYTES
from strata.errors import BadRequest, StoreError
from tests.kvstore.workers import page

MiB = 1 << 20
ROOT_DIR = Path(__file__).resolve().parents[2]


def _raw_env(path: Path) -> lmdb.Environment:
    return lmdb.open(str(path), max_dbs=8, map_size=64 * MiB)


def test_round_trip_and_summary(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 8 * MiB)
    key, digest, payload, summary = page(1)
    assert store.get(key, digest) is None and not store.contains(key)
    assert store.put(key, digest, payload, summary)
    assert store.contains(key)
    got = store.get(key, digest)
    assert got == payload and isinstance(got, bytes)
    assert store.get_summary(key) == summary
    many = store.get_many([key, page(2)[0]], [digest, page(2)[1]])
    assert many == [payload, None]
    stats = store.stats()
    assert stats["entries"] == 1 and stats["hits"] == 2 and stats["misses"] == 2
    store.close()
    reopened = LMDBStore(tmp_path, 8 * MiB)
    assert reopened.get(key, digest) == payload
    reopened.close()


def test_flipped_payload_byte_is_a_miss_and_the_entry_is_deleted(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 8 * MiB)
    key, digest, payload, summary = page(3)
    store.put(key, digest, payload, summary)
    store.close()
    env = _raw_env(tmp_path)
    pages = env.open_db(b"pages")
    with env.begin(write=True) as txn:
        raw = bytearray(txn.get(key, db=pages))
        raw[HEADER_BYTES + 100] ^= 0x01
        txn.put(key, bytes(raw), db=pages)
    env.close()
    store = LMDBStore(tmp_path, 8 * MiB)
    assert store.contains(key)
    assert store.get(key, digest) is None
    assert not store.contains(key) and store.get_summary(key) is None
    stats = store.stats()
    assert stats["corrupt"] == 1 and stats["entries"] == 0 and stats["bytes"] == 0
    store.close()


def test_wrong_tokens_digest_is_a_miss(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 8 * MiB)
    key, digest, payload, summary = page(4)
    store.put(key, digest, payload, summary)
    assert store.get(key, page(5)[1]) is None
    assert not store.contains(key)  # dropped, as the design asks of any mismatch
    store.close()


def test_bad_arguments_are_refused_with_a_reason(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 8 * MiB)
    key, digest, payload, summary = page(6)
    with pytest.raises(BadRequest, match="page key"):
        store.get(b"short", digest)
    with pytest.raises(BadRequest, match="tokens_digest"):
        store.put(key, b"x", payload, summary)
    with pytest.raises(BadRequest, match="payload"):
        store.put(key, digest, "text", summary)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="capacity"):
        LMDBStore(tmp_path / "other", 0)
    store.close()


def test_capacity_evicts_least_recently_used(tmp_path: Path) -> None:
    pages = [page(i, size=60 * 1024) for i in range(25)]
    one = len(pages[0][2])
    store = LMDBStore(tmp_path, 20 * one, lru_grain_s=0)  # room for about 19 pages
    for p in pages[:15]:
        assert store.put(*p)
    assert store.get(pages[0][0], pages[0][1]) == pages[0][2]  # page 0 is now recent
    for p in pages[15:]:
        assert store.put(*p)
    stats = store.stats()
    assert stats["bytes"] <= store.capacity and stats["evicted"] > 0
    present = [i for i, p in enumerate(pages) if store.contains(p[0])]
    assert 0 in present and 1 not in present and 24 in present
    assert all(store.get(pages[i][0], pages[i][1]) == pages[i][2] for i in present)
    store.close()


def test_page_larger_than_the_store_is_refused(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 64 * 1024)
    key, digest, _, summary = page(7)
    assert store.put(key, digest, b"x" * 100_000, summary) is False
    assert store.stats()["too_large"] == 1
    store.close()


def test_map_grows_up_to_capacity(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 48 * MiB, initial_map_bytes=1 * MiB)
    assert store.stats()["map_bytes"] == 1 * MiB
    pages = [page(i, size=64 * 1024) for i in range(300)]  # ~20 MiB
    for i in range(0, len(pages), 10):
        assert all(store.put_many(pages[i : i + 10]))
    stats = store.stats()
    assert stats["map_bytes"] >= 16 * MiB and stats["evicted"] == 0
    assert all(store.get(k, d) == p for k, d, p, _ in pages)
    store.close()


def test_full_map_at_cap_evicts_instead_of_failing(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 4 * MiB, initial_map_bytes=1 * MiB)
    for i in range(400):  # ~30 MiB through a 4 MiB store
        assert store.put(*page(i, size=64 * 1024)), f"page {i} was refused"
    stats = store.stats()
    assert stats["bytes"] <= 4 * MiB and stats["file_bytes"] <= store._env.max_map
    assert store.verify()["corrupt"] == 0
    store.close()


def _spawn_writer(path: Path, start: int, count: int, capacity: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests.kvstore.workers", "write", str(path)]
    args = [str(start), str(count), str(capacity), "8"]
    return subprocess.Popen(cmd + args, cwd=ROOT_DIR, stdout=subprocess.PIPE, text=True)


def test_two_processes_write_and_read_one_store(tmp_path: Path) -> None:
    capacity = 64 * MiB
    store = LMDBStore(tmp_path, capacity, initial_map_bytes=1 * MiB)
    assert store.stats()["map_bytes"] == 1 * MiB
    children = [_spawn_writer(tmp_path, start, 400, capacity) for start in (0, 10_000)]
    for child in children:
        assert child.wait(timeout=60) == 0
    # Both children grew the map past the size this process mapped: reads and writes adopt it.
    for i in list(range(0, 400, 7)) + list(range(10_000, 10_400, 7)):
        key, digest, payload, _ = page(i)
        assert store.get(key, digest) == payload
    assert store.put(*page(50_000))
    assert store.stats()["map_bytes"] >= 8 * MiB  # adopted the size the children grew it to
    report = store.verify()
    assert report["ok"] == 801 and report["corrupt"] == 0 and report["stale_lru"] == 0
    store.close()


def test_other_layout_version_is_ignored_and_reported(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 8 * MiB)
    key, digest, payload, summary = page(8)
    store.put(key, digest, payload, summary)
    store.close()
    env = _raw_env(tmp_path)
    meta = env.open_db(b"meta")  # before the write txn: open_db would begin a second one
    with env.begin(write=True) as txn:
        txn.put(b"layout", struct.pack("<I", 999), db=meta)
    env.close()
    store = LMDBStore(tmp_path, 8 * MiB)
    stats = store.stats()
    assert stats["status"] == "layout_mismatch" and "999" in stats["problem"]
    assert store.get(key, digest) is None and not store.contains(key)
    assert store.put(*page(9)) is False
    store.clear()
    assert store.stats()["status"] == "ok" and store.put(*page(9))
    store.close()


def test_unreadable_store_file_names_the_way_out(tmp_path: Path) -> None:
    (tmp_path / "data.mdb").write_bytes(b"this is not an lmdb file" * 1000)
    with pytest.raises(StoreError, match="strata cache verify --repair"):
        LMDBStore(tmp_path, 8 * MiB)
    assert "data.mdb" in LMDBStore.destroy(tmp_path)
    store = LMDBStore(tmp_path, 8 * MiB)
    assert store.put(*page(1))
    store.close()


def test_verify_reports_and_repairs_corruption(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 8 * MiB)
    items = [page(i) for i in range(10)]
    store.put_many(items)
    store.close()
    env = _raw_env(tmp_path)
    pages, summaries, lru = (env.open_db(n) for n in (b"pages", b"summaries", b"lru"))
    with env.begin(write=True) as txn:
        txn.put(items[0][0], b"garbage", db=pages)
        raw = bytearray(txn.get(items[1][0], db=summaries))
        raw[-1] ^= 0xFF
        txn.put(items[1][0], bytes(raw), db=summaries)
        lru_key = next(k for k in txn.cursor(db=lru).iternext(values=False) if k[8:] == items[2][0])
        txn.delete(lru_key, db=lru)
    env.close()
    store = LMDBStore(tmp_path, 8 * MiB)
    report = store.verify()
    assert (report["ok"], report["corrupt"], report["removed"]) == (7, 3, 0)
    assert report["reasons"]["lru entry missing"] == 1
    assert store.contains(items[0][0])  # verify without repair changes nothing
    repaired = store.verify(repair=True)
    assert repaired["removed"] == 3 and not store.contains(items[0][0])
    again = store.verify()
    assert (again["ok"], again["corrupt"]) == (7, 0)
    assert store.stats()["entries"] == 7
    store.close()


def test_two_stores_on_one_directory_in_one_process_share_the_env(tmp_path: Path) -> None:
    first = LMDBStore(tmp_path, 8 * MiB)
    second = LMDBStore(tmp_path, 8 * MiB)
    assert first._env.env is second._env.env  # LMDB forbids two opens in one process
    first.put(*page(1))
    first.close()
    first.close()  # idempotent: must not release the second store's handle
    key, digest, payload, _ = page(1)
    assert second.get(key, digest) == payload
    second.close()


def test_forked_child_reopens_its_own_handle(tmp_path: Path) -> None:
    import multiprocessing

    store = LMDBStore(tmp_path, 8 * MiB)
    store.put(*page(1))
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_child_put, args=(store,))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    key, digest, payload, _ = page(2)
    assert store.get(key, digest) == payload
    store.close()


def _child_put(store: LMDBStore) -> None:
    key, digest, payload, _ = page(1)
    assert store.get(key, digest) == payload
    assert store.put(*page(2))


def test_any_contiguous_buffer_is_stored_byte_for_byte(tmp_path: Path) -> None:
    import numpy as np

    store = LMDBStore(tmp_path, 8 * MiB)
    key, digest, _, summary = page(1)
    values = np.arange(1000, dtype=np.float32)
    assert store.put(key, digest, memoryview(values), memoryview(bytearray(summary)))
    assert store.get(key, digest) == values.tobytes() and store.get_summary(key) == summary
    with pytest.raises(BadRequest, match="contiguous"):
        store.put(page(2)[0], digest, memoryview(values)[::2], summary)
    store.close()


def test_rereads_within_the_grain_do_not_write(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 8 * MiB, lru_grain_s=60)
    key, digest, payload, summary = page(1)
    store.put(key, digest, payload, summary)
    for _ in range(5):
        assert store.get(key, digest) == payload
    assert not store._touched  # just written: no access time to update
    store.close()
    store = LMDBStore(tmp_path, 8 * MiB, lru_grain_s=0)
    assert store.get(key, digest) == payload
    assert key in store._touched
    store.close()


def test_truncated_store_is_refused_not_a_bus_error(tmp_path: Path) -> None:
    store = LMDBStore(tmp_path, 16 * MiB)
    store.put_many([page(i) for i in range(100)])
    store.close()
    data = tmp_path / "data.mdb"
    size = data.stat().st_size
    with data.open("r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(StoreError, match="truncated.*strata cache verify --repair"):
        LMDBStore(tmp_path, 16 * MiB)
