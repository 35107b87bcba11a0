"""The paged KV cache: a pool of fixed-size pages shared by sequences, and one sequence's view of it.

A page holds `page_size` consecutive positions of one sequence, for every layer and KV head.
Only full pages live in the pool (quantised to the storage dtype); the partial tail page of a
sequence stays in the compute dtype until it fills. That keeps FP8 scales per page per head
fixed once written, and makes the full-page boundary the unit that kvstore/ hashes and persists.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from runtime.config import ModelConfig
from strata.errors import PromptTooLong

FP8_MAX = 448.0
STORAGE_DTYPES = {"fp8": torch.float8_e4m3fn, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(slots=True, frozen=True)
class KVLayout:
    """The shape of one page, and how it is stored."""

    num_layers: int
    num_kv_heads: int
    head_dim: int
    page_size: int
    storage: str  # "fp8" | "bf16" | "fp32"
    compute_dtype: torch.dtype
    # MLA (DeepSeek): a page holds one plane, the latent, which attention reads as key and value.
    shared_kv: bool = False

    @classmethod
    def for_model(cls, cfg: ModelConfig, page_size: int, storage: str, compute_dtype: torch.dtype) -> KVLayout:
        """The layout a model's KV takes: per KV head, or (MLA) one latent plane of one head."""
        return cls(cfg.num_hidden_layers, cfg.num_key_value_heads, cfg.head_dim, page_size, storage, compute_dtype,
                   shared_kv=cfg.latent_kv)

    def __post_init__(self) -> None:
        if self.storage not in STORAGE_DTYPES:
            raise ValueError(f"KV storage '{self.storage}' is not one of {sorted(STORAGE_DTYPES)}")
        if self.page_size <= 0:
            raise ValueError("page_size must be positive")

    @property
    def planes(self) -> int:
        """Stored tensors per layer: K and V, or the one shared latent."""
        return 1 if self.shared_kv else 2

    @property
    def page_bytes(self) -> int:
        """Bytes of one page across all layers, K and V (or the latent), scales included."""
        elems = self.page_size * self.num_kv_heads * self.head_dim
        per_layer = self.planes * elems * STORAGE_DTYPES[self.storage].itemsize
        if self.storage == "fp8":
            per_layer += self.planes * self.num_kv_heads * 4
        return per_layer * self.num_layers


