"""The Prompt: ordered token ids, media patches, a source map and the ingest ledger."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# Ledger statuses, from best to worst.
INCLUDED, OUTLINED, PATH_ONLY, DROPPED, ERROR = "included", "outlined", "path_only", "dropped", "error"
STATUSES = (INCLUDED, OUTLINED, PATH_ONLY, DROPPED, ERROR)


@dataclass(slots=True)
class MediaSpan:
    """One image or video frame inside the token stream.

    MODEL1: `start`/`length` cover the whole run from <|image|> to <|/image|>; the rows of
    `patches` fill the <|patch|> positions of that run in order (row-major over `grid`).
    Qwen2.5-VL: `start`/`length` cover the pad tokens only, `patches` is the image processor's
    pixel_values for `grid_thw`, and a whole video is one span (kind "video").
    """

    start: int
    length: int
    patches: np.ndarray  # float32 [n_patches, patch_dim], values in [-1, 1] (MODEL1)
    grid: tuple[int, int]  # (rows, cols) of tokens
    media_hash: bytes  # 16 bytes
    kind: str  # "image" | "frame" | "pdf_page" | "video"
    grid_thw: tuple[int, int, int] | None = None  # Qwen2.5-VL: patches in time, height, width
    second_per_grid: float = 1.0  # Qwen2.5-VL video: seconds per temporal patch

    @property
    def end(self) -> int:
        """One past the last token of the run."""
        return self.start + self.length

    def patch_positions(self) -> np.ndarray:
        """Token indices of the <|patch|> positions, in the order of `patches`' rows."""
        rows, cols = self.grid
        # run = <|image|> then per row: cols patches + <|row|>, then <|/image|>
        offs = 1 + np.arange(rows)[:, None] * (cols + 1) + np.arange(cols)[None, :]
        return (self.start + offs).reshape(-1)


@dataclass(slots=True)
class SourceSpan:
    """Tokens [start, end) come from this place in the material."""

    start: int
    end: int
    kind: str  # "file" | "outline" | "pdf" | "image" | "video" | "tree" | "note"
    path: str
    line_start: int | None = None
    line_end: int | None = None
    page: int | None = None
    time_s: float | None = None

    def label(self) -> str:
        """A short human citation: path:12-30, doc.pdf p.3, clip.mp4 @12.50s."""
        if self.line_start is not None:
            tail = f"-{self.line_end}" if self.line_end not in (None, self.line_start) else ""
            return f"{self.path}:{self.line_start}{tail}"
        if self.page is not None:
            return f"{self.path} p.{self.page}"
        if self.time_s is not None:
            return f"{self.path} @{self.time_s:.2f}s"
        return self.path


def _span_start(span: SourceSpan) -> int:
    return span.start


@dataclass(slots=True)
class LedgerItem:
    """What happened to one input item: how it was included (or why not) and what it cost."""

    path: str
    kind: str
    status: str
    tokens: int
    reason: str = ""

    def to_dict(self) -> dict:
        """The JSON form (CLI --json, API)."""
        return {
            "path": self.path,
            "kind": self.kind,
            "status": self.status,
            "tokens": self.tokens,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Prompt:
    """The packed material, ready for prefill; the caller appends its question at the end."""

    token_ids: list[int] = field(default_factory=list)
    media: list[MediaSpan] = field(default_factory=list)
    source_map: list[SourceSpan] = field(default_factory=list)
    ledger: list[LedgerItem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)
    budget: int = 0

    def __len__(self) -> int:
        return len(self.token_ids)

    def digest(self) -> str:
        """Hex digest over token ids and media (position, grid, hash): equal iff same prompt."""
        h = hashlib.blake2b(digest_size=16)
        h.update(np.asarray(self.token_ids, dtype="<i4").tobytes())
        for m in self.media:
            h.update(np.asarray([m.start, m.length, *m.grid], dtype="<i8").tobytes())
            h.update(m.media_hash)
        return h.hexdigest()

    def cite(self, start: int, end: int) -> list[SourceSpan]:
        """Sources of tokens [start, end), in prompt order (binary search over the source map)."""
        if end <= start:
            return []
        i = max(bisect.bisect_right(self.source_map, start, key=_span_start) - 1, 0)
        out = []
        while i < len(self.source_map) and self.source_map[i].start < end:
            span = self.source_map[i]
            if span.end > start:
                out.append(span)
            i += 1
        return out

    def media_in(self, start: int, end: int) -> list[MediaSpan]:
        """Media runs that overlap tokens [start, end) (what a page key must hash)."""
        return [m for m in self.media if m.start < end and m.end > start]

    def append_text(
        self, text: str, encode: Callable[[str], list[int]], kind: str = "note", path: str = "<question>"
    ) -> SourceSpan:
        """Append text tokens (e.g. the question) after the material and map them."""
        ids = encode(text)
        span = SourceSpan(len(self.token_ids), len(self.token_ids) + len(ids), kind, path)
        self.token_ids.extend(ids)
        if ids:
            self.source_map.append(span)
        return span

    def append_tokens(self, ids: list[int]) -> None:
        """Append raw token ids (e.g. chat template specials) without a source."""
        self.token_ids.extend(ids)

    def summary(self) -> dict:
        """Counts by kind and status, tokens per status."""
        by_kind: dict[str, int] = {}
        by_status = {s: 0 for s in STATUSES}
        tokens_by_status = {s: 0 for s in STATUSES}
        for item in self.ledger:
            by_kind[item.kind] = by_kind.get(item.kind, 0) + 1
            by_status[item.status] += 1
            tokens_by_status[item.status] += item.tokens
        return {
            "tokens": len(self.token_ids),
            "budget": self.budget,
            "items": len(self.ledger),
            "by_kind": dict(sorted(by_kind.items())),
            "by_status": by_status,
            "tokens_by_status": tokens_by_status,
            "media": len(self.media),
        }
