"""Write-behind for pages: the decode path hands pages over and never waits for the disk.

A full queue means the disk (or Redis) is slower than pages are produced; the page is then not
persisted (counted as skipped) rather than stalling generation. Queued pages are written in
batches, one transaction per batch when the store offers put_many.
"""

from __future__ import annotations

import logging
import threading
from collections import deque

from kvstore.record import check_digest, check_sections
from kvstore.store import PageItem, PageStore, check_item
from strata.errors import BadRequest

log = logging.getLogger(__name__)
DEFAULT_BATCH = 64


class BackgroundWriter:
    """A bounded queue drained by one daemon thread into `store`."""

    def __init__(
        self,
        store: PageStore,
        max_queue: int = 1024,
        max_queue_bytes: int | None = None,
        batch: int = DEFAULT_BATCH,
    ) -> None:
        if max_queue <= 0 or batch <= 0:
            raise BadRequest(f"max_queue and batch must be positive, got {max_queue}, {batch}")
        self.store = store
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.batch = batch
        self.written = self.skipped = self.failed = 0
        self._queue: deque[PageItem] = deque()
        self._queued_bytes = 0
        self._busy = 0  # items taken off the queue and not yet written
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="kvstore-writer", daemon=True)
        self._thread.start()

    def submit(self, key: bytes, digest: bytes, payload: bytes, summary: bytes, sections: int = 1) -> bool:
        """Queue a page for writing; False (and counted) when the queue is full. Never blocks."""
        check_item(key, payload, summary)
        check_digest(digest)
        check_sections(len(payload), sections)
        size = len(payload) + len(summary)
        with self._cond:
            if self._closed or not self._has_room(size):
                self.skipped += 1
                return False
            self._queue.append((key, digest, payload, summary, sections))
            self._queued_bytes += size
            self._cond.notify_all()
        return True

    def _has_room(self, size: int) -> bool:
        if len(self._queue) >= self.max_queue:
            return False
        limit = self.max_queue_bytes
        return limit is None or not self._queue or self._queued_bytes + size <= limit

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued (up to `timeout`), then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def stats(self) -> dict:
        """Counters and the current queue depth."""
        with self._cond:
            queued, queued_bytes = len(self._queue), self._queued_bytes
        return {
            "written": self.written,
            "skipped": self.skipped,
            "failed": self.failed,
            "queued": queued,
            "queued_bytes": queued_bytes,
        }

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed and drained
                take = min(self.batch, len(self._queue))
                items = [self._queue.popleft() for _ in range(take)]
                self._queued_bytes -= sum(len(i[2]) + len(i[3]) for i in items)
                self._busy = take
            written, failed = self._write(items)
            with self._cond:
                self.written += written
                self.failed += failed
                self._busy = 0
                self._cond.notify_all()

    def _write(self, items: list[PageItem]) -> tuple[int, int]:
        """Write one batch; returns (written, failed). Errors are counted, never raised."""
        try:
            put_many = getattr(self.store, "put_many", None)
            if put_many is not None:
                results = put_many(items)
            else:
                results = [self.store.put(*item) for item in items]
        except Exception:  # a failing store must not kill the thread: the next batch may work
            log.exception("kvstore writer: a batch of %d pages failed", len(items))
            return 0, len(items)
        ok = sum(1 for r in results if r)
        return ok, len(results) - ok
