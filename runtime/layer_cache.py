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
from itertools import islice

import torch

from runtime.kv import STORAGE_DTYPES, KVLayout, copy_rows


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

    @property
    def nbytes(self) -> int:
        """Bytes of the slots in use (the cache's share of the device tier)."""
        return len(self.slots) * self.slot_bytes

    def find(self, key: bytes, layer: int) -> int | None:
        """The slot holding `key` at `layer`, made most recent; None on a miss."""
        slot = self.slots.get((key, layer))
        if slot is None:
            return None
        self.slots.move_to_end((key, layer))
        return slot

    def insert(self, keys: list[bytes], layer: int, data: torch.Tensor, scales: torch.Tensor,
               keep: set[int]) -> None:
        """Store layer-pages data [n, planes, P, H, D] / scales [n, planes, H] under `keys`, evicting the
        least recent slots not in `keep`; pages beyond what the cache can take are not kept."""
        room = self.capacity - len(keep)
        keys, data, scales = keys[:room], data[:room], scales[:room]
        if not keys:
            return
        # The least recent slots first; the scan stops at the last one needed (the cache holds thousands).
        victims = iter(list(islice(((k, s) for k, s in self.slots.items() if s not in keep),
                                   max(0, len(keys) - len(self.free)))))
        slots = []
        for key in keys:
            if not self.free:
                old_key, slot = next(victims)
                del self.slots[old_key]
                self.free.append(slot)
            slot = self.free.pop()
            self.slots[(key, layer)] = slot
            slots.append(slot)
        idx = torch.tensor(slots, dtype=torch.long, device=self.data.device)
        copy_rows(self.data, idx, data.to(self.data.device), dim=0)
        self.scales.index_copy_(0, idx, scales.to(self.data.device))

    def gather_into(self, slots: list[int], data: torch.Tensor, scales: torch.Tensor, rows: torch.Tensor) -> None:
        """Copy `slots` into rows `rows` (dim 1) of data [planes, n, P, H, D] and scales [planes, n, H]."""
        idx = torch.tensor(slots, dtype=torch.long, device=self.data.device)
        src = self.data.view(torch.uint8) if self.data.dtype == torch.float8_e4m3fn else self.data
        copy_rows(data, rows, src.index_select(0, idx).view(self.data.dtype).transpose(0, 1))
        scales.index_copy_(1, rows, self.scales.index_select(0, idx).transpose(0, 1))
