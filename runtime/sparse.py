"""Sparse attention over KV pages: Quest page summaries, page selection, attention over the selection.

Every full page carries, per layer and KV head, the elementwise box its keys lie in, kept as a
centre c and a radius r (Quest's min/max, rewritten). For any query q and any key k of the page,
q.k <= q.c + |q|.r, which is one matmul against [c | r] with [q | |q|]: scoring every page of a
long context costs one small GEMM per layer, not a pass over the keys.

For a group of queries that share a page (a decode step, or one page's worth of a prefill chunk)
each KV head takes its top pages by that bound within the token budget, plus the first page (the
attention sink) and the last pages (the local window), and attends exactly over them. The heads of
a layer read the union of their selections once; a mask keeps each head to its own pages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

SINK_PAGES = 1  # the first page soaks up attention mass whatever the query (StreamingLLM's sink)
LOCAL_PAGES = 4  # the most recent full pages, always attended (the local window)


@dataclass(slots=True, frozen=True)
class SparsePolicy:
    """How many pages a query may attend: `budget` tokens of top-ranked pages, plus sink and window."""

    budget: int
    page_size: int
    sink_pages: int = SINK_PAGES
    local_pages: int = LOCAL_PAGES
    radius_weight: float = 1.0  # 1: Quest's upper bound; below 1, a tighter estimate that may undershoot

    def __post_init__(self) -> None:
        if self.budget < 0 or self.page_size <= 0 or self.sink_pages < 0 or self.local_pages < 0:
            raise ValueError("attention budget, page size, sink and local window must not be negative")

    @property
    def max_pages(self) -> int:
        """Pages one query attends at most, beyond its own (partial) page."""
        return self.budget // self.page_size + self.sink_pages + self.local_pages

    def is_sparse(self, past_pages: int) -> bool:
        """Whether a query after `past_pages` full pages attends a selection rather than all of them."""
        return self.budget > 0 and past_pages > self.max_pages


def bounds_from_minmax(kmin: torch.Tensor, kmax: torch.Tensor) -> torch.Tensor:
    """Centre and radius [..., 2, D] (float32) of the boxes [kmin, kmax], rounded outward."""
    kmin, kmax = kmin.float(), kmax.float()
    centre = (kmin + kmax) * 0.5
    radius = torch.maximum(kmax - centre, centre - kmin)
    # The subtraction rounds to nearest; one ulp up keeps the box around every key.
    radius = torch.nextafter(radius, torch.full_like(radius, float("inf")))
    return torch.stack((centre, radius), dim=-2)


def key_bounds(keys: torch.Tensor) -> torch.Tensor:
    """Bounds [n, H, 2, D] of pages of keys [n, P, H, D] (float32, as stored)."""
    return bounds_from_minmax(keys.amin(dim=1), keys.amax(dim=1))


class PageSummaries:
    """One sequence's page bounds, resident and layer-major: [layers, KV heads, pages, centre | radius].

    Scoring reads every page of a layer at every step (at 1M tokens, 16K pages x 8 layers), so the
    layout is contiguous per layer and, by default, bfloat16: half the bytes of float32, scored by
    a C++ kernel (runtime/csrc/page_scores.cpp) that widens each value as it reads it. A bfloat16 box still contains
    the float32 one: the radius grows by the centre's rounding and is rounded up. Only the score
    itself is then rounded (to bfloat16, ~0.4%), which reorders pages of nearly equal bound.
    """

    def __init__(self, num_layers: int, num_kv_heads: int, head_dim: int,
                 dtype: torch.dtype = torch.bfloat16) -> None:
        self.data = torch.empty((num_layers, num_kv_heads, 0, 2 * head_dim), dtype=dtype)
        self.head_dim = head_dim

    @property
    def nbytes(self) -> int:
        return self.data.numel() * self.data.element_size()

    def reserve(self, pages: int) -> None:
        """Room for `pages` pages (grows by doubling, so appending stays amortised O(1))."""
        have = self.data.shape[2]
        if pages <= have:
            return
        grown = self.data.new_zeros((*self.data.shape[:2], max(pages, 2 * have), self.data.shape[3]))
        grown[:, :, :have] = self.data
        self.data = grown

    def _resident(self, bounds: torch.Tensor) -> torch.Tensor:
        """Bounds [..., 2, D] float32 -> [..., 2D] in the resident dtype, the box never shrinking."""
        centre, radius = bounds[..., 0, :], bounds[..., 1, :]
        if self.data.dtype != torch.float32:
            rounded = centre.to(self.data.dtype)
            radius = (radius + (centre - rounded.float()).abs()) * (1 + 2.0 ** -7)  # > one rounding step
            centre = rounded.float()
        return torch.cat((centre, radius), dim=-1).to(self.data.dtype)

    def set_layer(self, layer: int, first: int, bounds: torch.Tensor) -> None:
        """Bounds [n, H, 2, D] of pages first..first+n at one layer."""
        self.reserve(first + bounds.shape[0])
        self.data[layer, :, first:first + bounds.shape[0]] = self._resident(bounds).transpose(0, 1)

    def set_pages(self, first: int, bounds: torch.Tensor) -> None:
        """Bounds [n, L, H, 2, D] of pages first..first+n at every layer."""
        self.reserve(first + bounds.shape[0])
        self.data[:, :, first:first + bounds.shape[0]] = self._resident(bounds).permute(1, 2, 0, 3)

    def scores(self, layer: int, pages: int, q: torch.Tensor, radius_weight: float = 1.0) -> torch.Tensor:
        """Quest upper bounds [Hkv, G, pages] of queries q [Hkv, G, D] on the first `pages` pages.

        With `radius_weight` w < 1: q.c + w |q|.r, an estimate between the box centre and the bound.
        """
        box = self.data[layer, :, :pages]  # [H, n, 2D]: centre and radius side by side
        qq = torch.cat((q, q.abs() * radius_weight), dim=-1)  # [H, G, 2D]
        op = _page_scores_op() if box.dtype == torch.bfloat16 and box.device.type == "cpu" else None
        if op is not None:
            return op(qq.float(), box)
        return torch.matmul(qq.to(self.data.dtype), box.transpose(1, 2)).float()


def _page_scores_op() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
    """The C++ page scorer (runtime/csrc/page_scores.cpp), or None where the kernels did not build.

    torch's bfloat16 matmul takes a slow path on CPUs without bfloat16 units: scoring 16K pages x
    8 layers (one decode step at 1M tokens) took 25.4 ms on such a CPU (AVX2), against 19.4 ms for
    float32 boxes (twice the bytes) and 8.4 ms in the kernel (bench/sparse_kernels.py, `scoring`).
    """
    from runtime import fp8

    return torch.ops.strata_sparse.page_scores if fp8.kernel_available() else None


@dataclass(slots=True)
class Selection:
    """Pages chosen for one group of queries: their union (sorted) and which heads use each."""

    pages: torch.Tensor  # [U] page indices, ascending
    member: torch.Tensor  # [Hkv, U] bool


def select_pages(bounds: torch.Tensor, policy: SparsePolicy) -> Selection:
    """Top pages per KV head from bounds [Hkv, G, n], always with the sink and the local window.

    Query heads of a group differ in scale, so each head's bounds are taken relative to its own
    best page before the group's maximum ranks a page for the KV head they share.
    """
    heads, _, n = bounds.shape
    k = min(policy.max_pages, n)
    rel = (bounds - bounds.amax(dim=-1, keepdim=True)).amax(dim=1)  # [Hkv, n]
    rel[:, :policy.sink_pages] = float("inf")
    if policy.local_pages:
        rel[:, max(0, n - policy.local_pages):] = float("inf")
    top = rel.topk(k, dim=-1).indices
    member = torch.zeros((heads, n), dtype=torch.bool)
    member.scatter_(1, top, True)
    pages = torch.nonzero(member.any(dim=0)).flatten()
    return Selection(pages, member[:, pages])


def select_all(heads: int, n: int) -> Selection:
    return Selection(torch.arange(n), torch.ones((heads, n), dtype=torch.bool))


def attend_selection(q: torch.Tensor, sel_k: torch.Tensor, sel_v: torch.Tensor, member: torch.Tensor,
                     own_k: torch.Tensor, own_v: torch.Tensor, scale: float, page_size: int,
                     need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Exact attention of q [m, Hq, D] over selected pages and, causally, its own page.

    sel_k/v [U * P, Hkv, D] hold the selected pages (member [Hkv, U] says which head may look at
    which); own_k/v [o, Hkv, D] are the own page's positions up to the last query, the queries
    being its last m. Each KV head gathers its own pages (in page order) and attends them alone,
    in float32: with 2 KV heads the union is up to twice what one head selected, and masking it
    would score and convert every page for both. Returns the output [m, Hq, D] and, with
    `need_weights`, the weights [Hkv, G * m, U * P + o] (zero on the pages a head did not select).
    """
    m, heads, dim = q.shape
    kv_heads = sel_k.shape[1]
    group = heads // kv_heads
    union = member.shape[1]
    grouped = q.permute(1, 0, 2).reshape(kv_heads, group * m, dim).float()
    pages_k = sel_k.reshape(union, page_size, kv_heads, dim)
    pages_v = sel_v.reshape(union, page_size, kv_heads, sel_v.shape[-1])
    o = own_k.shape[0]
    causal = torch.ones((m, o), dtype=torch.bool).tril(diagonal=o - m).repeat(group, 1) if m > 1 else None
    full = torch.zeros((kv_heads, group * m, union * page_size + o)) if need_weights else None
    outs = []
    for h in range(kv_heads):
        mine = torch.nonzero(member[h]).flatten()
        if mine.numel() == union:
            k, v = sel_k[:, h].float(), sel_v[:, h].float()
        else:
            k = pages_k[:, :, h].index_select(0, mine).reshape(-1, dim).float()
            v = pages_v[:, :, h].index_select(0, mine).flatten(0, 1).float()
        own = torch.mm(grouped[h], own_k[:, h].float().t())
        if causal is not None:
            own.masked_fill_(~causal, float("-inf"))
        weights = torch.softmax(torch.cat((torch.mm(grouped[h], k.t()), own), dim=-1) * scale, dim=-1)
        n = k.shape[0]
        outs.append(torch.mm(weights[:, :n], v) + torch.mm(weights[:, n:], own_v[:, h].float()))
        if full is not None:
            at = (mine[:, None] * page_size + torch.arange(page_size)).flatten()
            full[h][:, at] = weights[:, :n]
            full[h][:, union * page_size:] = weights[:, n:]
    out = torch.stack(outs)
    return out.reshape(heads, m, -1).permute(1, 0, 2).to(q.dtype), full


def query_segments(start: int, n: int, page_size: int) -> list[tuple[int, int]]:
    """Split query offsets 0..n (positions start..start+n) at page boundaries."""
    out, a = [], 0
    while a < n:
        b = min(n, (start + a) // page_size * page_size + page_size - start)
        out.append((a, b))
        a = b
    return out
