"""Text files: decode (never crash on bad bytes), tokenize in batches, map tokens to lines.

Each file is tokenized on its own, so editing one file never changes another file's tokens;
that is what lets the prompt prefix before an edited file survive. Token ids, line starts and
the outline are cached by content hash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ingest.cache import ExtractCache, content_hash, make_key
from ingest.classify import content_skip_reason
from ingest.items import Item, Level, Piece, PieceBuilder, attr, omitted
from ingest.options import IngestOptions
from ingest.outline import language_for, outline
from ingest.prompt import INCLUDED, OUTLINED, PATH_ONLY
from ingest.target import Target

ENCODE_BATCH = 256


@dataclass(slots=True)
class TextFile:
    """A text file's extraction: token ids and the token index at each line start."""

    path: str  # as shown in the prompt
    data: bytes
    key: str
    order: tuple = ()
    ids: np.ndarray | None = None
    line_tok: np.ndarray | None = None  # [n_lines + 1]; last entry = len(ids)
    ends_nl: bool = True
    note: str = ""  # e.g. "not UTF-8: decoded with replacement"
    skip: str = ""  # content-based default skip (generated, minified)
    header: list[int] | None = None  # tokens of the opening tag, batch-encoded


def decode(data: bytes) -> tuple[str, str]:
    """(text, note): UTF-8 (BOM stripped, CRLF -> LF), or replacement-decoded with a note."""
    try:
        text, note = data.decode("utf-8"), ""
    except UnicodeDecodeError as exc:
        text, note = (
            data.decode("utf-8", "replace"),
            f"not UTF-8 (byte {exc.start}): decoded with replacement",
        )
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text, note


def line_starts(text: str) -> np.ndarray:
    """Character offsets where each line starts (a final newline opens no new line)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    starts = np.flatnonzero(codes == 10) + 1
    if starts.size and starts[-1] == len(text):
        starts = starts[:-1]
    return np.concatenate(([0], starts)).astype(np.int64)


def prepare_texts(files: list[TextFile], cache: ExtractCache, opts: IngestOptions, stats: dict[str, int]) -> None:
    """Tokens from the cache where present; else decode and decide the content-based skip.

    No tokenization here: build_prompt decides what to tokenize once it knows the budget.
    """
    for f in files:
        hit = cache.get(f.key)
        if hit is not None:
            arrays, meta = hit
            f.skip, f.note, f.ends_nl = meta["skip"], meta["note"], meta["ends_nl"]
            f.ids, f.line_tok = arrays.get("ids"), arrays.get("line_tok")
            stats["cache_hits"] = stats.get("cache_hits", 0) + 1
            continue
        text, f.note = decode(f.data)
        f.skip = content_skip_reason(f.data, text, opts) or ""
        f.ends_nl = text.endswith("\n") or not text
        if f.skip:
            cache.put(f.key, {}, {"skip": f.skip, "note": f.note, "ends_nl": f.ends_nl})


def tokenize_texts(
    files: list[TextFile],
    target: Target,
    cache: ExtractCache,
    stats: dict[str, int],
    progress: Callable[[int], object] | None = None,
) -> None:
    """Tokenize (in parallel batches) every file that has no ids yet, and cache the result."""
    todo = [f for f in files if f.ids is None and not f.skip]
    lens = target.token_byte_lengths()
    for i in range(0, len(todo), ENCODE_BATCH):
        batch = todo[i : i + ENCODE_BATCH]
        texts = [decode(f.data)[0] for f in batch]
        # Byte-level BPE: token byte lengths give line positions, so offsets are not needed.
        encode = target.tokenizer.encode_batch if lens is None else target.tokenizer.encode_batch_fast
        for f, text, enc in zip(batch, texts, encode(texts, add_special_tokens=False), strict=True):
            f.ids = np.asarray(enc.ids, dtype=np.int32)
            f.line_tok = line_tokens(text, f.ids, lens)
            if f.line_tok is None:  # lengths disagree: an unusual tokenizer; ask for offsets
                offsets = target.tokenizer.encode(text, add_special_tokens=False).offsets
                f.line_tok = line_tokens(text, f.ids, None, offsets)
            stats["parsed"] = stats.get("parsed", 0) + 1
            assert f.line_tok is not None
            cache.put(f.key, {"ids": f.ids, "line_tok": f.line_tok}, {"skip": "", "note": f.note, "ends_nl": f.ends_nl})
        if progress is not None:
            progress(len(batch))


def line_tokens(
    text: str, ids: np.ndarray, lens: np.ndarray | None, offsets: list[tuple[int, int]] | None = None
) -> np.ndarray | None:
    """Token index at each line start, plus len(ids): [n_lines + 1] int32.

    From token byte lengths (byte-level BPE) when `lens` is given, else from character offsets.
    A token that spans a line break belongs to the line it starts on. None when the byte
    lengths do not add up to the text (then the caller falls back to offsets).
    """
    if lens is not None:
        raw = text.encode("utf-8")
        tok_bytes = lens[ids] if len(ids) else np.zeros(0, np.int64)
        ends = np.cumsum(tok_bytes, dtype=np.int64)
        if (ends[-1] if len(ends) else 0) != len(raw):
            return None
        tok_start = ends - tok_bytes
        starts = np.flatnonzero(np.frombuffer(raw, dtype=np.uint8) == 10) + 1
        starts = starts[starts < len(raw)]
    else:
        tok_start = np.asarray([o[0] for o in offsets or []], dtype=np.int64)
        starts = line_starts(text)[1:]
    inner = np.searchsorted(tok_start, starts)
    return np.concatenate(([0], inner, [len(ids)])).astype(np.int32)


def text_key(data: bytes, target: Target, opts: IngestOptions) -> str:
    """Cache key of a text file's tokens (and of its content-based skip decision)."""
    flags = (opts.include_generated, opts.include_minified)
    return make_key("text", target.fingerprint, content_hash(data), flags)


