"""Operations on a whole store (stats, verify, clear) for the CLI and for jobs.

These open the LMDB store directly (no host tier, no writer) and work on a store another
process is using at the same time. An unreadable store is where `verify --repair` and `clear`
earn their keep: both replace its files instead of failing like every other operation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kvstore.lmdb_env import file_bytes
from kvstore.lmdb_store import LMDBStore
from kvstore.redis_store import RedisStore
from strata.errors import StoreError
from strata.settings import Settings, get_settings


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
    """Check every record; with repair, drop what fails (and rebuild an unreadable store)."""
    settings = settings or get_settings()
    where = store_path(settings, path)
    out: dict = {"path": str(where), "repair": repair}
    try:
        store = LMDBStore(where, max(settings.kv_disk_bytes, 1))
    except StoreError as exc:
        if not repair:
            raise
        lost = file_bytes(where)
        removed = LMDBStore.destroy(where)
        LMDBStore(where, max(settings.kv_disk_bytes, 1)).close()
        out["lmdb"] = {"unreadable": exc.message, "rebuilt": removed, "bytes_dropped": lost}
    else:
        try:
            out["lmdb"] = store.verify(repair)
        finally:
            store.close()
    if redis:
        out["redis"] = _with_redis(settings, lambda r: r.verify(repair))
    return out


def cache_clear(settings: Settings | None = None, path: Path | None = None, redis: bool = False) -> dict:
    """Remove every page; an unreadable store's files are deleted instead."""
    settings = settings or get_settings()
    where = store_path(settings, path)
    out: dict = {"path": str(where)}
    try:
        store = LMDBStore(where, max(settings.kv_disk_bytes, 1))
    except StoreError as exc:
        out["lmdb"] = {"unreadable": exc.message, "removed_files": LMDBStore.destroy(where)}
    else:
        try:
            before = store.stats()
            store.clear()
            out["lmdb"] = {"removed_entries": before["entries"], "freed_bytes": before["bytes"]}
        finally:
            store.close()
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
