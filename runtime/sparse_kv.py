"""A sequence's KV with sparse attention: resident page summaries, pages that need not be resident.

SparseKVCache is a KVCache whose queries, once the context outgrows the attention budget, attend
only the pages their summaries select (runtime.sparse). Full pages that have a content key and
lie outside the sink and the local window can be let go (trim): the pool keeps them as idle
cached pages, evictable once persisted, and a PageSource brings them back when selected. What
stays resident per sequence is then its summaries, the sink, the window and the partial tail.
"""

from __future__ import annotations

from typing import Protocol

import torch

from runtime.kv import KVCache, PagePool
from runtime.sparse import (
    PageSummaries,
    Selection,
    SparsePolicy,
    attend_selection,
    key_bounds,
    query_segments,
    select_all,
    select_pages,
)

NOT_HELD = -1  # page_ids entry of a page this sequence does not hold in the pool


class PageSource(Protocol):
    def acquire(self, indices: list[int]) -> list[int]:
        """Pool pages (one reference each, for the caller to free) holding the sequence's pages `indices`."""
        ...

    def gather_layer(self, layer: int, indices: list[int], data: torch.Tensor, scales: torch.Tensor,
                     rows: list[int]) -> None:
        """One layer of pages `indices`, as stored, into rows `rows` of data [planes, n, P, H, D] and
        scales [planes, n, H]."""
        ...