def text_item(f: TextFile, target: Target, cache: ExtractCache, stats: dict[str, int]) -> Item:
    """Levels: full text, tree-sitter outline (for known languages), path only."""
    reason = f.note
    levels = [Level(INCLUDED, reason, lambda: _full(f, target, cache, stats))]
    if language_for(f.path) is not None:
        levels.append(
            Level(
                OUTLINED,
                _join("outline: over the per-item share of the budget", reason),
                lambda: _outline(f, target, cache, stats),
            )
        )
    levels.append(Level(PATH_ONLY, "over budget", lambda: omitted(target, "file", f.path, "budget", "file")))
    return Item(f.path, "file", levels, f.order, text=f)


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def estimate_full(f: TextFile, target: Target) -> int:
    """A size-based estimate of the full level's tokens (before tokenizing)."""
    header = len(f.header) if f.header is not None else 16
    return header + 3 + -(-len(f.data) * 1000 // target.bytes_per_ktoken())


def open_tag(path: str) -> str:
    """The opening tag of a file's full text."""
    return f'<file path="{attr(path)}">\n'


def _full(f: TextFile, target: Target, cache: ExtractCache, stats: dict[str, int]) -> Piece:
    if f.ids is None:  # not tokenized up front (a large ingest): tokenize now
        tokenize_texts([f], target, cache, stats)
    b = PieceBuilder(target)
    assert f.ids is not None and f.line_tok is not None
    if f.header is None:
        f.header = target.encode(open_tag(f.path))
    b.ids(f.header, "file", f.path)
    n_lines = len(f.line_tok) - 1
    b.lines(f.ids, f.line_tok, np.arange(1, n_lines + 1), "file", f.path)
    b.ids(target.encode_fixed("</file>\n" if f.ends_nl else "\n</file>\n"), "file", f.path)
    return b.build()


def _outline(f: TextFile, target: Target, cache: ExtractCache, stats: dict[str, int]) -> Piece:
    key = make_key("outline", target.fingerprint, f.key)
    hit = cache.get(key)
    if hit is not None:
        arrays = hit[0]
        stats["cache_hits"] = stats.get("cache_hits", 0) + 1
    else:
        text, _ = decode(f.data)
        entries = outline(text.encode("utf-8"), language_for(f.path) or "")
        body = "".join(e.text + "\n" for e in entries)
        enc = target.tokenizer.encode(body, add_special_tokens=False)
        tok_start = np.asarray([o[0] for o in enc.offsets], dtype=np.int64)
        starts = line_starts(body)[1:] if body else np.zeros(0, np.int64)
        line_tok = np.concatenate(([0], np.searchsorted(tok_start, starts), [len(enc.ids)]))
        arrays = {
            "ids": np.asarray(enc.ids, dtype=np.int32),
            "line_tok": line_tok.astype(np.int32),
            "line_no": np.asarray([e.line for e in entries], dtype=np.int32),
        }
        if not entries:
            arrays["line_tok"] = np.zeros(1, np.int32)
        stats["parsed"] = stats.get("parsed", 0) + 1
        cache.put(key, arrays, {})
    b = PieceBuilder(target)
    b.text(f'<file path="{attr(f.path)}" view="outline">\n', "file", f.path)
    b.lines(arrays["ids"], arrays["line_tok"], arrays["line_no"], "outline", f.path)
    b.ids(target.encode_fixed("</file>\n"), "file", f.path)
    return b.build()
