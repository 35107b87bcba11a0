"""Pages and summaries persisted in LMDB, bounded in bytes, evicted by last access.

Sub-databases: `pages` and `summaries` (key -> record), `access` (key -> last access ns and the
bytes the entry is charged), `lru` (last access ns big-endian + key -> empty: the eviction order)
and `meta` (layout version, created, bytes, entries, evicted). The byte count lives in `meta` and
changes only inside write transactions, so every process sharing the store sees one total.

Reads never take LMDB's writer lock: last-access updates are buffered per process and written,
_TOUCH_BATCH at a time, by the next write transactions, which is all LRU needs. A read writes
them itself only when _TOUCH_MAX are buffered: a sparse decode step reads ~400 layer-pages, and a
write transaction (and its sync) on that path cost 22 ms per token at 1M tokens. The buffer holds
one entry per page read (a 1M-token context has 16K pages), so the bound is rarely reached. A page read
again within lru_grain_s of its last recorded access is not touched again: LRU to the second
is enough, and it keeps re-reads of hot pages free of write transactions.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TypeVar

import lmdb

from kvstore import record
from kvstore.keys import LAYOUT_VERSION
from kvstore.lmdb_env import LMDBEnv, MapAtCap, MiB, destroy, file_bytes
from kvstore.store import PageItem, check_item, check_key, item_fields
from strata.errors import StoreError

log = logging.getLogger(__name__)
ENTRY_OVERHEAD = 128  # keys and values in access/lru, charged so tiny pages still count
_ACCESS = struct.Struct("<QQ")  # last access ns, charged bytes
_U64 = struct.Struct("<Q")
_LOW_WATER = 0.9  # evict down to this share of capacity, so evictions come in batches
_TOUCH_BATCH = 4096  # buffered access times recorded per write transaction
_TOUCH_MAX = 1 << 17  # buffered access times past which a read records them itself (~13 MiB)
_TOUCH_GRAIN_S = 1.0
T = TypeVar("T")
_COUNTERS = ("hits", "misses", "corrupt", "puts", "put_existing", "too_large", "full")


class LMDBStore:
    """A PageStore in one LMDB directory, safe to open from several processes at once."""

    def __init__(
        self,
        path: Path | str,
        capacity_bytes: int,
        initial_map_bytes: int = 64 * MiB,
        max_readers: int = 126,
        sync: bool = True,
        lru_grain_s: float = _TOUCH_GRAIN_S,
    ) -> None:
        if capacity_bytes <= 0:
            raise StoreError(f"LMDB capacity must be positive, got {capacity_bytes}")
        self.path = Path(path)
        self.capacity = int(capacity_bytes)
        self._grain_ns = int(lru_grain_s * 1e9)
        # Slack over the capacity: B-tree pages, and freed overflow runs LMDB cannot yet reuse.
        max_map = self.capacity + max(self.capacity // 4, 16 * MiB)
        self._env = LMDBEnv(self.path, min(initial_map_bytes, max_map), max_map, max_readers, sync)
        self._touched: dict[bytes, int] = {}
        self._mutex = threading.Lock()
        self.counters = dict.fromkeys(_COUNTERS, 0)
        self.problem: str | None = None
        self._check_layout()

    @property
    def _db(self) -> dict:
        return self._env.dbs  # through the env: a forked child reopens its own handles

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: bytes, tokens_digest: bytes) -> bytes | None:
        """The page payload, or None on a miss; a record that fails a check is deleted."""
        return self.get_many([key], [tokens_digest])[0]

    def get_many(self, keys: Sequence[bytes], digests: Sequence[bytes]) -> list[bytes | None]:
        """get() for many keys in one read transaction."""
        return self._get_pages(keys, digests, None)

    def get_sections(self, keys: Sequence[bytes], digests: Sequence[bytes], index: int) -> list[bytes | None]:
        """Section `index` of each page (one layer), read and checked alone, in one transaction."""
        return self._get_pages(keys, digests, index)

    def _get_pages(self, keys: Sequence[bytes], digests: Sequence[bytes], section: int | None) -> list[bytes | None]:
        if len(keys) != len(digests):
            raise StoreError(f"get_many: {len(keys)} keys but {len(digests)} digests")
        for key, digest in zip(keys, digests, strict=True):
            check_key(key)
            record.check_digest(digest)
        if self.problem:
            return [None] * len(keys)
        out: list[bytes | None] = []
        bad: list[bytes] = []
        stale: list[bytes] = []  # hits whose recorded last access is older than the grain
        now = time.time_ns()
        with self._env.read() as txn:
            for key, digest in zip(keys, digests, strict=True):
                value = self._read(txn, key, record.KIND_PAGE, digest, bad, section)
                out.append(value)
                # A key already buffered needs no lookup: its newer time just replaces the buffered one.
                if value is not None and (key in self._touched or self._access_ns(txn, key) < now - self._grain_ns):
                    stale.append(key)
        self._after_reads(out, bad, stale, now)
        return out

    def _access_ns(self, txn: lmdb.Transaction, key: bytes) -> int:
        access = txn.get(key, db=self._db["access"])
        return _ACCESS.unpack(access)[0] if access is not None else 0

    def get_summary(self, key: bytes) -> bytes | None:
        """The summary record's payload, or None."""
        return self.get_summaries([key])[0]

    def get_summaries(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """get_summary() for many keys in one read transaction."""
        for key in keys:
            check_key(key)
        if self.problem:
            return [None] * len(keys)
        bad: list[bytes] = []
        with self._env.read() as txn:
            values = [self._read(txn, key, record.KIND_SUMMARY, None, bad) for key in keys]
        if bad:
            self._drop(bad)
        return values

    def contains(self, key: bytes) -> bool:
        """Whether a page is stored under key (not checked: get() does that)."""
        check_key(key)
        if self.problem:
            return False
        with self._env.read() as txn:
            return txn.get(key, db=self._db["pages"]) is not None

    def _read(
        self, txn: lmdb.Transaction, key: bytes, kind: int, digest: bytes | None, bad: list[bytes],
        section: int | None = None,
    ) -> bytes | None:
        db = self._db["pages" if kind == record.KIND_PAGE else "summaries"]
        raw = txn.get(key, db=db)
        if raw is None:
            return None
        try:
            # One copy out of the map: the caller may keep the bytes after the txn ends.
            if section is not None:
                return bytes(record.decode_section(raw, kind, digest, section))
            return bytes(record.decode(raw, kind, digest))
        except record.RecordError:
            bad.append(key)
            return None

    def _after_reads(self, out: list[bytes | None], bad: list[bytes], stale: list[bytes], now: int) -> None:
        hits = sum(1 for v in out if v is not None)
        with self._mutex:
            self.counters["hits"] += hits
            self.counters["misses"] += len(out) - hits
            for key in stale:
                self._touched[key] = now
            self.counters["corrupt"] += len(bad)
            flush = len(self._touched) >= _TOUCH_MAX
        if bad or flush:
            self._drop(bad)  # writes a batch of the buffered access times too

    # -- writes ------------------------------------------------------------------------------

    def put(self, key: bytes, tokens_digest: bytes, payload: bytes, summary: bytes, sections: int = 1) -> bool:
        """Store one page; False when it cannot be stored (larger than the store, unusable)."""
        return self.put_many([(key, tokens_digest, payload, summary, sections)])[0]

    def put_many(self, items: Sequence[PageItem]) -> list[bool]:
        """Store pages in one write transaction, evicting least recently used pages for room."""
        encoded = []
        for key, digest, payload, summary, sections in map(item_fields, items):
            check_item(key, payload, summary)
            page = record.encode(record.KIND_PAGE, digest, payload, sections)
            summ = record.encode(record.KIND_SUMMARY, digest, summary)
            encoded.append((key, page, summ, len(page) + len(summ) + ENTRY_OVERHEAD))
        if self.problem:
            return [False] * len(items)

        def insert_all(txn: lmdb.Transaction) -> list[str]:
            return [self._insert(txn, *e) for e in encoded]

        for attempt in range(3):
            try:
                outcomes = self._write(insert_all)
            except MapAtCap:
                # Fragmented free space: the accounted bytes fit but the map does not. Free more.
                need = sum(e[3] for e in encoded) * (attempt + 2)
                try:
                    self._write(partial(self._evict, need=need))
                except MapAtCap:
                    break
            else:
                # Counted only now: a transaction that was retried must not count twice.
                for outcome in outcomes:
                    self.counters[outcome] += 1
                return [outcome != "too_large" for outcome in outcomes]
        self.counters["full"] += len(items)
        return [False] * len(items)

    def _insert(self, txn: lmdb.Transaction, key: bytes, page: bytes, summ: bytes, size: int) -> str:
        """Insert one entry; returns the counter it belongs to: puts, put_existing or too_large."""
        if txn.get(key, db=self._db["pages"]) is not None:
            self._touch(txn, key, time.time_ns())
            return "put_existing"
        if size > self.capacity * _LOW_WATER:
            return "too_large"
        used = self._meta_int(txn, b"bytes")
        if used + size > self.capacity:
            self._evict(txn, used + size - int(self.capacity * _LOW_WATER))
        now = time.time_ns()
        txn.put(key, page, db=self._db["pages"])
        txn.put(key, summ, db=self._db["summaries"])
        txn.put(key, _ACCESS.pack(now, size), db=self._db["access"])
        txn.put(_lru_key(now, key), b"", db=self._db["lru"])
        self._add_meta(txn, b"bytes", size)
        self._add_meta(txn, b"entries", 1)
        return "puts"

    def _evict(self, txn: lmdb.Transaction, need: int) -> int:
        """Delete least recently used entries until `need` bytes are freed; returns bytes freed."""
        freed, victims = 0, []
        with txn.cursor(db=self._db["lru"]) as cur:
            for lru_key in cur.iternext(keys=True, values=False):
                if freed >= need:
                    break
                key = bytes(lru_key[8:])
                victims.append(key)
                access = txn.get(key, db=self._db["access"])
                freed += _ACCESS.unpack(access)[1] if access is not None else 0
        for key in victims:
            self._delete(txn, key)
        self._add_meta(txn, b"evicted", len(victims))
        return freed

    def _delete(self, txn: lmdb.Transaction, key: bytes) -> None:
        access = txn.get(key, db=self._db["access"])
        if access is not None:
            ts, size = _ACCESS.unpack(access)
            txn.delete(_lru_key(ts, key), db=self._db["lru"])
            txn.delete(key, db=self._db["access"])
            self._add_meta(txn, b"bytes", -size)
            self._add_meta(txn, b"entries", -1)
        txn.delete(key, db=self._db["pages"])
        txn.delete(key, db=self._db["summaries"])

    def _drop(self, keys: Sequence[bytes]) -> None:
        def delete_all(txn: lmdb.Transaction) -> None:
            for key in keys:
                self._delete(txn, key)

        try:
            self._write(delete_all)
        except MapAtCap:
            pass  # even a delete needs a free page; the next eviction or verify removes them

    def _touch(self, txn: lmdb.Transaction, key: bytes, now: int) -> None:
        access = txn.get(key, db=self._db["access"])
        if access is None:
            return
        ts, size = _ACCESS.unpack(access)
        if now <= ts:
            return
        txn.delete(_lru_key(ts, key), db=self._db["lru"])
        txn.put(_lru_key(now, key), b"", db=self._db["lru"])
        txn.put(key, _ACCESS.pack(now, size), db=self._db["access"])

    def _write(self, fn: Callable[[lmdb.Transaction], T]) -> T:
        """A write transaction that first records the oldest _TOUCH_BATCH buffered last-access times."""
        with self._mutex:
            if len(self._touched) <= _TOUCH_BATCH:
                touched, self._touched = self._touched, {}
            else:
                touched = {k: self._touched.pop(k) for k in list(islice(self._touched, _TOUCH_BATCH))}

        def run(txn: lmdb.Transaction) -> T:
            for key, ts in touched.items():
                self._touch(txn, key, ts)
            return fn(txn)

        return self._env.write(run)

    # -- metadata ----------------------------------------------------------------------------

    def _meta_int(self, txn: lmdb.Transaction, name: bytes) -> int:
        raw = txn.get(name, db=self._db["meta"])
        return _U64.unpack(raw)[0] if raw is not None else 0

    def _add_meta(self, txn: lmdb.Transaction, name: bytes, delta: int) -> None:
        value = max(0, self._meta_int(txn, name) + delta)
        txn.put(name, _U64.pack(value), db=self._db["meta"])

    def _check_layout(self) -> None:
        def init(txn: lmdb.Transaction) -> int:
            raw = txn.get(b"layout", db=self._db["meta"])
            if raw is not None:
                return struct.unpack("<I", raw)[0] if len(raw) == 4 else -1
            self._reset_meta(txn)
            return LAYOUT_VERSION

        found = self._env.write(init)
        if found != LAYOUT_VERSION:
            self.problem = (
                f"store at {self.path} was written with layout version {found}, this build reads "
                f"{LAYOUT_VERSION}; it is ignored (run `strata cache clear` to reuse the space)"
            )
            log.warning("kvstore: %s", self.problem)

    def _reset_meta(self, txn: lmdb.Transaction) -> None:
        meta = self._db["meta"]
        txn.put(b"layout", struct.pack("<I", LAYOUT_VERSION), db=meta)
        txn.put(b"created", _U64.pack(time.time_ns()), db=meta)
        for name in (b"bytes", b"entries", b"evicted"):
            txn.put(name, _U64.pack(0), db=meta)

    # -- maintenance -------------------------------------------------------------------------

    def stats(self) -> dict:
        """Bytes, entries, map and file sizes, layout status and this process's counters."""
        with self._env.read() as txn:
            meta = {k: self._meta_int(txn, k.encode()) for k in ("bytes", "entries", "evicted")}
        return {
            "path": str(self.path),
            "status": "layout_mismatch" if self.problem else "ok",
            "problem": self.problem,
            "layout_version": LAYOUT_VERSION,
            "capacity_bytes": self.capacity,
            **meta,
            "map_bytes": self._env.map_size,
            "file_bytes": file_bytes(self.path),
            **self.counters,
        }

    def verify(self, repair: bool = False) -> dict:
        """Check every record (header, checksum, summary, accounting); repair drops the bad."""
        from kvstore.lmdb_verify import scan

        if self.problem:
            return {"ok": 0, "corrupt": 0, "removed": 0, "problem": self.problem}
        with self._env.read() as txn:
            report, bad, stale = scan(txn, self._db)
        report["removed"] = 0
        if repair:
            self._write(lambda txn: self._repair(txn, bad, stale, report))
            report["removed"] = len(bad)
        return report

    def _repair(self, txn: lmdb.Transaction, bad: list[bytes], stale: list[bytes], report: dict) -> None:
        for key in bad:
            self._delete(txn, key)
        for lru_key in stale:
            txn.delete(lru_key, db=self._db["lru"])
        # Counters drift only if a bug or a foreign writer touched them: set them from the scan.
        txn.put(b"bytes", _U64.pack(report["charged_bytes"]), db=self._db["meta"])
        txn.put(b"entries", _U64.pack(report["ok"]), db=self._db["meta"])

    def clear(self) -> None:
        """Remove every entry; also makes a store of another layout version usable again."""

        def wipe(txn: lmdb.Transaction) -> None:
            for name in ("pages", "summaries", "access", "lru", "meta"):
                txn.drop(self._db[name], delete=False)
            self._reset_meta(txn)

        self._env.write(wipe)
        self._touched.clear()
        self.problem = None

    def close(self) -> None:
        """Write buffered access times and close the environment."""
        while self._touched and not self.problem:
            self._drop([])  # writes a batch of the buffered access times
        self._env.close()

    @staticmethod
    def destroy(path: Path | str) -> list[str]:
        """Delete the store's files without opening them (the way out of an unreadable store)."""
        return destroy(Path(path))


def _lru_key(ts: int, key: bytes) -> bytes:
    return ts.to_bytes(8, "big") + key
