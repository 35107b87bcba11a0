"""BackgroundWriter: never blocks the caller; a full queue skips and counts."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from kvstore.lmdb_store import LMDBStore
from kvstore.store import PageItem
from kvstore.writer import BackgroundWriter
from tests.kvstore.workers import page

MiB = 1 << 20


class _StalledStore:
    """A real LMDBStore whose writes wait for a gate: a disk that has fallen behind."""

    def __init__(self, store: LMDBStore) -> None:
        self.store = store
        self.gate = threading.Event()

    def put_many(self, items: Sequence[PageItem]) -> list[bool]:
        self.gate.wait(timeout=30)
        return self.store.put_many(items)


def test_full_queue_skips_instead_of_blocking(tmp_path: Path) -> None:
    lmdb = LMDBStore(tmp_path, 32 * MiB)
    stalled = _StalledStore(lmdb)
    writer = BackgroundWriter(stalled, max_queue=8, batch=4)  # type: ignore[arg-type]
    pages = [page(i) for i in range(40)]
    started = time.perf_counter()
    accepted = [writer.submit(*p) for p in pages]
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5, f"submit blocked for {elapsed:.2f}s"
    # The thread holds at most one batch while stalled; the queue holds max_queue more.
    assert 8 <= sum(accepted) <= 12 and writer.skipped == 40 - sum(accepted)
    assert not writer.flush(timeout=0.1)  # stalled: flush reports the timeout
    stalled.gate.set()
    assert writer.flush(timeout=10)
    assert writer.stats()["written"] == sum(accepted) and writer.failed == 0
    for p, ok in zip(pages, accepted, strict=True):
        assert (lmdb.get(p[0], p[1]) == p[2]) == ok
    writer.close()
    assert writer.submit(*page(99)) is False  # closed writers skip too
    lmdb.close()


def test_queue_bounded_in_bytes(tmp_path: Path) -> None:
    lmdb = LMDBStore(tmp_path, 32 * MiB)
    stalled = _StalledStore(lmdb)
    writer = BackgroundWriter(stalled, max_queue=1000, max_queue_bytes=100_000, batch=1)  # type: ignore[arg-type]
    accepted = sum(writer.submit(*page(i)) for i in range(50))  # ~17-23 KiB each
    assert 4 <= accepted <= 7
    stalled.gate.set()
    writer.close()
    assert writer.written == accepted
    lmdb.close()


def test_batches_reach_the_store_and_close_drains(tmp_path: Path) -> None:
    lmdb = LMDBStore(tmp_path, 32 * MiB)
    writer = BackgroundWriter(lmdb, max_queue=1000)
    pages = [page(i) for i in range(300)]
    assert all(writer.submit(*p) for p in pages)
    writer.close()
    assert writer.written == 300 and writer.skipped == 0
    assert lmdb.stats()["entries"] == 300
    lmdb.close()


class _FailingStore:
    def __init__(self) -> None:
        self.calls = 0

    def put_many(self, items: Sequence[PageItem]) -> list[bool]:
        self.calls += 1
        if self.calls == 1:
            raise OSError("disk gone")
        return [True] * len(items)


def test_a_failing_batch_is_counted_and_the_thread_survives() -> None:
    store = _FailingStore()
    writer = BackgroundWriter(store, batch=2)  # type: ignore[arg-type]
    writer.submit(*page(1))
    writer.submit(*page(2))
    assert writer.flush(timeout=5)
    writer.submit(*page(3))
    writer.close()
    assert writer.failed >= 1 and writer.written >= 1 and writer.failed + writer.written == 3
