"""Items and their levels: each input becomes one Item with pieces of prompt from best to cheapest.

A Level renders lazily (an outline is only parsed when the packer asks for it); a Piece is a
run of token ids with its source spans and media spans, positioned relative to its own start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ingest.images import media_hash, patchify, run_length
from ingest.prompt import MediaSpan, SourceSpan
from ingest.target import Target


@dataclass(slots=True)
class Piece:
    """Token ids (as chunks, joined once for the whole prompt) plus spans and media, all
    offsets relative to the piece start."""

    chunks: list[np.ndarray | list[int]] = field(default_factory=list)
    length: int = 0
    spans: list[SourceSpan] = field(default_factory=list)
    media: list[MediaSpan] = field(default_factory=list)

    def add(self, ids: np.ndarray | list[int]) -> int:
        """Append a chunk; returns its start offset."""
        start = self.length
        self.chunks.append(ids)
        self.length += len(ids)
        return start

    @property
    def ids(self) -> list[int]:
        """All token ids as one list (tests and small pieces; the prompt joins chunks itself)."""
        return [int(i) for chunk in self.chunks for i in chunk]


@dataclass(slots=True)
class Level:
    """One way to include an item: status and reason for the ledger, and how to render it."""

    status: str
    reason: str
    make: Callable[[], Piece]
    known_tokens: int | None = None
    estimated: bool = False  # known_tokens is a size-based estimate; rendering makes it exact
    _piece: Piece | None = None

    def piece(self) -> Piece:
        """The rendered piece (made on first use, then kept)."""
        if self._piece is None:
            self._piece = self.make()
            if self.estimated:
                self.estimated, self.known_tokens = False, self._piece.length
        return self._piece

    @property
    def tokens(self) -> int:
        """Token cost of this level."""
        if self.known_tokens is None:
            self.known_tokens = self.piece().length
        return self.known_tokens


@dataclass(slots=True)
class Item:
    """One input (file, PDF, image, video, tree listing) with its levels, best first."""

    path: str
    kind: str
    levels: list[Level]
    order: tuple = ()
    text: Any = None  # the TextFile behind a file item (for lazy tokenization), else None


# Media kinds -> the source-map kind of their tokens (a frame belongs to its video, ...).
_SPAN_KIND = {"frame": "video", "pdf_page": "pdf"}


class PieceBuilder:
    """Appends text, pre-tokenized runs and image runs, recording spans as it goes."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.piece = Piece()

    def text(self, text: str, kind: str, path: str, **where: Any) -> None:
        """Append plain text (special-token strings stay text) with one span."""
        self.ids(self.target.encode(text), kind, path, **where)

    def ids(self, ids: list[int] | np.ndarray, kind: str, path: str, **where: Any) -> None:
        """Append pre-tokenized ids with one span."""
        if not len(ids):
            return
        start = self.piece.add(ids)
        self.piece.spans.append(SourceSpan(start, start + len(ids), kind, path, **where))

    def special(self, token_id: int | None) -> None:
        """Append one control token (no span: it carries no material)."""
        if token_id is not None:
            self.piece.add([token_id])

    def lines(
        self,
        ids: np.ndarray,
        line_tok: np.ndarray,
        line_no: np.ndarray,
        kind: str,
        path: str,
        min_tokens: int = 64,
    ) -> None:
        """Tokens of text lines, one span per run of lines starting in the same `min_tokens`
        bucket: citations stay a few lines wide while the map stays small (vectorised)."""
        base = self.piece.add(ids)
        n_lines = len(line_tok) - 1
        if n_lines <= 0:
            return
        bucket = line_tok[:-1] // min_tokens
        first = np.flatnonzero(np.diff(bucket, prepend=-1))
        last = np.append(first[1:] - 1, n_lines - 1)
        lo, hi = line_tok[first] + base, line_tok[last + 1] + base
        keep = hi > lo
        self.piece.spans.extend(
            SourceSpan(a, b, kind, path, ls, le)
            for a, b, ls, le in zip(
                lo[keep].tolist(),
                hi[keep].tolist(),
                line_no[first][keep].tolist(),
                line_no[last][keep].tolist(),
                strict=True,
            )
        )

    def image(self, pixels: np.ndarray, kind: str, path: str, **where: Any) -> None:
        """An image run (<|image|> rows of patches <|/image|>) for fitted pixels."""
        t = self.target
        if t.qwen_vl:
            self.vision_run(t.vision_processor().image(pixels, resize=False), kind, path, **where)
            return
        p, start_id, end_id = t.patch_size, t.image_start_token_id, t.image_end_token_id
        patch_id, row_id = t.image_patch_token_id, t.image_row_token_id
        assert p and start_id is not None and end_id is not None and patch_id is not None
        assert row_id is not None  # callers check target.vision first
        grid = (pixels.shape[0] // p, pixels.shape[1] // p)
        patches = patchify(pixels, p)
        run = [start_id, *([patch_id] * grid[1] + [row_id]) * grid[0], end_id]
        assert len(run) == run_length(grid)
        start = self.piece.add(run)
        self.piece.media.append(MediaSpan(start, len(run), patches, grid, media_hash(patches, grid), kind))
        self.piece.spans.append(SourceSpan(start, start + len(run), _SPAN_KIND.get(kind, kind), path, **where))

    def vision_run(self, inputs: Any, kind: str, path: str, times: list[float] | None = None, **where: Any) -> None:
        """A Qwen2.5-VL run: <|vision_start|>, one pad token per merged patch, <|vision_end|>.

        `inputs` is ingest.qwen_vision.Processed. A video (`times`: its frames' seconds) maps each
        temporal patch to its own source span, so citations name the moment."""
        t = self.target
        video = times is not None
        merge = t.vision_processor().merge
        n = inputs.tokens(merge)
        pad = t.video_pad_token_id if video else t.image_pad_token_id
        assert pad is not None  # callers check target.qwen_vl first
        self.special(t.vision_start_token_id)
        start = self.piece.add([pad] * n)
        self.special(t.vision_end_token_id)
        gt, gh, gw = inputs.grid_thw
        media_kind = "video" if video else kind
        self.piece.media.append(MediaSpan(start, n, inputs.pixel_values.numpy(), (gh // merge, gw // merge),
                                          inputs.media_hash(), media_kind, inputs.grid_thw, inputs.second_per_grid))
        if times is None:
            self.piece.spans.append(SourceSpan(start, start + n, _SPAN_KIND.get(kind, kind), path, **where))
            return
        step, frames_per_grid = n // gt, t.vision_processor().temporal
        for g in range(gt):
            at = times[min(g * frames_per_grid, len(times) - 1)]
            self.piece.spans.append(SourceSpan(start + g * step, start + (g + 1) * step, "video", path, time_s=at))

    def build(self) -> Piece:
        """The piece built so far."""
        return self.piece


def omitted(target: Target, tag: str, path: str, reason: str, kind: str) -> Piece:
    """The path-only piece: one line naming the item and why its content is left out."""
    b = PieceBuilder(target)
    b.text(f'<{tag} path="{attr(path)}" omitted="{attr(reason)}"/>\n', kind, path)
    return b.build()


def attr(value: str) -> str:
    """Escape a value for the XML-like tags around items."""
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("\n", " ")
