"""A content-addressed extraction cache: unchanged sources are never parsed twice.

Key = digest(extractor kind and version, target fingerprint, options that shape the result,
content hash). One LMDB value per key: a magic, a JSON header (meta, array layout, payload
checksum) and the raw array bytes; loading is one read and a few np.frombuffer calls (no pickle).
An entry whose checksum does not match (a torn write) is treated as absent and removed.
"""

from __future__ import annotations

import hashlib
import json
import struct
import threading
from pathlib import Path

import lmdb
import numpy as np
import xxhash

EXTRACT_VERSION = "3"  # 3: video frames turned upright by the display rotation
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


_ENVS: dict[str, lmdb.Environment] = {}
_ENVS_LOCK = threading.Lock()


def _env(root: Path, map_size: int) -> lmdb.Environment:
    """One environment per directory and process (LMDB forbids opening the same file twice)."""
    key = str(root.resolve())
    with _ENVS_LOCK:
        env = _ENVS.get(key)
        if env is None:
            root.mkdir(parents=True, exist_ok=True)
            env = _ENVS[key] = lmdb.open(
                key, map_size=map_size, subdir=True, lock=True, readahead=False, max_readers=256
            )
        return env


class ExtractCache:
    """Extraction results by key in one LMDB environment; `None` dir means no caching.

    Entries are buffered and committed in batches: one transaction per batch instead of one
    file creation per source file, which is what a cold ingest of many small files pays for.
    """

    BATCH = 256

    def __init__(self, root: Path | None, map_size: int = 64 << 30) -> None:
        self.root = root
        self._map_size = map_size
        self._pending: list[tuple[bytes, bytes]] = []
        self._handle: lmdb.Environment | None = None
        self.disabled_reason = ""

    def _open(self) -> lmdb.Environment | None:
        if self._handle is not None or self.root is None or self.disabled_reason:
            return self._handle
        try:
            self._handle = _env(self.root, self._map_size)
        except (lmdb.Error, OSError) as exc:
            self.disabled_reason = f"extraction cache disabled: {exc}"
            self._handle = None
        return self._handle

    def get(self, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """(arrays, meta) stored under key, or None (a damaged entry counts as absent)."""
        env = self._open()
        if env is None:
            return None
        with env.begin() as txn:
            blob = txn.get(key.encode())
        if blob is None:
            return None
        try:
            return _decode(blob)
        except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
            self._pending.append((key.encode(), b""))  # an empty value deletes on flush
            return None

    def put(self, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
        """Queue an entry; it is committed with its batch (or by flush)."""
        if self._open() is None:
            return
        self._pending.append((key.encode(), _encode(arrays, meta)))
        if len(self._pending) >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        """Commit queued entries; a full map or a read-only home only costs the caching."""
        env, pending, self._pending = self._open(), self._pending, []
        if env is None or not pending:
            return
        try:
            with env.begin(write=True) as txn:
                for key, value in pending:
                    if value:
                        txn.put(key, value)
                    else:
                        txn.delete(key)
        except (lmdb.Error, OSError) as exc:
            self.disabled_reason = f"extraction cache disabled: {exc}"
            self._handle = None
