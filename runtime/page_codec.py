"""Page bytes <-> pool pages: the stored K/V (+ FP8 scales) by layer, and the key min/max summary.

A page's payload is one section per layer, each `data[layer]` then `scales[layer]`, so the store
can hand back (and check) one layer of a page alone (`kvstore.record`, sections).
"""

from __future__ import annotations

import numpy as np
import torch

from runtime.kv import STORAGE_DTYPES, PagePool
from runtime.sparse import bounds_from_minmax


class PageCodec:
    """How one engine's pages are stored: per-layer sections, and a float32 min/max summary."""

    def __init__(self, pool: PagePool) -> None:
        layout = pool.layout
        if layout.page_bytes // layout.num_layers % 4:
            raise ValueError("a page's per-layer section must be a multiple of 4 bytes")
        self.pool = pool
        self.dtype = STORAGE_DTYPES[layout.storage]
        self.sections = layout.num_layers
        self.layer_shape = (layout.planes, layout.page_size, layout.num_kv_heads, layout.head_dim)
        self.data_shape = (layout.num_layers, *self.layer_shape)
        self.layer_data_bytes = int(np.prod(self.layer_shape)) * self.dtype.itemsize
        self.scale_shape = (layout.num_layers, layout.planes, layout.num_kv_heads)
        self.layer_scale_bytes = layout.planes * layout.num_kv_heads * 4
        self.section_bytes = self.layer_data_bytes + self.layer_scale_bytes

    def encode(self, page: int) -> tuple[bytes, bytes]:
        """(payload, summary) of a pool page: the payload in `sections` equal per-layer parts."""
        data, scales = self.pool.export_page(page)
        layers = self.sections
        payload = torch.cat((data.view(torch.uint8).reshape(layers, -1),
                             scales.view(torch.uint8).reshape(layers, -1)), dim=1)
        return payload.numpy().tobytes(), self._summary(data, scales)

    def summary(self, page: int) -> bytes:
        """The summary of a pool page, as encode() stores it."""
        return self._summary(*self.pool.export_page(page))

    @staticmethod
    def _summary(data: torch.Tensor, scales: torch.Tensor) -> bytes:
        # The same float32 keys as PagePool.keys_f32, so stored and resident summaries agree bitwise.
        keys = data[:, 0].to(torch.float32)
        if data.dtype == torch.float8_e4m3fn:
            keys = keys * scales[:, 0, None, :, None]
        summary = torch.stack((keys.amin(dim=1), keys.amax(dim=1)), dim=1)  # [L, 2, H, D]
        return summary.numpy().tobytes()

    @property
    def summary_bytes(self) -> int:
        layers, _, _, heads, dim = self.data_shape
        return layers * 2 * heads * dim * 4

    def bounds(self, summaries: list[bytes]) -> torch.Tensor:
        """Resident page bounds [n, L, H, 2, D] from stored summaries (float32 min/max [L, 2, H, D])."""
        layers, heads, dim = self.data_shape[0], self.data_shape[3], self.data_shape[4]
        raw = torch.frombuffer(bytearray(b"".join(summaries)), dtype=torch.float32)
        minmax = raw.view(len(summaries), layers, 2, heads, dim)
        return bounds_from_minmax(minmax[:, :, 0], minmax[:, :, 1])

    def _split(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 sections [n, section] -> data [n, planes, P, H, D] and scales [n, planes, H]."""
        n = raw.shape[0]  # views, no copies: every row starts at a multiple of 4 bytes
        data = raw[:, :self.layer_data_bytes].view(self.dtype).view(n, *self.layer_shape)
        scales = raw[:, self.layer_data_bytes:].view(torch.float32).view(n, *self.scale_shape[1:])
        return data, scales

    def decode_into(self, page: int, payload: bytes) -> bool:
        """Load `payload` into pool page `page`; False (a miss) when its size is not a page's."""
        if len(payload) != self.sections * self.section_bytes:
            return False
        raw = torch.frombuffer(bytearray(payload), dtype=torch.uint8).view(self.sections, self.section_bytes)
        data, scales = self._split(raw)
        self.pool.import_page(page, data, scales)
        return True

    def decode_layers(self, sections: list[bytes]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """One layer of several pages: data [n, planes, P, H, D], scales [n, planes, H]; None on a bad size."""
        if any(len(s) != self.section_bytes for s in sections):
            return None
        raw = np.empty((len(sections), self.section_bytes), dtype=np.uint8)
        for row, section in zip(raw, sections, strict=True):
            row[:] = np.frombuffer(section, dtype=np.uint8)
        return self._split(torch.from_numpy(raw))
