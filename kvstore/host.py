"""The host-RAM tier: recently used page payloads and summaries in an LRU with a byte budget."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    digest: bytes | None  # None for a summary promoted without its page
    payload: bytes | None
    summary: bytes | None
    sections: int = 1  # the payload's equal parts (one per model layer for KV pages)

    @property
    def nbytes(self) -> int:
        return len(self.payload or b"") + len(self.summary or b"") + 64


class HostTier:
    """LRU dict key -> (digest, payload, summary), bounded by `budget_bytes` of payload+summary."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = max(0, int(budget_bytes))
        self.nbytes = 0
        self.hits = self.misses = self.evicted = 0
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes, digest: bytes) -> bytes | None:
        """The payload when present and stored under the same tokens digest."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.payload is None or entry.digest != digest:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry.payload

    def get_section(self, key: bytes, digest: bytes, index: int) -> bytes | None:
        """Part `index` of the payload (one layer of a page) when present under the same digest."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.payload is None or entry.digest != digest or not 0 <= index < entry.sections:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            part = len(entry.payload) // entry.sections
            return entry.payload[index * part:(index + 1) * part]

    def get_summary(self, key: bytes) -> bytes | None:
        """The summary when present."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.summary is None:
                return None
            self._entries.move_to_end(key)
            return entry.summary

    def contains(self, key: bytes) -> bool:
        """Whether the page payload is held here."""
        with self._lock:
            entry = self._entries.get(key)
            return entry is not None and entry.payload is not None

    def can_hold(self, nbytes: int) -> bool:
        """Whether an entry of this size fits the budget at all (side-effect free)."""
        return nbytes + 64 <= self.budget

    def put(self, key: bytes, digest: bytes | None, payload: bytes | None, summary: bytes | None,
            sections: int = 1) -> bool:
        """Insert or complete an entry, evicting least recently used ones; False if it cannot fit."""
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
                # One key is one page: a summary-only entry (digest None) joins the page's entry;
                # a different digest means a different page and replaces it whole.
                if old.digest is None or digest is None or old.digest == digest:
                    digest = digest or old.digest
                    if payload is None:
                        payload, sections = old.payload, old.sections
                    summary = summary if summary is not None else old.summary
            entry = _Entry(digest, payload, summary, sections)
            if entry.nbytes > self.budget:
                return False
            while self._entries and self.nbytes + entry.nbytes > self.budget:
                _, victim = self._entries.popitem(last=False)
                self.nbytes -= victim.nbytes
                self.evicted += 1
            self._entries[key] = entry
            self.nbytes += entry.nbytes
            return True

    def clear(self) -> None:
        """Drop everything."""
        with self._lock:
            self._entries.clear()
            self.nbytes = 0

    def stats(self) -> dict:
        """Bytes, entries and counters."""
        with self._lock:
            entries = len(self._entries)
        return {
            "budget_bytes": self.budget,
            "bytes": self.nbytes,
            "entries": entries,
            "hits": self.hits,
            "misses": self.misses,
            "evicted": self.evicted,
        }
