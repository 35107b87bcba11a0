"""The prefix cache: full KV pages found by content key in the pool, host RAM, LMDB or Redis.

A prompt's full pages are keyed by a chain over their token ids (and media hashes) rooted in
the model fingerprint, KV layout and tenant salt (kvstore.keys). Before prefill, the longest
run of leading pages found in any tier is adopted; after each forward pass, newly filled pages
are registered in the pool and handed to the tiered store, which writes them behind the caller.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from kvstore.keys import chain_pages, root_key
from kvstore.tiers import TieredStore, open_store
from runtime.kv import KVCache, PagePool
from runtime.layer_cache import LayerCache
from runtime.offload import Persistence, StoredPages
from runtime.page_codec import PageCodec
from runtime.sparse_kv import SparseKVCache
from strata.settings import Settings

# LMDB allows one open environment per path and process: engines in one process share a store.
_stores: dict[tuple, tuple[TieredStore, int]] = {}
_stores_lock = threading.Lock()


def acquire_store(settings: Settings) -> TieredStore:
    """The process's tiered store for these settings, opened on first use and reference-counted."""
    ident = (str(settings.home), settings.kv_host_bytes, settings.kv_disk_bytes, settings.kv_redis_url)
    with _stores_lock:
        store, refs = _stores.get(ident) or (open_store(settings), 0)
        _stores[ident] = (store, refs + 1)
        return store


def release_store(store: TieredStore) -> None:
    """Drop one reference; the last one flushes queued writes and closes the store."""
    with _stores_lock:
        for ident, (held, refs) in list(_stores.items()):
            if held is store:
                if refs > 1:
                    _stores[ident] = (held, refs - 1)
                    held.flush()
                    return
                del _stores[ident]
        store.close()


@dataclass(slots=True)
class SequenceKeys:
    """Keys and token digests of one sequence's full pages, and how many are already stored."""

    keys: list[bytes]
    digests: list[bytes]
    stored: int = 0
    restored: int = 0
    media: list[tuple[int, int, bytes]] = field(default_factory=list)


class PrefixCache:
    """Finds and saves the full pages of sequences run by one engine."""

    def __init__(self, pool: PagePool, store: TieredStore | None, fingerprint: bytes,
                 layer_cache_bytes: int = 0) -> None:
        self.pool, self.store = pool, store
        self.codec = PageCodec(pool)
        self.fingerprint = fingerprint
        self.page_size = pool.layout.page_size
        self.persistence = (Persistence(pool, store, self.codec.encode, self.codec.sections)
                            if store is not None else None)
        # Single layers of pages a sparse sequence let go of, fetched for the layer that selects them.
        self.layers = LayerCache(pool.layout, layer_cache_bytes, device=pool.device)

    def detach(self) -> None:
        """Forget the store (it is being closed): pages are no longer persisted or fetched."""
        self.store = self.persistence = None
        self.pool.before_evict = None

    def source(self, keys: SequenceKeys) -> StoredPages | None:
        """Where a sparse sequence finds the pages it let go; None without a persistent tier."""
        if self.store is None or self.persistence is None or not self.persistence.durable:
            return None
        return StoredPages(self.pool, self.store, keys.keys, keys.digests, self.codec, self.layers)

    def keys_for(self, ids: Sequence[int], media: Sequence[tuple[int, int, bytes]],
                 tenant: str) -> SequenceKeys:
        salt = b""
        if tenant:
            salt = hashlib.blake2b(tenant.encode(), digest_size=16, person=b"strata-tenant").digest()
        root = root_key(self.fingerprint, self.pool.layout.storage, self.page_size, salt)
        keys, digests = chain_pages(root, ids, self.page_size, media)  # one conversion of the ids
        return SequenceKeys(keys, digests, media=list(media))

    def restore(self, kv: KVCache, keys: SequenceKeys, limit_pages: int) -> int:
        """Adopt the longest cached run of leading pages (at most `limit_pages`); tokens restored."""
        if isinstance(kv, SparseKVCache) and kv.source is not None and kv.policy.is_sparse(limit_pages):
            restored = self._restore_summaries(kv, keys, limit_pages)
            if restored:
                return restored
        pages: list[int] = []
        for key in keys.keys[:limit_pages]:
            page = self.pool.lookup(key)
            if page is None:
                break
            pages.append(page)
        pages += self._from_store(keys, len(pages), limit_pages)
        kv.adopt(pages)
        keys.stored = keys.restored = len(pages)
        return len(pages) * self.page_size

    def _restore_summaries(self, kv: SparseKVCache, keys: SequenceKeys, limit_pages: int) -> int:
        """Adopt the cached prefix by its summaries alone: pages load when attention selects them.

        Only the sink and the local window are loaded now. Returns 0 (adopting nothing) when the
        cached run is too short for sparse attention, so the caller restores it whole.
        """
        summaries: list[bytes] = []
        for key in keys.keys[:limit_pages]:
            page = self.pool.keyed.get(key)
            raw = self.codec.summary(page) if page is not None else self._stored_summary(key)
            if raw is None:
                break
            summaries.append(raw)
        n = len(summaries)
        if not kv.policy.is_sparse(n):
            return 0
        kv.adopt_summaries(self.codec.bounds(summaries), {})
        policy = kv.policy
        kv.hold(list(range(policy.sink_pages)) + list(range(n - policy.local_pages, n)))
        keys.stored = keys.restored = n
        return n * self.page_size

    def _stored_summary(self, key: bytes) -> bytes | None:
        if self.store is None:
            return None
        raw = self.store.get_summary(key)
        return raw if raw is not None and len(raw) == self.codec.summary_bytes else None

    def _from_store(self, keys: SequenceKeys, start: int, limit: int) -> list[int]:
        """Pages start.. from the host/LMDB/Redis tiers, loaded into fresh pool pages."""
        wanted = keys.keys[start:limit]
        if self.store is None or not wanted or not self.pool.can_allocate(len(wanted)):
            return []
        payloads = self.store.get_many(wanted, keys.digests[start:limit], self.codec.sections)
        hits = next((i for i, p in enumerate(payloads) if p is None), len(payloads))
        if not hits:
            return []
        pages = self.pool.allocate(hits)
        loaded = 0
        for page, payload, key in zip(pages, payloads[:hits], wanted, strict=False):
            if payload is None or not self.codec.decode_into(page, payload):
                break
            self.pool.register(page, key)
            loaded += 1
        self.pool.free(pages[loaded:])
        return pages[:loaded]

    def save(self, kv: KVCache, keys: SequenceKeys) -> None:
        """Register and persist the sequence's full pages that have keys and are not stored yet."""
        upto = min(kv.full_pages, len(keys.keys))
        for i in range(keys.stored, upto):
            page, key = kv.page_ids[i], keys.keys[i]
            self.pool.register(page, key)
            if self.store is not None:
                payload, summary = self.codec.encode(page)
                self.store.put(key, keys.digests[i], payload, summary, self.codec.sections)
                if self.persistence is not None:
                    self.persistence.written(key, page, keys.digests[i])
        keys.stored = max(keys.stored, upto)
