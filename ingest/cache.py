"""A content-addressed extraction cache: unchanged sources are never parsed twice.

Key = digest(extractor kind and version, target fingerprint, options that shape the result,
content hash). Values are a few numpy arrays plus a JSON meta, in one uncompressed .npz per
key (no pickle). Writes go to a temporary file and are renamed, so a crash never leaves a
half-written entry that would later load.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import xxhash

EXTRACT_VERSION = "1"


def content_hash(data: bytes) -> str:
    """xxh3-128 hex of a file's bytes."""
    return xxhash.xxh3_128_hexdigest(data)


def file_hash(path: Path, chunk: int = 1 << 22) -> str:
    """xxh3-128 hex of a file's bytes, streamed (media files can be large)."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def make_key(kind: str, fingerprint: str, content: str, *params: object) -> str:
    """The cache key of one extraction."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr((EXTRACT_VERSION, kind, fingerprint, content, params)).encode())
    return h.hexdigest()


class ExtractCache:
    """Extraction results by key under one directory; `None` dir means no caching."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npz"

    def get(self, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays, meta) stored under key, or None (a damaged entry counts as absent)."""
        if self.root is None:
            return None
        path = self._path(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            meta = json.loads(arrays.pop("__meta__").tobytes().decode())
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError):
            self.misses += 1
            path.unlink(missing_ok=True)
            return None
        self.hits += 1
        return arrays, meta

    def put(self, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Store atomically; a full disk or a read-only home only costs the caching."""
        if self.root is None:
            return
        path = self._path(key)
        payload = dict(arrays)
        payload["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    np.savez(fh, **payload)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            pass
