"""How close sparse attention comes to dense on the same context: for the tests and bench/sparse.py.

Two measures, on one prefilled context decoded twice in lockstep (teacher-forced on the dense
tokens, so one early disagreement does not derail the rest):
- top-1 agreement: the share of steps where sparse and dense decoding pick the same next token;
- attention-mass recall: per sparse query, layer and query head, the share of the dense attention
  weights that falls on the positions the selection kept (the sink, window and top pages, and the
  query's own page).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch

from runtime.kv import KVCache
from runtime.sparse import Selection, SparsePolicy
from runtime.sparse_kv import SparseKVCache


class RecallProbe(SparseKVCache):
    """A SparseKVCache that also computes each sparse decode query's dense weights, and the recall."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recalls: list[torch.Tensor] = []  # one [Hq] tensor per sparse decode query and layer
        self.oracle: list[torch.Tensor] = []  # the same for the best pages by true mass (the ceiling)
        self._last: Selection | None = None
        self.measure = True  # off: decode as plain SparseKVCache does (for timing side by side)

    def _select(self, layer: int, q: torch.Tensor, past: int) -> Selection:
        self._last = super()._select(layer, q, past)
        return self._last

    def _attend_segment(self, layer: int, q: torch.Tensor, past: int, own_k: torch.Tensor,
                        own_v: torch.Tensor, scale: float) -> torch.Tensor:
        out = super()._attend_segment(layer, q, past, own_k, own_v, scale)
        if self.measure and q.shape[0] == 1 and self.policy.is_sparse(past) and self._last is not None:
            recall, oracle = self._recall(layer, q, past, own_k, scale, self._last)
            self.recalls.append(recall)
            self.oracle.append(oracle)
        return out

    def _recall(self, layer: int, q: torch.Tensor, past: int, own_k: torch.Tensor, scale: float,
                sel: Selection) -> tuple[torch.Tensor, torch.Tensor]:
        keys = torch.cat((self._read_selection(layer, list(range(past)))[0], own_k))
        kv_heads, page = self.layout.num_kv_heads, self.layout.page_size
        grouped = q[0].float().reshape(kv_heads, -1, q.shape[-1])
        weights = torch.softmax(torch.matmul(grouped, keys.float().permute(1, 2, 0)) * scale, dim=-1)
        own = weights[..., past * page:].sum(dim=-1)
        per_page = weights[..., :past * page].unflatten(-1, (past, page)).sum(dim=-1)  # [Hkv, G, past]
        kept = torch.zeros((kv_heads, past), dtype=torch.bool)
        kept[:, sel.pages] = sel.member
        recall = own + (per_page * kept[:, None, :]).sum(dim=-1)
        # The ceiling for any selector of as many pages per KV head: the group's heaviest pages.
        best = per_page.sum(dim=1).topk(int(kept[0].sum()), dim=-1).indices  # [Hkv, k]
        oracle = own + per_page.gather(-1, best[:, None, :].expand(-1, per_page.shape[1], -1)).sum(dim=-1)
        return recall.flatten(), oracle.flatten()


@dataclass(slots=True)
class Quality:
    steps: int
    agreement: float  # share of steps with the same greedy token
    recall_mean: float  # dense attention mass on the selected positions, mean over queries
    recall_p10: float  # ... its 10th percentile over (step, layer, query head)
    oracle_mean: float  # the recall of the heaviest pages by true mass, as many as selected
    selected_tokens: int  # positions one query attends at most (sink + window + budget + own page)
    dense_ms: float = 0.0  # median decode step, dense (with timing=True: measured interleaved)
    sparse_ms: float = 0.0  # ... and sparse, the recall probe off


def compare(engine: Any, ids: list[int], steps: int, budget: int,
            radius_weight: float = 1.0, timing: bool = False) -> Quality:
    """Prefill `ids` densely once, then decode `steps` tokens dense and sparse side by side.

    With `timing`, the recall probe is off and each step's dense and sparse decodes are timed
    back to back, so a busy machine slows both alike.
    """
    page = engine.layout.page_size
    limit = engine.config.max_position_embeddings
    probe = RecallProbe(engine.pool, limit, SparsePolicy(0, page))
    dense = KVCache(engine.pool, limit)
    try:
        logits = engine.prefill(probe, ids)
        engine.pool.share(probe.page_ids)
        dense.page_ids, dense.length, dense.tail = list(probe.page_ids), probe.length, probe.tail.clone()
        probe.policy = SparsePolicy(budget, page, radius_weight=radius_weight)
        probe.measure = not timing
        token, agree, times = int(logits[-1].argmax()), 0, []
        for _ in range(steps):
            t0 = time.perf_counter()
            want = engine.decode_step(dense, token)[-1]
            t1 = time.perf_counter()
            got = engine.decode_step(probe, token)[-1]
            times.append((t1 - t0, time.perf_counter() - t1))
            agree += int(want.argmax() == got.argmax())
            token = int(want.argmax())
    finally:
        dense.release()
        probe.release()
    recalls = torch.cat(probe.recalls) if probe.recalls else torch.ones(1)
    oracle = torch.cat(probe.oracle) if probe.oracle else torch.ones(1)
    dense_ms, sparse_ms = (statistics.median(t) * 1000 for t in zip(*times, strict=True))
    return Quality(steps, agree / steps, float(recalls.mean()), float(recalls.quantile(0.1)),
                   float(oracle.mean()), probe.policy.max_pages * page + page, dense_ms, sparse_ms)
