"""kvstore I/O: key hashing cost, LMDB and Redis page throughput, side by side with raw baselines.

    .venv/bin/python bench/kvstore_io.py [--mib 128] [--page-kib 64]

Raw rows are the same operation without Strata's record header and checks, so the ratio is
the cost of the checks. Redis: STRATA_TEST_REDIS_URL, else a private redis-server is started.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import lmdb
import numpy as np

from kvstore.keys import chain_digests, chain_keys, chain_pages, root_key, tokens_digest
from kvstore.lmdb_store import LMDBStore
from kvstore.redis_store import RedisStore
from kvstore.tiers import TieredStore

MiB = 1 << 20


def _best(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def bench_hashing(n_tokens: int = 1 << 20, page: int = 64) -> list[tuple[str, float]]:
    ids = [random.randrange(150_000) for _ in range(n_tokens)]
    arr = np.asarray(ids, dtype=np.int32)
    root = root_key(b"bench-model", "fp8", page)
    rows = [
        ("chain_keys, list[int]", _best(lambda: chain_keys(root, ids, page))),
        ("chain_keys, int32 ndarray", _best(lambda: chain_keys(root, arr, page))),
        ("chain_digests, list[int]", _best(lambda: chain_digests(ids, page))),
        ("chain_pages (keys + digests), list[int]", _best(lambda: chain_pages(root, ids, page))),
        ("chain_pages (keys + digests), ndarray", _best(lambda: chain_pages(root, arr, page))),
    ]
    return [(name, secs / n_tokens * 1e9) for name, secs in rows]


def _pages(n: int, size: int) -> list[tuple[bytes, bytes, bytes, bytes]]:
    blob = os.urandom(size + n)
    out = []
    for i in range(n):
        key = i.to_bytes(16, "little")
        out.append((key, tokens_digest([i]), blob[i : i + size], blob[i : i + size // 32]))
    return out


def bench_lmdb(root: Path, total: int, size: int) -> list[tuple[str, float]]:
    n = total // size
    pages = _pages(n, size)
    rows = []
    for sync in (False, True):
        path = root / f"store-sync{int(sync)}"
        store = LMDBStore(path, 4 * total, sync=sync)
        t = time.perf_counter()
        for i in range(0, n, 64):
            store.put_many(pages[i : i + 64])
        rows.append((f"LMDBStore put_many x64 (sync={sync})", total / (time.perf_counter() - t)))
        if sync:
            store.close()
            continue
        order = random.sample(range(n), n)
        t = time.perf_counter()
        for i in order:
            store.get(pages[i][0], pages[i][1])
        rows.append(("LMDBStore get, random", total / (time.perf_counter() - t)))
        t = time.perf_counter()
        for i in range(0, n, 64):
            idx = order[i : i + 64]
            store.get_many([pages[j][0] for j in idx], [pages[j][1] for j in idx])
        rows.append(("LMDBStore get_many x64, random", total / (time.perf_counter() - t)))
        store.close()
    rows += _raw_lmdb(root / "raw", pages, total)
    return rows


def _raw_lmdb(path: Path, pages: list, total: int) -> list[tuple[str, float]]:
    env = lmdb.open(str(path), map_size=4 * total, sync=False, metasync=False, readahead=False)
    t = time.perf_counter()
    for i in range(0, len(pages), 64):
        with env.begin(write=True) as txn:
            for key, _, payload, _ in pages[i : i + 64]:
                txn.put(key, payload)
    put = total / (time.perf_counter() - t)
    order = random.sample(range(len(pages)), len(pages))
    t = time.perf_counter()
    for i in order:
        with env.begin(buffers=True) as txn:
            bytes(txn.get(pages[i][0]))
    get = total / (time.perf_counter() - t)
    env.close()
    return [("raw lmdb put x64 (sync=False)", put), ("raw lmdb get+copy, random", get)]


def bench_redis(url: str, total: int, size: int) -> list[tuple[str, float]]:
    n = total // size
    pages = _pages(n, size)
    store = RedisStore(url, namespace="bench:kv")
    store.clear()
    t = time.perf_counter()
    for i in range(0, n, 16):
        store.put_many(pages[i : i + 16])
    put = total / (time.perf_counter() - t)
    t = time.perf_counter()
    for key, digest, _, _ in pages:
        store.get(key, digest)
    get = total / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(0, n, 16):
        store.get_many([p[0] for p in pages[i : i + 16]], [p[1] for p in pages[i : i + 16]])
    get_many = total / (time.perf_counter() - t)
    store.clear()
    store.close()
    return [("Redis put_many x16", put), ("Redis get", get), ("Redis get_many x16", get_many)]


def bench_host(root: Path, size: int) -> list[tuple[str, float]]:
    pages = _pages(256, size)
    tiered = TieredStore(64 * size * 8, LMDBStore(root / "tiered", 64 * MiB))
    for p in pages:
        tiered.put(*p)
    t = time.perf_counter()
    for _ in range(4):
        for key, digest, _, _ in pages:
            tiered.get(key, digest)
    rate = 4 * len(pages) * size / (time.perf_counter() - t)
    tiered.close()
    return [("TieredStore get, host hit", rate)]


def _redis_url() -> tuple[str | None, subprocess.Popen | None]:
    if os.environ.get("STRATA_TEST_REDIS_URL"):
        return os.environ["STRATA_TEST_REDIS_URL"], None
    if not shutil.which("redis-server"):
        return None, None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.3)
    return f"redis://127.0.0.1:{port}/0", proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=128, help="bytes written per LMDB run")
    parser.add_argument("--page-kib", type=int, default=64, help="payload size")
    args = parser.parse_args()
    total, size = args.mib * MiB, args.page_kib * 1024
    print("| hashing (1M tokens, P=64) | ns/token |\n|---|---|")
    for name, ns in bench_hashing():
        print(f"| {name} | {ns:.1f} |")
    print(f"\n| I/O ({args.page_kib} KiB pages, {args.mib} MiB) | MB/s |\n|---|---|")
    with tempfile.TemporaryDirectory(prefix="kvbench-") as tmp:
        rows = bench_lmdb(Path(tmp), total, size) + bench_host(Path(tmp), size)
    url, proc = _redis_url()
    try:
        if url:
            rows += bench_redis(url, min(total, 64 * MiB), size)
    finally:
        if proc:
            proc.terminate()
            proc.wait()
    for name, rate in rows:
        print(f"| {name} | {rate / 1e6:,.0f} |")


if __name__ == "__main__":
    main()