class SparseKVCache(KVCache):
    """KVCache plus page summaries, page selection and pages fetched on demand."""

    def __init__(self, pool: PagePool, max_tokens: int, policy: SparsePolicy,
                 source: PageSource | None = None) -> None:
        super().__init__(pool, max_tokens)
        if policy.page_size != self.layout.page_size:
            raise ValueError("the sparse policy's page size must be the pool's")
        self.policy = policy
        self.source = source
        self.summaries = PageSummaries(self.layout.num_layers, self.layout.num_kv_heads, self.layout.head_dim)
        self._trimmed_to = policy.sink_pages  # pages below this (past the sink) were offered to trim()
        self.fetched_pages = 0  # pages brought back from the source: the cost of not holding them

    @property
    def held_pages(self) -> int:
        return sum(1 for p in self.page_ids if p != NOT_HELD)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               scale: float, window: int | None = None) -> torch.Tensor:
        last_page = (self.length + q.shape[0] - 1) // self.layout.page_size
        if window is not None or not self.policy.is_sparse(last_page):
            return super().attend(layer, q, k, v, scale, window)
        page = self.layout.page_size
        base = self.full_pages * page  # position of recent_k[0]
        tail_len = self.length - base
        recent_k = torch.cat((self.tail[layer, 0, :tail_len], k.to(self.tail.dtype)))
        recent_v = torch.cat((self.tail[layer, 1, :tail_len], v.to(self.tail.dtype)))
        self._store(layer, recent_k, recent_v)
        out = torch.empty_like(q)
        for a, b in query_segments(self.length, q.shape[0], page):
            j = (self.length + a) // page  # the segment's page; pages 0..j-1 are full
            own = slice(j * page - base, self.length + b - base)
            out[a:b] = self._attend_segment(layer, q[a:b], j, recent_k[own], recent_v[own], scale)
        return out

    def _attend_segment(self, layer: int, q: torch.Tensor, past: int, own_k: torch.Tensor,
                        own_v: torch.Tensor, scale: float) -> torch.Tensor:
        sel = self._select(layer, q, past)
        if sel.pages.numel():
            sel_k, sel_v = self._read_selection(layer, sel.pages.tolist())
        else:
            sel_k, sel_v = own_k[:0], own_v[:0]
        track = self.attention_mass is not None and layer == self.layout.num_layers - 1 and q.shape[0] == 1
        out, weights = attend_selection(q, sel_k, sel_v, sel.member, own_k, own_v, scale, self.layout.page_size,
                                        need_weights=track)
        if weights is not None:
            self._track_selection(weights, sel, past)
        return out

    def _select(self, layer: int, q: torch.Tensor, past: int) -> Selection:
        """Pages 0..past-1 that queries q [m, Hq, D] attend: ranked by the bound of their mean query."""
        heads = self.layout.num_kv_heads
        if not self.policy.is_sparse(past):
            return select_all(heads, past)
        grouped = q.float().mean(dim=0).reshape(heads, -1, q.shape[-1])
        return select_pages(self.summaries.scores(layer, past, grouped, self.policy.radius_weight),
                            self.policy)

    def _read_selection(self, layer: int, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V [n * P, Hkv, D] of sequence pages `indices` at one layer, in that order.

        Held pages come from the pool; pages let go of come from the source one layer at a time.
        Every page lands in its own row, so warm and cold runs attend in page order, bit for bit.
        """
        committed = len(self.page_ids)
        ids = [self.page_ids[i] if i < committed else self._new_pages[i - committed] for i in indices]
        away = [n for n, p in enumerate(ids) if p == NOT_HELD]
        if not away:
            return self.pool.read(layer, ids)
        if self.source is None:
            raise RuntimeError("a page was let go without a source to bring it back")
        layout = self.layout
        data = torch.empty((layout.planes, len(ids), layout.page_size, layout.num_kv_heads, layout.head_dim),
                           dtype=self.pool.data.dtype, device=self.pool.device)
        scales = torch.empty((layout.planes, len(ids), layout.num_kv_heads), device=self.pool.device)
        held = [n for n, p in enumerate(ids) if p != NOT_HELD]
        if held:
            rows = torch.tensor(held, dtype=torch.long, device=self.pool.device)
            self.pool.gather_into(layer, [ids[n] for n in held], data, scales, rows)
        self.source.gather_layer(layer, [indices[n] for n in away], data, scales, away)
        self.fetched_pages += len(away)
        return self.pool.to_compute(data, scales)

    def _store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        super()._store(layer, k, v)
        if self._new_pages:
            bounds = key_bounds(self.pool.keys_f32(layer, self._new_pages))
            self.summaries.set_layer(layer, len(self.page_ids), bounds)

    def _track_selection(self, weights: torch.Tensor, sel: Selection, past: int) -> None:
        assert self.attention_mass is not None
        page = self.layout.page_size
        mass = weights.float().mean(dim=(0, 1))
        split = sel.pages.numel() * page
        positions = (sel.pages[:, None] * page + torch.arange(page)).flatten()
        own = torch.arange(past * page, past * page + mass.shape[0] - split)
        positions = torch.cat((positions, own))
        keep = positions < self.attention_mass.shape[0]
        self.attention_mass.index_add_(0, positions[keep], mass[keep])

    def adopt(self, pages: list[int]) -> None:
        """Start from cached pages already in the pool; their summaries are computed from the pool."""
        super().adopt(pages)
        for layer in range(self.layout.num_layers):
            if pages:
                self.summaries.set_layer(layer, 0, key_bounds(self.pool.keys_f32(layer, pages)))

    def adopt_summaries(self, bounds: torch.Tensor, held: dict[int, int]) -> None:
        """Start from cached pages known by their summaries [n, L, H, 2, D] alone.

        `held` maps the page indices already in the pool (one reference each) to their pool pages;
        the rest stay where they are until a query selects them.
        """
        if self.length or self.page_ids:
            raise RuntimeError("adopt_summaries() needs an empty sequence")
        n = bounds.shape[0]
        self.summaries.set_pages(0, bounds)
        self.page_ids = [held.get(i, NOT_HELD) for i in range(n)]
        self.length = n * self.layout.page_size
        self._trimmed_to = max(self.policy.sink_pages, n - self.policy.local_pages)

    def trim(self) -> None:
        """Let go of keyed pages outside the sink and the local window; the pool keeps them cached.

        Only keyed pages are let go: the source finds them again by key, and the pool persists a
        keyed page before evicting it.
        """
        if self.source is None or not self.policy.is_sparse(self.full_pages):
            return
        upto = self.full_pages - self.policy.local_pages
        released = []
        for i in range(self._trimmed_to, upto):
            page = self.page_ids[i]
            if page != NOT_HELD and page in self.pool.key_of:
                released.append(page)
                self.page_ids[i] = NOT_HELD
        self._trimmed_to = max(self._trimmed_to, upto)
        self.pool.free(released)

    def hold(self, indices: list[int]) -> None:
        """Bring pages `indices` into the pool and keep them there for this sequence (the window)."""
        wanted = [i for i in indices if self.page_ids[i] == NOT_HELD]
        if wanted:
            assert self.source is not None
            for i, page in zip(wanted, self.source.acquire(wanted), strict=True):
                self.page_ids[i] = page

    def release(self) -> None:
        self.pool.free([p for p in self.page_ids if p != NOT_HELD])
        self.page_ids, self.length = [], 0
