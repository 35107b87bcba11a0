"""Child processes for the multi-process and crash tests: `python -m tests.kvstore.workers ...`.

Page i has a key, tokens digest and payload derived from i alone, so any process can tell
whether what a store serves for page i is exactly what was written.
"""

from __future__ import annotations

import hashlib
import sys

from kvstore.keys import tokens_digest
from kvstore.lmdb_store import LMDBStore

MiB = 1 << 20


def page(i: int, size: int = 16 * 1024) -> tuple[bytes, bytes, bytes, bytes]:
    """(key, digest, payload, summary) of page i; payload sizes vary with i."""
    key = hashlib.blake2b(i.to_bytes(8, "little"), digest_size=16).digest()
    digest = tokens_digest([i, i + 1, i + 2, i + 3])
    n = size + (i % 7) * 1024
    payload = (key * (n // 16 + 1))[:n]
    return key, digest, payload, b"summary" + key


def write(path: str, start: int, count: int, capacity: int, batch: int) -> None:
    """Write pages start..start+count in batches, reading back as it goes; prints 'ready'."""
    store = LMDBStore(path, capacity, initial_map_bytes=1 * MiB)
    print("ready", flush=True)
    i = start
    while count < 0 or i < start + count:
        items = [page(j) for j in range(i, i + batch)]
        assert all(store.put_many(items))
        for j in range(max(start, i - 3 * batch), i, 5):
            key, digest, payload, _ = page(j)
            got = store.get(key, digest)
            assert got is None or got == payload, f"page {j} served wrong bytes"
        i += batch
    store.close()


if __name__ == "__main__":
    cmd, path, *rest = sys.argv[1:]
    if cmd == "write":
        start, count, capacity, batch = map(int, rest)
        write(path, start, count, capacity, batch)
