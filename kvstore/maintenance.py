"""Operations on a whole store (stats, verify, clear) for the CLI and for jobs.

These open the LMDB store directly (no host tier, no writer) and work on a store another
process is using at the same time. An unreadable store is where `verify --repair` and `clear`
earn their keep: both replace its files instead of failing like every other operation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from kvstore.lmdb_env import file_bytes
from kvstore.lmdb_store import LMDBStore
from kvstore.redis_store import RedisStore
from strata.errors import StoreError
from strata.settings import Settings, get_settings

VERIFY_TIMEOUT_S = 3600  # a scan reads every record once; far longer means something is wrong
_WAY_OUT = "run `strata cache verify --repair` or `strata cache clear`"


def store_path(settings: Settings | None = None, path: Path | None = None) -> Path:
    """The LMDB directory: `path` when given, else STRATA_HOME/lmdb."""
    return Path(path) if path is not None else (settings or get_settings()).home / "lmdb"


def cache_stats(settings: Settings | None = None, path: Path | None = None, redis: bool = False) -> dict:
    """Stats of the local store (and of the shared Redis tier when asked)."""
    settings = settings or get_settings()
    where = store_path(settings, path)
    out: dict = {"path": str(where)}
    if not (where / "data.mdb").exists():
        out["lmdb"] = {"exists": False}
    else:
        store = LMDBStore(where, max(settings.kv_disk_bytes, 1))
        try:
            out["lmdb"] = {"exists": True, **store.stats()}
        finally:
            store.close()
    if redis:
        out["redis"] = _with_redis(settings, lambda r: r.stats())
    return out


def cache_verify(
    settings: Settings | None = None,
    path: Path | None = None,
    repair: bool = False,
    redis: bool = False,
) -> dict:
    """Check every record; with repair, drop what fails (and rebuild an unreadable store).

    The scan runs first in a child process: LMDB trusts its own B-tree, and a tree damaged badly
    enough can kill the reader (SIGBUS/SIGSEGV). Here that kills the child, and the store is
    reported unreadable (or rebuilt with --repair) instead of taking the CLI down with it.
    """
    settings = settings or get_settings()
    where = store_path(settings, path)
    capacity = max(settings.kv_disk_bytes, 1)
    out: dict = {"path": str(where), "repair": repair}
    try:
        report = _in_child("verify", where, capacity)
        if repair:
            store = LMDBStore(where, capacity)
            try:
                report = store.verify(repair=True)
            finally:
                store.close()
        out["lmdb"] = report
    except StoreError as exc:
        if not repair:
            raise
        lost = file_bytes(where)
        removed = LMDBStore.destroy(where)
        LMDBStore(where, capacity).close()
        out["lmdb"] = {"unreadable": exc.message, "rebuilt": removed, "bytes_dropped": lost}
    if redis:
        out["redis"] = _with_redis(settings, lambda r: r.verify(repair))
    return out


_CHILD = """
import json, sys
from kvstore.lmdb_store import LMDBStore
from strata.errors import StoreError
try:
    store = LMDBStore(sys.argv[2], int(sys.argv[3]))
    if sys.argv[1] == "verify":
        report = store.verify()
    else:
        before = store.stats()
        store.clear()
        report = {"removed_entries": before["entries"], "freed_bytes": before["bytes"]}
    store.close()
    print(json.dumps(report))
except StoreError as exc:
    print(json.dumps({"error": exc.message}))
"""


def _in_child(action: str, where: Path, capacity: int) -> dict:
    """verify() (no repair) or clear() in a child process; StoreError when the store fails it."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, action, str(where), str(capacity)],
            capture_output=True,
            text=True,
            env=env,
            timeout=VERIFY_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise StoreError(f"KV store at {where}: {action} took over {VERIFY_TIMEOUT_S}s; {_WAY_OUT}") from None
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise StoreError(f"KV store at {where} is damaged: reading it crashed the reader ({name}); {_WAY_OUT}")
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        detail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise StoreError(f"KV store at {where}: {action} failed ({detail}); {_WAY_OUT}")
    report = json.loads(lines[-1])
    if "error" in report:
        raise StoreError(report["error"])
    return report


def cache_clear(settings: Settings | None = None, path: Path | None = None, redis: bool = False) -> dict:
    """Remove every page; an unreadable store's files are deleted instead."""
    settings = settings or get_settings()
    where = store_path(settings, path)
    out: dict = {"path": str(where)}
    try:
        # In a child, like verify: dropping the trees walks them, and a damaged one can crash.
        out["lmdb"] = _in_child("clear", where, max(settings.kv_disk_bytes, 1))
    except StoreError as exc:
        out["lmdb"] = {"unreadable": exc.message, "removed_files": LMDBStore.destroy(where)}
    if redis:
        out["redis"] = _with_redis(settings, _clear_redis)
    return out


def _clear_redis(store: RedisStore) -> dict:
    entries = store.stats()["entries"]
    store.clear()
    return {"removed_entries": entries}


def _with_redis(settings: Settings, fn: Callable[[RedisStore], dict]) -> dict:
    if not settings.kv_redis_url:
        raise StoreError("no Redis tier configured: set STRATA_KV_REDIS_URL")
    store = RedisStore(settings.kv_redis_url, ttl_s=settings.kv_redis_ttl_s, max_bytes=settings.kv_redis_max_bytes)
    try:
        return fn(store)
    finally:
        store.close()
