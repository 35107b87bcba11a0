"""Sources -> Items: list directories, classify files, extract through the cache, log skips.

Every path that does not become an item gets a ledger entry saying why; a broken file never
stops the ingest of the others.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ingest.cache import ExtractCache, file_hash
from ingest.classify import SNIFF_BYTES, is_binary, media_kind, path_skip_reason
from ingest.items import Item, Level, Piece, PieceBuilder, attr, omitted
from ingest.media import MediaExtractor
from ingest.options import IngestOptions
from ingest.order import TREE, order_key
from ingest.prompt import DROPPED, ERROR, INCLUDED, OUTLINED, PATH_ONLY, LedgerItem
from ingest.target import Target
from ingest.textfile import TextFile, open_tag, prepare_texts, text_item, text_key, tokenize_texts
from ingest.tree import render_tree
from ingest.walk import list_files
from strata.errors import IngestError


def shown(path: str) -> str:
    """A path as the prompt and the ledger show it: file names that are not UTF-8 (surrogate
    escapes from the file system) get replacement characters instead of breaking the tokenizer."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class _Bar:
    """The no-op progress bar."""

    def update(self, n: int = 1) -> None:
        """Nothing to show."""

    def close(self) -> None:
        """Nothing to close."""


class Collector:
    """Collects the items of all sources, with the ledger entries of what was left out."""

    def __init__(self, target: Target, opts: IngestOptions, cache: ExtractCache, progress: bool = False) -> None:
        self.target, self.opts, self.cache, self.progress = target, opts, cache, progress
        self.ledger: list[LedgerItem] = []
        self.warnings: list[str] = []
        self.stats: dict[str, int] = {"parsed": 0, "cache_hits": 0}
        self.media = MediaExtractor(target, opts, cache, self.stats)
        self.media_seen = 0

    def collect(self, sources: list[Path]) -> list[Item]:
        """Items of every source in prompt order (sources as given, then stable-first)."""
        items: list[Item] = []
        for index, source in enumerate(sources):
            if source.is_dir():
                items.extend(self._directory(index, source))
            elif source.is_file():
                texts: list[TextFile] = []
                self._file(index, shown(source.name), source.name, source, items, texts)
                items.extend(self._text_items(texts))
            else:
                what = "not found" if not os.path.lexists(source) else "not a file or directory"
                self._drop(shown(str(source)), "source", what, error=True)
        items.sort(key=lambda it: it.order)
        return items

    def _bar(self, total: int, desc: str) -> _Bar:
        """A tqdm bar on stderr when progress is on (tqdm is imported only then)."""
        if not self.progress:
            return _Bar()
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit="file", file=sys.stderr, leave=False)

    def _drop(self, path: str, kind: str, reason: str, error: bool = False) -> None:
        self.ledger.append(LedgerItem(path, kind, ERROR if error else DROPPED, 0, reason))

    def _directory(self, index: int, root: Path) -> list[Item]:
        listing = list_files(root, self.opts)
        name = shown(root.resolve().name) or "root"
        self.warnings.extend(listing.warnings)
        for s in listing.skipped:
            self._drop(shown(f"{name}/{s.rel}"), "file", s.reason, s.error)
        items: list[Item] = []
        texts: list[TextFile] = []
        bar = self._bar(len(listing.found), f"ingest {name}")
        for found in listing.found:
            bar.update(1)
            display = shown(f"{name}/{found.rel}")
            reason = path_skip_reason(found.rel, self.opts)
            if reason:
                self._drop(display, "file", reason)
                continue
            self._file(index, display, found.rel, found.path, items, texts)
        bar.close()
        items.extend(self._text_items(texts))
        kept = sorted(it.path[len(name) + 1 :] for it in items)
        items.append(self._tree_item(index, name, kept))
        return items

    def _file(self, index: int, display: str, rel: str, path: Path, items: list[Item], texts: list[TextFile]) -> None:
        """Classify one file by content and queue or build its item (one open, one read)."""
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                # A file that may be text is read whole right away; others only sniffed.
                data = fh.read(size + 1 if size <= self.opts.max_file_bytes else SNIFF_BYTES)
        except OSError as exc:
            self._drop(display, "file", f"unreadable: {exc.strerror or exc}", error=True)
            return
        head = data[:SNIFF_BYTES]
        kind = media_kind(rel, head)
        if kind is not None:
            self._media(index, display, rel, path, kind, size, items)
        elif is_binary(head):
            self._drop(display, "file", "binary content (sniffed)")
        elif size > self.opts.max_file_bytes or len(data) > self.opts.max_file_bytes:
            limit = self.opts.max_file_bytes
            self._drop(display, "file", f"too large: {max(size, len(data))} bytes > max_file_bytes {limit}")
        else:
            key = text_key(data, self.target, self.opts)
            texts.append(TextFile(display, data, key, order_key(index, rel)))

    def _media(self, index: int, display: str, rel: str, path: Path, kind: str, size: int, items: list[Item]) -> None:
        if size > self.opts.max_media_bytes:
            self._drop(display, kind, f"too large: {size} bytes > max_media_bytes {self.opts.max_media_bytes}")
            return
        if self.media_seen >= self.opts.max_media_files:
            self._drop(display, kind, f"over max_media_files ({self.opts.max_media_files}): not opened")
            return
        self.media_seen += 1
        order = order_key(index, rel, media=True)
        try:
            digest = file_hash(path)
            if kind == "image":
                items.append(self.media.image(display, path, digest, order))
                return
            make = self.media.pdf if kind == "pdf" else self.media.video
            item, warnings = make(display, path, digest, order)
        except IngestError as exc:
            self._drop(display, kind, exc.message, error=True)
            return
        except OSError as exc:
            self._drop(display, kind, f"unreadable: {exc.strerror or exc}", error=True)
            return
        items.append(item)
        self.warnings.extend(warnings)

    def tokenize(self, files: list[TextFile]) -> None:
        """Tokenize files that have no ids yet, in parallel batches, with a progress bar."""
        todo = [f for f in files if f.ids is None]
        bar = self._bar(len(todo), "tokenize")
        tokenize_texts(todo, self.target, self.cache, self.stats, bar.update)
        bar.close()

    def _text_items(self, texts: list[TextFile]) -> list[Item]:
        prepare_texts(texts, self.cache, self.opts, self.stats)
        kept = [f for f in texts if not f.skip]
        for f, header in zip(kept, self.target.encode_many([open_tag(f.path) for f in kept]), strict=True):
            f.header = header
        out = []
        for f in texts:
            if f.skip:
                self._drop(f.path, "file", f.skip)
            else:
                out.append(text_item(f, self.target, self.cache, self.stats))
        return out

    def _tree_item(self, index: int, name: str, rels: list[str]) -> Item:
        """The directory listing; placed after the files unless options.tree_first."""
        t, cap = self.target, self.opts.max_tree_entries
        order = (index, -1 if self.opts.tree_first else TREE, b"")

        def piece(dirs_only: bool) -> Piece:
            b = PieceBuilder(t)
            b.text(f'<tree root="{attr(name)}" files="{len(rels)}">\n', "tree", name)
            b.text(render_tree(name, rels, cap, dirs_only), "tree", name)
            b.text("</tree>\n", "tree", name)
            return b.build()

        return Item(
            name + "/",
            "tree",
            [
                Level(INCLUDED, f"{len(rels)} entries", lambda: piece(False)),
                Level(OUTLINED, "directories only: listing over budget", lambda: piece(True)),
                Level(PATH_ONLY, "over budget", lambda: omitted(t, "tree", name, "budget", "tree")),
            ],
            order,
        )