class PagePool:
    """Fixed-size KV pages for every layer, handed out from a free list; grows up to a byte budget.

    This is the device tier of the prefix cache: a full page with a content key stays here after
    its sequence ends (reference count 0, in LRU order) and is evicted only when a new page needs
    the room. A sequence that finds its prefix here shares those pages without copying them.
    """

    def __init__(self, layout: KVLayout, max_bytes: int, initial_pages: int = 64,
                 device: str | torch.device = "cpu") -> None:
        self.layout = layout
        self.device = torch.device(device)
        self.max_pages = max(1, max_bytes // layout.page_bytes)
        self.capacity = 0
        self.free_ids: list[int] = []
        self.refs: dict[int, int] = {}
        self.keyed: OrderedDict[bytes, int] = OrderedDict()  # key -> page; idle ones are evictable
        self.key_of: dict[int, bytes] = {}
        # Asked before an idle keyed page is dropped; False keeps it. The prefix cache answers,
        # persisting the page first if it has not reached a persistent tier yet (flush-before-evict).
        self.before_evict: Callable[[int, bytes], bool] | None = None
        shape = (layout.num_layers, layout.planes, 0, layout.page_size, layout.num_kv_heads, layout.head_dim)
        self.data = torch.empty(shape, dtype=STORAGE_DTYPES[layout.storage], device=self.device)
        self.scales = torch.ones((layout.num_layers, layout.planes, 0, layout.num_kv_heads), dtype=torch.float32,
                                 device=self.device)
        self._grow(min(initial_pages, self.max_pages))

    @property
    def used_pages(self) -> int:
        return self.capacity - len(self.free_ids)

    @property
    def cached_pages(self) -> int:
        return len(self.keyed)

    @property
    def resident_bytes(self) -> int:
        return self.used_pages * self.layout.page_bytes

    def _idle_keyed(self) -> int:
        return sum(1 for p in self.keyed.values() if not self.refs.get(p))

    def can_allocate(self, n: int) -> bool:
        room = len(self.free_ids) + (self.max_pages - self.capacity)
        return n <= room or n <= room + self._idle_keyed()

    def allocate(self, n: int) -> list[int]:
        """Take `n` pages (referenced once); call can_allocate first."""
        if not self.can_allocate(n):
            raise MemoryError(f"KV page pool exhausted: need {n}, have {len(self.free_ids)}")
        if n > len(self.free_ids):
            self._grow(min(self.max_pages, max(2 * self.capacity, self.capacity + n)))
        while n > len(self.free_ids):
            self._evict_one()
        taken, self.free_ids = self.free_ids[:n], self.free_ids[n:]
        for page in taken:
            self.refs[page] = 1
        return taken

    def free(self, page_ids: list[int]) -> None:
        """Drop one reference to each page; keyed pages stay cached, the rest return to the free list."""
        released = []
        for page in page_ids:
            self.refs[page] -= 1
            if not self.refs[page]:
                del self.refs[page]
                if page not in self.key_of:
                    released.append(page)
        self.free_ids.extend(released)
        self.free_ids.sort()

    def share(self, page_ids: list[int]) -> None:
        """One more reference to each page (a second sequence reading the same pages)."""
        for page in page_ids:
            self.refs[page] += 1

    def lookup(self, key: bytes) -> int | None:
        """The resident page holding `key`, referenced for the caller; None on a miss."""
        page = self.keyed.get(key)
        if page is not None:
            self.keyed.move_to_end(key)
            self.refs[page] = self.refs.get(page, 0) + 1
        return page

    def register(self, page: int, key: bytes) -> None:
        """Name a full page by its content key so later sequences can share it."""
        if key in self.keyed or page in self.key_of:
            return
        self.keyed[key] = page
        self.key_of[page] = key

    def _evict_one(self) -> None:
        for key, page in self.keyed.items():
            if not self.refs.get(page) and (self.before_evict is None or self.before_evict(page, key)):
                del self.keyed[key], self.key_of[page]
                self.free_ids.append(page)
                return
        raise MemoryError("KV page pool exhausted: every cached page is in use")

    def _grow(self, pages: int) -> None:
        extra = pages - self.capacity
        if extra <= 0:
            return
        data = self.data.new_empty((*self.data.shape[:2], extra, *self.data.shape[3:]))
        scales = self.scales.new_ones((*self.scales.shape[:2], extra, self.scales.shape[3]))
        self.data = torch.cat((self.data, data), dim=2)
        self.scales = torch.cat((self.scales, scales), dim=2)
        self.free_ids.extend(range(self.capacity, pages))
        self.capacity = pages

    def write(self, layer: int, page_ids: list[int], k: torch.Tensor, v: torch.Tensor) -> None:
        """Store full pages: k, v [len(page_ids) * page_size, heads, dim] in the compute dtype.

        With a shared plane (MLA) v is k and only k is stored.
        """
        idx = self._index(page_ids)
        for which, x in ((0, k), (1, v))[:self.layout.planes]:
            pages = x.reshape(len(page_ids), self.layout.page_size, *x.shape[1:])
            if self.layout.storage == "fp8":
                amax = pages.abs().amax(dim=(1, 3)).float().clamp(min=1e-12)
                scale = amax / FP8_MAX
                q = (pages.float() / scale[:, None, :, None]).to(torch.float8_e4m3fn)
                # CPU index kernels have no float8 variant; the bytes move as uint8.
                self.data[layer, which].view(torch.uint8).index_copy_(0, idx, q.view(torch.uint8))
                self.scales[layer, which].index_copy_(0, idx, scale)
            else:
                self.data[layer, which].index_copy_(0, idx, pages.to(self.data.dtype))

    def read(self, layer: int, page_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """K and V of `page_ids`, concatenated in order: [n * page_size, heads, dim], compute dtype."""
        scales = self._gather_scales(layer, page_ids) if self.layout.storage == "fp8" else None
        return self.to_compute(self._gather(layer, page_ids), scales)

    def to_compute(self, kv: torch.Tensor, scales: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored pages [planes, n, P, H, D] (+ fp8 scales [planes, n, H]) as K, V [n * P, H, D]."""
        if self.layout.storage == "fp8":
            assert scales is not None
            kv = kv.to(torch.float32) * scales[:, :, None, :, None]
        kv = kv.to(self.layout.compute_dtype)
        n = kv.shape[1] * self.layout.page_size
        keys = kv[0].reshape(n, *kv.shape[3:])
        return keys, (keys if self.layout.shared_kv else kv[1].reshape(n, *kv.shape[3:]))

    def gather_into(self, layer: int, page_ids: list[int], data: torch.Tensor, scales: torch.Tensor,
                    rows: torch.Tensor) -> None:
        """Copy pages' stored data and scales at one layer into rows `rows` (dim 1) of data [planes, n, P,
        H, D] and scales [planes, n, H]."""
        copy_rows(data, rows, self._gather(layer, page_ids))
        scales.index_copy_(1, rows, self._gather_scales(layer, page_ids))

    def _gather(self, layer: int, page_ids: list[int]) -> torch.Tensor:
        first = page_ids[0]
        if page_ids[-1] - first == len(page_ids) - 1 and _is_run(page_ids):
            return self.data[layer, :, first:first + len(page_ids)]
        idx = self._index(page_ids)
        if self.layout.storage == "fp8":
            return self.data[layer].view(torch.uint8).index_select(1, idx).view(self.data.dtype)
        return self.data[layer].index_select(1, idx)

    def keys_f32(self, layer: int, page_ids: list[int]) -> torch.Tensor:
        """Stored keys of `page_ids` at one layer in float32, scales applied: [n, P, H, D]."""
        keys = self._gather(layer, page_ids)[0].to(torch.float32)
        if self.layout.storage == "fp8":
            keys = keys * self._gather_scales(layer, page_ids)[0][:, None, :, None]
        return keys

    def _gather_scales(self, layer: int, page_ids: list[int]) -> torch.Tensor:
        return self.scales[layer].index_select(1, self._index(page_ids))

    def _index(self, page_ids: list[int]) -> torch.Tensor:
        return torch.tensor(page_ids, dtype=torch.long, device=self.device)

    def export_page(self, page_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One page's stored bytes for every layer: data [L, planes, P, H, D] and scales [L, planes, H]."""
        # Always a host copy: the codec and the tiers below the pool work on host bytes.
        return (self.data[:, :, page_id].to("cpu", copy=True), self.scales[:, :, page_id].to("cpu", copy=True))

    def import_page(self, page_id: int, data: torch.Tensor, scales: torch.Tensor) -> None:
        self.data[:, :, page_id] = data.to(self.device)
        self.scales[:, :, page_id] = scales.to(self.device)


def copy_rows(dst: torch.Tensor, rows: torch.Tensor, src: torch.Tensor, dim: int = 1) -> None:
    """dst.index_copy_(dim, rows, src), through uint8 for float8 (no float8 index kernels on the CPU)."""
    if dst.dtype == torch.float8_e4m3fn:
        dst, src = dst.view(torch.uint8), src.view(torch.uint8)
    dst.index_copy_(dim, rows, src)


def _is_run(ids: list[int]) -> bool:
    return all(b == a + 1 for a, b in zip(ids, ids[1:], strict=False))


class KVCache:
    """One sequence's KV: its pages in the pool plus a partial tail page in the compute dtype.

    Use: begin(n) before a forward pass over n new positions, attend() once per layer inside it,
    commit() after. Pages for positions that fill during the pass are allocated in begin().
    """

    def __init__(self, pool: PagePool, max_tokens: int) -> None:
        self.pool = pool
        self.layout = pool.layout
        self.max_tokens = max_tokens
        self.page_ids: list[int] = []
        self.length = 0
        self.pending = 0
        self._new_pages: list[int] = []
        shape = (self.layout.num_layers, 2, self.layout.page_size, self.layout.num_kv_heads,
                 self.layout.head_dim)
        self.tail = torch.zeros(shape, dtype=self.layout.compute_dtype, device=pool.device)
        # Attention mass per position, summed over decode steps (last layer, mean over heads):
        # what the answer looked at, mapped back to sources as citations.
        self.attention_mass: torch.Tensor | None = None

    def track_attention(self, positions: int) -> None:
        self.attention_mass = torch.zeros(positions, dtype=torch.float32)

    @property
    def full_pages(self) -> int:
        return self.length // self.layout.page_size

    def begin(self, n: int) -> None:
        """Reserve room for `n` new positions."""
        if self.length + n > self.max_tokens:
            raise PromptTooLong(f"{self.length + n} tokens exceed the model's context of {self.max_tokens}")
        full_after = (self.length + n) // self.layout.page_size
        need = full_after - self.full_pages
        if not self.pool.can_allocate(need):
            raise PromptTooLong(f"the KV page pool cannot hold {self.length + n} tokens "
                                f"(raise STRATA_KV_DEVICE_BYTES)")
        self._new_pages = self.pool.allocate(need) if need else []
        self.pending = n

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               scale: float, window: int | None = None) -> torch.Tensor:
        """Store k, v [n, kv_heads, dim] at the pending positions; attend q [n, heads, dim] causally."""
        tail_len = self.length % self.layout.page_size
        past_k, past_v = self._past(layer)
        recent_k = torch.cat((self.tail[layer, 0, :tail_len], k.to(self.tail.dtype)))
        recent_v = torch.cat((self.tail[layer, 1, :tail_len], v.to(self.tail.dtype)))
        self._store(layer, recent_k, recent_v)
        n = q.shape[0]
        unmasked = window is None or self.length + n <= window
        if n == 1 and unmasked:
            # Decode: no concatenation of the whole context, and no GQA expansion. (The flash kernel
            # is 3-4x slower than these strided matmuls for one query: 8.8 vs 2.4 ms at 8K, bf16.)
            out, weights = _decode_attention(q, ((past_k, past_v), (recent_k, recent_v)), scale)
            if self.attention_mass is not None and layer == self.layout.num_layers - 1:
                self._track(weights)
            return out
        if unmasked and q.device.type == "cpu" and k.shape[-1] == v.shape[-1]:  # the kernel's one head size
            # Prefill: the pages, the old tail (both wholly visible) and the new positions (causal
            # among themselves) as parts: nothing is concatenated and no mask is built.
            parts = ((past_k, past_v), (recent_k[:tail_len], recent_v[:tail_len]),
                     (recent_k[tail_len:], recent_v[tail_len:]))
            return _flash_parts(q, parts, scale)
        keys, values = torch.cat((past_k, recent_k)), torch.cat((past_v, recent_v))
        return _attention(q, keys, values, self.length, scale, window)

    def commit(self) -> None:
        self.page_ids.extend(self._new_pages)
        self._new_pages = []
        self.length += self.pending
        self.pending = 0

    def rollback(self) -> None:
        """Forget a pass that failed midway: return its pages to the pool."""
        self.pool.free(self._new_pages)
        self._new_pages, self.pending = [], 0

    def adopt(self, pages: list[int]) -> None:
        """Start this (empty) sequence from full, already-computed pages: its cached prefix."""
        if self.length or self.page_ids:
            raise RuntimeError("adopt() needs an empty sequence")
        self.page_ids = list(pages)
        self.length = len(pages) * self.layout.page_size

    def release(self) -> None:
        self.pool.free(self.page_ids)
        self.page_ids, self.length = [], 0

    def _track(self, weights: torch.Tensor) -> None:
        assert self.attention_mass is not None
        mass = weights.float().mean(dim=(0, 1)).cpu()
        n = min(mass.shape[0], self.attention_mass.shape[0])
        self.attention_mass[:n] += mass[:n]

    def _past(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.page_ids:
            empty = self.tail.new_empty((0, self.layout.num_kv_heads, self.layout.head_dim))
            return empty, empty
        return self.pool.read(layer, self.page_ids)

    def _store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """k, v hold the old tail plus the new positions; full pages go to the pool."""
        page = self.layout.page_size
        n_full = len(self._new_pages)
        if n_full:
            self.pool.write(layer, self._new_pages, k[:n_full * page], v[:n_full * page])
        rest = k.shape[0] - n_full * page
        self.tail[layer, 0, :rest] = k[n_full * page:]
        self.tail[layer, 1, :rest] = v[n_full * page:]


def _decode_attention(q: torch.Tensor, parts: tuple[tuple[torch.Tensor, torch.Tensor], ...],
                      scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One query [1, Hq, D] over key/value parts [L_i, Hkv, D]; returns output and float32 weights
    [Hkv, G, L].

    No concatenation of the parts and no GQA expansion: each head's [L, D] slice goes to one float32
    matmul (scores_of, weighted_sum).
    """
    heads, dim = q.shape[1], q.shape[2]
    kv_heads = parts[0][0].shape[1]
    grouped = q[0].reshape(kv_heads, heads // kv_heads, dim)
    scores = torch.cat([scores_of(grouped, k) for k, _ in parts], dim=-1)
    weights = torch.softmax(scores * scale, dim=-1)
    out = None
    offset = 0
    for k, v in parts:
        part = weighted_sum(weights[..., offset:offset + k.shape[0]], v)
        out = part if out is None else out + part
        offset += k.shape[0]
    assert out is not None
    return out.reshape(1, heads, dim).to(q.dtype), weights


def scores_of(grouped: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """q.k for grouped queries [Hkv, G, D] and keys [L, Hkv, D]: float32 [Hkv, G, L].

    One float32 2-D matmul per KV head. This CPU (AVX2, no bfloat16 units) runs bfloat16 GEMMs on a
    slow path: for a 64-query prefill segment over 4.7K keys, 268 ms in bfloat16 against 9.7 ms with
    the keys converted to float32 first; for one decode query 5.4 ms against 0.8 ms
    (bench/sparse_kernels.py, `stored` rows). The batched matmul over the strided [L, Hkv, D] keys is slower still.
    """
    return torch.stack([torch.mm(grouped[h].float(), k[:, h].float().t()) for h in range(k.shape[1])])


def weighted_sum(weights: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Float32 attention weights [Hkv, G, L] times values [L, Hkv, D]: float32 [Hkv, G, D], as scores_of."""
    return torch.stack([torch.mm(weights[h], v[:, h].float()) for h in range(v.shape[1])])


def _flash_parts(q: torch.Tensor, parts: tuple[tuple[torch.Tensor, torch.Tensor], ...],
                 scale: float) -> torch.Tensor:
    """Queries [n, Hq, D] over key/value parts [L_i, Hkv, D] by the CPU flash kernel; the last part
    holds the queries' own positions (causal among themselves), the others are wholly visible.

    A concatenation would copy the whole context per chunk and a causal offset needs a mask (the
    kernel's slow path); parts avoid both, and each part's result is merged by its log-sum-exp.
    Measured, 512 queries over 7680 keys, bf16, quiet machine: 143-170 ms against 184-219 ms for
    concatenation plus masked SDPA.
    """
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    query = q.transpose(0, 1)[None]  # [1, Hq, n, D]
    outs, lses = [], []
    many = q.shape[0] > 1
    for i, (k, v) in enumerate(parts):
        if k.shape[0]:
            keys, values = k.transpose(0, 1)[None], v.transpose(0, 1)[None]
            if many:  # a chunk re-reads each key per query block: contiguous heads pay for the copy (~20%)
                keys, values = keys.contiguous(), values.contiguous()
            out, lse = flash(query, keys, values, 0.0, many and i == len(parts) - 1, scale=scale)[:2]
            outs.append(out)
            lses.append(lse)
    if len(outs) == 1:
        return outs[0][0].transpose(0, 1)
    weights = torch.softmax(torch.stack(lses).float(), dim=0)  # [parts, 1, Hq, n]
    merged = outs[0].float() * weights[0][..., None]
    for w, o in zip(weights[1:], outs[1:], strict=True):
        merged += o.float() * w[..., None]
    return merged.to(q.dtype)[0].transpose(0, 1)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int, scale: float,
               window: int | None) -> torch.Tensor:
    """Exact causal attention of q [n, Hq, D] at positions past.. over k, v [past + n, Hkv, D]."""
    n = q.shape[0]
    mask = None
    if window is not None and past + n > window:
        qpos = torch.arange(past, past + n, device=q.device)[:, None]
        kpos = torch.arange(past + n, device=q.device)[None, :]
        mask = (kpos <= qpos) & (qpos - kpos < window)
    elif n > 1 and past:
        mask = torch.ones(n, past + n, dtype=torch.bool, device=q.device).tril(diagonal=past)
    # 4-D inputs: the CPU flash kernel takes only [batch, heads, n, dim]; 3-D falls back to the
    # math path, about 4x slower for a 512-token chunk.
    out = F.scaled_dot_product_attention(
        q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], attn_mask=mask,
        is_causal=mask is None and n > 1, scale=scale, enable_gqa=q.shape[1] != k.shape[1])
    return out[0].transpose(0, 1)
