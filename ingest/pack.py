"""Budget packing with graceful degradation: full text -> outline -> path only -> dropped.

1. Find the largest per-item cap C (infinity, then powers of two) such that giving every item
   its best level costing <= C (or its cheapest level) fits the budget. Large files are the
   first to shrink to outlines, small files stay whole: fair, and it keeps most files intact.
2. Spend what is left on the cheapest one-level upgrades first.
3. If even the cheapest levels do not fit, keep path lines in order while they fit and drop
   the rest.

Every step is a pure function of the items' costs, so the same material gives the same plan.
When everything fits (C = infinity) the plan does not depend on other items at all, which is
what makes an edit change the prompt only from the edited file on.
"""

from __future__ import annotations

import heapq

from ingest.items import Item

MIN_CAP = 16


def _choice(item: Item, cap: float) -> int:
    """Index of the best level within the cap, else the cheapest."""
    last = len(item.levels) - 1
    for i, level in enumerate(item.levels[:-1]):
        if level.tokens <= cap:
            return i
    return last


def plan(items: list[Item], budget: int) -> list[int | None]:
    """Chosen level index per item, or None for dropped; total tokens never exceed budget."""
    if not items:
        return []
    largest = max(it.levels[0].tokens for it in items)
    caps: list[float] = [float("inf")]
    power = 1 << max(largest.bit_length() - 1, 0)
    while power >= MIN_CAP:
        caps.append(power)
        power //= 2
    for cap in caps:
        choice = [_choice(it, cap) for it in items]
        total = sum(it.levels[c].tokens for it, c in zip(items, choice, strict=True))
        if total <= budget:
            return _upgrade(items, choice, budget - total)
    return _cheapest_in_order(items, budget)


def _upgrade(items: list[Item], choice: list[int], slack: int) -> list[int | None]:
    """Spend the slack on the cheapest one-level upgrades first (ties: prompt order), so paths
    become outlines before an outline becomes full text: the leftover is shared, not front-loaded."""
    heap = [(_extra(items[i], c), i) for i, c in enumerate(choice) if c > 0]
    heapq.heapify(heap)
    while heap and heap[0][0] <= slack:
        extra, i = heapq.heappop(heap)
        choice[i] -= 1
        slack -= extra
        if choice[i] > 0:
            heapq.heappush(heap, (_extra(items[i], choice[i]), i))
    return list(choice)


def _extra(item: Item, level: int) -> int:
    return item.levels[level - 1].tokens - item.levels[level].tokens


def _cheapest_in_order(items: list[Item], budget: int) -> list[int | None]:
    out: list[int | None] = []
    for item in items:
        last = len(item.levels) - 1
        cost = item.levels[last].tokens
        if cost <= budget:
            out.append(last)
            budget -= cost
        else:
            out.append(None)
    return out
