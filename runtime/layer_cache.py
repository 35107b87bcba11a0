"""One layer of a page, fetched alone: an LRU of (page key, layer) slots for sparse attention.

A stored page carries every layer, but sparse attention selects pages per layer: one decode step
of the demo model touches up to layers x KV heads x (budget / page + 5) layer-pages, most of them
different pages. Fetching whole pages for that reads every layer to use one, and a pool of whole
pages cannot hold a step's working set without holding all layers of it. This cache holds single
layers instead: slots of [planes, P, H, D] (+ scales), filled from the tiers one section at a time
(kvstore reads and checks just that layer's bytes), reused while the selection stays put.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from runtime.kv import STORAGE_DTYPES, KVLayout


class LayerCache:
    """A byte-bounded LRU of single-layer page slots, in the pool's storage format."""

    def __init__(self, layout: KVLayout, max_bytes: int, min_slots: int = 1,
                 device: str | torch.device = "cpu") -> None:
        self.layout = layout
        self.slot_bytes = layout.page_bytes // layout.num_layers
        self.capacity = max(min_slots, max_bytes // self.slot_bytes)
        self.data = torch.empty((self.capacity, layout.planes, layout.page_size, layout.num_kv_heads,
                                 layout.head_dim), dtype=STORAGE_DTYPES[layout.storage], device=device)
        self.scales = torch.ones((self.capacity, layout.planes, layout.num_kv_heads), dtype=torch.float32,
                                 device=device)
        self.slots: OrderedDict[tuple[bytes, int], int] = OrderedDict()
        self.free = list(range(self.capacity - 1, -1, -1))
        self.hits = self.misses = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the slots in use (the cache's share of the device tier)."""
        return len(self.slots) * self.slot_bytes

    def find(self, key: bytes, layer: int) -> int | None:
        """The slot holding `key` at `layer`, made most recent; None on a miss."""
        slot = self.slots.get((key, layer))
        if slot is None:
            self.misses += 1
            return None
        self.slots.move_to_end((key, layer))
        self.hits += 1
        return slot

    def insert(self, key: bytes, layer: int, data: torch.Tensor, scales: torch.Tensor,
               keep: set[int]) -> int:
        """Store one layer-page, evicting the least recent slot not in `keep`; returns its slot."""
        if not self.free:
            victim = next((k for k, s in self.slots.items() if s not in keep), None)
            if victim is None:
                raise MemoryError("the layer cache is smaller than one layer's selection")
            self.free.append(self.slots.pop(victim))
        slot = self.free.pop()
        self.data[slot] = data
        self.scales[slot] = scales
        self.slots[(key, layer)] = slot
        return slot

    def gather(self, slots: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored data [planes, n, P, H, D] and scales [planes, n, H] of `slots`, as the pool gathers."""
        idx = torch.tensor(slots, dtype=torch.long, device=self.data.device)
        if self.data.dtype == torch.float8_e4m3fn:  # no float8 index kernels on the CPU
            data = self.data.view(torch.uint8).index_select(0, idx).view(self.data.dtype)
        else:
            data = self.data.index_select(0, idx)
        return data.transpose(0, 1), self.scales.index_select(0, idx).transpose(0, 1)

    def clear(self) -> None:
        self.slots.clear()
        self.free = list(range(self.capacity - 1, -1, -1))
