"""A content-addressed extraction cache: unchanged sources are never parsed twice.

Key = digest(extractor kind and version, target fingerprint, options that shape the result,
content hash). One file per key: a magic, a JSON header (meta, array layout, payload checksum)
and the raw array bytes; loading is one read and a few np.frombuffer calls (no pickle, no zip).
Writes go to a temporary file and are renamed, so a crash never leaves a half-written entry,
and an entry whose checksum does not match is treated as absent and removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import xxhash

EXTRACT_VERSION = "2"
_MAGIC = b"SXC2"
_HEAD = struct.Struct("<4sIQ")  # magic, header length, payload xxh3_64


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


def _encode(arrays: dict[str, np.ndarray], meta: dict) -> bytes:
    layout, chunks, offset = [], [], 0
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        layout.append([name, arr.dtype.str, list(arr.shape), offset, arr.nbytes])
        chunks.append(arr.tobytes())
        offset += arr.nbytes
    payload = b"".join(chunks)
    header = json.dumps({"meta": meta, "arrays": layout}).encode()
    return _HEAD.pack(_MAGIC, len(header), xxhash.xxh3_64_intdigest(payload)) + header + payload


def _decode(blob: bytes) -> tuple[dict[str, np.ndarray], dict]:
    magic, header_len, checksum = _HEAD.unpack_from(blob)
    start = _HEAD.size + header_len
    if magic != _MAGIC or xxhash.xxh3_64_intdigest(memoryview(blob)[start:]) != checksum:
        raise ValueError("bad magic or checksum")
    header = json.loads(blob[_HEAD.size : start])
    arrays = {}
    for name, dtype, shape, offset, nbytes in header["arrays"]:
        arr = np.frombuffer(
            blob, dtype=np.dtype(dtype), count=nbytes // np.dtype(dtype).itemsize, offset=start + offset
        )
        arrays[name] = arr.reshape(shape)
    return arrays, header["meta"]


class ExtractCache:
    """Extraction results by key under one directory; `None` dir means no caching."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.sxc"

    def get(self, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays, meta) stored under key, or None (a damaged entry counts as absent)."""
        if self.root is None:
            return None
        path = self._path(key)
        try:
            with open(path, "rb") as fh:
                blob = fh.read()
            return _decode(blob)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
            path.unlink(missing_ok=True)
            return None

    def put(self, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Store atomically; a full disk or a read-only home only costs the caching."""
        if self.root is None:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(_encode(arrays, meta))
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError:
            pass
