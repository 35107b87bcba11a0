"""Pages that live outside the pool: brought back on demand, persisted before they are dropped.

A long sequence lets go of the pages it is not attending (SparseKVCache.trim); they stay in the
pool as idle cached pages until the pool needs the room. Two rules keep that safe:

- persist before evict: the pool asks `Persistence.before_evict` before dropping a keyed page.
  A page handed to the store's background writer but not confirmed in LMDB is flushed, and
  written synchronously if the writer skipped it (its queue was full). Without a persistent tier
  the sequence never lets go of pages (no StoredPages source), so nothing is lost.
- fetch by key: StoredPages finds a page in the pool's cache first, then in host RAM / LMDB /
  Redis (one get_many per batch), and loads it into a fresh pool page.
"""

from __future__ import annotations

from collections.abc import Callable

from kvstore.tiers import TieredStore
from runtime.kv import PagePool
from strata.errors import StoreError


class Persistence:
    """Which keyed pool pages have reached a persistent tier; the pool's flush-before-evict hook."""

    def __init__(self, pool: PagePool, store: TieredStore, encode: Callable[[int], tuple[bytes, bytes]]) -> None:
        self.pool, self.store, self.encode = pool, store, encode
        self.pending: dict[bytes, tuple[int, bytes]] = {}  # key -> (pool page, tokens digest)
        self.sync_writes = 0  # pages the writer had skipped, written on the eviction path
        pool.before_evict = self.before_evict

    @property
    def durable(self) -> bool:
        """Whether pages written here survive the host tier: only then may a sequence let go of them."""
        return self.store.lmdb is not None

    def written(self, key: bytes, page: int, digest: bytes) -> None:
        """A page was handed to the store (put): it is persistent once the writer confirms it."""
        if self.durable:
            self.pending[key] = (page, digest)

    def before_evict(self, page: int, key: bytes) -> bool:
        """Make sure the page is in LMDB before the pool drops it; False keeps it in the pool."""
        if key not in self.pending:
            return True
        self.confirm()
        return key not in self.pending

    def confirm(self) -> None:
        """Wait for the writer, then write synchronously whatever it skipped."""
        lmdb = self.store.lmdb
        if lmdb is None:
            return
        self.store.flush()
        for key, (page, digest) in list(self.pending.items()):
            if not lmdb.contains(key):
                if self.pool.key_of.get(page) != key:
                    continue  # the page was reused under another key: nothing left to write
                payload, summary = self.encode(page)
                if not lmdb.put(key, digest, payload, summary):
                    continue
                self.sync_writes += 1
            del self.pending[key]


class StoredPages:
    """A sequence's pages by index, found in the pool's cache or loaded from the store."""

    def __init__(self, pool: PagePool, store: TieredStore, keys: list[bytes], digests: list[bytes],
                 decode_into: Callable[[int, bytes], bool]) -> None:
        self.pool, self.store = pool, store
        self.keys, self.digests = keys, digests
        self.decode_into = decode_into
        self.loaded = 0  # pages read from the store (not found in the pool)

    def acquire(self, indices: list[int]) -> list[int]:
        """Pool pages (one reference each) for sequence pages `indices`; StoreError if one is gone."""
        pages = [self.pool.lookup(self.keys[i]) for i in indices]
        missing = [n for n, p in enumerate(pages) if p is None]
        if not missing:
            return [p for p in pages if p is not None]
        try:
            loaded = self._load([indices[n] for n in missing])
        except BaseException:
            self.pool.free([p for p in pages if p is not None])
            raise
        for n, page in zip(missing, loaded, strict=True):
            pages[n] = page
        return [p for p in pages if p is not None]

    def _load(self, indices: list[int]) -> list[int]:
        keys = [self.keys[i] for i in indices]
        payloads = self.store.get_many(keys, [self.digests[i] for i in indices])
        if any(p is None for p in payloads):
            raise StoreError(f"{sum(p is None for p in payloads)} cached page(s) of this context are gone "
                             f"from every tier (raise STRATA_KV_DISK_BYTES)")
        if not self.pool.can_allocate(len(indices)):
            raise MemoryError(f"the KV pool cannot hold {len(indices)} selected pages "
                              f"(raise STRATA_KV_DEVICE_BYTES or lower the attention budget)")
        pages = self.pool.allocate(len(indices))
        for page, payload, key in zip(pages, payloads, keys, strict=True):
            assert payload is not None
            if not self.decode_into(page, payload):
                self.pool.free(pages)
                raise StoreError("a cached page has the wrong size for this KV layout")
            self.pool.register(page, key)
        self.loaded += len(indices)
        return pages
