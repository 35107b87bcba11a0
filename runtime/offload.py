"""Pages that live outside the pool: brought back on demand, persisted before they are dropped.

A long sequence lets go of the pages it is not attending (SparseKVCache.trim); they stay in the
pool as idle cached pages until the pool needs the room. Two rules keep that safe:

- persist before evict: the pool asks `Persistence.before_evict` before dropping a keyed page.
  A page handed to the store's background writer but not confirmed in LMDB is flushed, and
  written synchronously if the writer skipped it (its queue was full). Without a persistent tier
  the sequence never lets go of pages (no StoredPages source), so nothing is lost.
- fetch by key: StoredPages finds a page in the pool's cache first, then in host RAM / LMDB /
  Redis (one get_many per batch), and loads it into a fresh pool page.
- fetch by layer: attention selects pages per layer, so StoredPages.gather_layer reads one layer
  of each page it lacks (a section of the stored record, checked alone) into the LayerCache, and
  never a whole page for one of its layers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kvstore.tiers import TieredStore
from runtime.kv import PagePool, copy_rows
from runtime.layer_cache import LayerCache
from runtime.page_codec import PageCodec
from strata.errors import StoreError


class Persistence:
    """Which keyed pool pages have reached a persistent tier; the pool's flush-before-evict hook."""

    def __init__(self, pool: PagePool, store: TieredStore, encode: Callable[[int], tuple[bytes, bytes]],
                 sections: int = 1) -> None:
        self.pool, self.store, self.encode, self.sections = pool, store, encode, sections
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
                if not lmdb.put(key, digest, payload, summary, self.sections):
                    continue
                self.sync_writes += 1
            del self.pending[key]


class StoredPages:
    """A sequence's pages by index, found in the pool's cache or loaded from the store."""

    def __init__(self, pool: PagePool, store: TieredStore, keys: list[bytes], digests: list[bytes],
                 codec: PageCodec, layers: LayerCache) -> None:
        self.pool, self.store = pool, store
        self.keys, self.digests = keys, digests
        self.codec, self.layers = codec, layers
        self.loaded = 0  # pages read from the store whole (not found in the pool)
        self.loaded_layers = 0  # single layers of pages read from the store (not in the pool or the cache)

    def gather_layer(self, layer: int, indices: list[int], data: torch.Tensor, scales: torch.Tensor,
                     rows: list[int]) -> None:
        """One layer of sequence pages `indices`, as stored, into rows `rows` (dim 1) of data
        [planes, n, P, H, D] and scales [planes, n, H].

        Taken from the pool's cached pages, else the layer cache, else one section per page from
        the store (one get_sections call).
        """
        pooled: list[tuple[int, int]] = []  # (row, pool page)
        cached: list[tuple[int, int]] = []  # (row, layer-cache slot)
        missing: list[tuple[int, int]] = []  # (row, sequence page)
        for row, i in zip(rows, indices, strict=True):
            page = self.pool.keyed.get(self.keys[i])
            if page is not None:
                pooled.append((row, page))
                continue
            slot = self.layers.find(self.keys[i], layer)
            if slot is None:
                missing.append((row, i))
            else:
                cached.append((row, slot))
        if pooled:
            self.pool.gather_into(layer, [p for _, p in pooled], data, scales, _rows(pooled, data))
        if cached:
            self.layers.gather_into([s for _, s in cached], data, scales, _rows(cached, data))
        if missing:
            loaded_data, loaded_scales = self._load_layer(layer, [i for _, i in missing], {s for _, s in cached})
            at = _rows(missing, data)
            copy_rows(data, at, loaded_data.to(data.device).transpose(0, 1))
            scales.index_copy_(1, at, loaded_scales.to(data.device).transpose(0, 1))

    def _load_layer(self, layer: int, indices: list[int], keep: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One layer of pages read from the store: data [n, planes, P, H, D], scales [n, planes, H]."""
        keys = [self.keys[i] for i in indices]
        sections = self.store.get_sections(keys, [self.digests[i] for i in indices], layer)
        if any(s is None for s in sections):
            gone = next(i for i, s in zip(indices, sections, strict=True) if s is None)
            raise StoreError(f"{sum(s is None for s in sections)} cached page(s) of this context are gone from "
                             f"every tier (page {gone} first; raise STRATA_KV_DISK_BYTES)")
        decoded = self.codec.decode_layers([s for s in sections if s is not None])
        if decoded is None:
            raise StoreError("a cached page has the wrong size for this KV layout")
        self.layers.insert(keys, layer, *decoded, keep)
        self.loaded_layers += len(indices)
        return decoded

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
        payloads = self.store.get_many(keys, [self.digests[i] for i in indices], self.codec.sections)
        if any(p is None for p in payloads):
            raise StoreError(f"{sum(p is None for p in payloads)} cached page(s) of this context are gone "
                             f"from every tier (raise STRATA_KV_DISK_BYTES)")
        if not self.pool.can_allocate(len(indices)):
            raise MemoryError(f"the KV pool cannot hold {len(indices)} selected pages "
                              f"(raise STRATA_KV_DEVICE_BYTES or lower the attention budget)")
        pages = self.pool.allocate(len(indices))
        for page, payload, key in zip(pages, payloads, keys, strict=True):
            assert payload is not None
            if not self.codec.decode_into(page, payload):
                self.pool.free(pages)
                raise StoreError("a cached page has the wrong size for this KV layout")
            self.pool.register(page, key)
        self.loaded += len(indices)
        return pages


def _rows(pairs: list[tuple[int, int]], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([row for row, _ in pairs], dtype=torch.long, device=like.device)
