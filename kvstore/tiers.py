"""Host RAM over LMDB over (optionally) Redis, behind one PageStore.

Reads look in the fastest tier first and promote a hit into the faster tiers (host at once, LMDB
through its background writer). Writes go to host RAM at once and to LMDB and Redis through
background writers, so the caller never waits for a disk or a network. A Redis that fails is
treated as a miss and counted, never raised: it is a shared cache, not the source of truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from kvstore.host import HostTier
from kvstore.lmdb_store import LMDBStore
from kvstore.record import check_digest, check_sections
from kvstore.redis_store import RedisStore
from kvstore.store import check_item, check_key
from kvstore.writer import BackgroundWriter
from strata.errors import StoreError
from strata.settings import Settings, get_settings

log = logging.getLogger(__name__)
WRITER_QUEUE = 1024  # default of STRATA_KV_WRITE_QUEUE


class TieredStore:
    """A PageStore over a host tier, an LMDB tier and an optional Redis tier."""

    def __init__(
        self,
        host_bytes: int,
        lmdb: LMDBStore | None = None,
        redis: RedisStore | None = None,
        writer_queue: int = WRITER_QUEUE,
    ) -> None:
        self.host = HostTier(host_bytes)
        self.lmdb = lmdb
        self.redis = redis
        self.redis_errors = 0
        self._writers = {
            name: BackgroundWriter(store, max_queue=writer_queue)
            for name, store in (("lmdb", lmdb), ("redis", redis))
            if store is not None
        }

    def get(self, key: bytes, tokens_digest: bytes) -> bytes | None:
        """The payload from the fastest tier that has it; promoted into the faster tiers."""
        return self.get_many([key], [tokens_digest])[0]

    def get_many(self, keys: Sequence[bytes], digests: Sequence[bytes], sections: int = 1) -> list[bytes | None]:
        """get() for many keys: one host pass, one LMDB transaction, one Redis round trip.

        `sections` is how the payloads were stored (put): hits promoted into faster tiers keep it.
        """
        self._check_keys(keys, digests)
        out: list[bytes | None] = [self.host.get(k, d) for k, d in zip(keys, digests, strict=True)]
        for tier in ("lmdb", "redis"):
            missing = [i for i, v in enumerate(out) if v is None]
            if not missing:
                break
            found = self._tier_get(tier, [keys[i] for i in missing], [digests[i] for i in missing])
            for i, value in zip(missing, found, strict=True):
                if value is not None:
                    out[i] = value
                    self._promote(tier, keys[i], digests[i], value, sections)
        return out

    def get_sections(self, keys: Sequence[bytes], digests: Sequence[bytes], index: int) -> list[bytes | None]:
        """Section `index` (one layer) of each page from the fastest tier that has it; not promoted.

        A persistent tier reads and checks just that section, so a layer of a page costs its own
        bytes, not the page's.
        """
        self._check_keys(keys, digests)
        out = [self.host.get_section(k, d, index) for k, d in zip(keys, digests, strict=True)]
        self._fill_below_host(out, lambda store, idx: store.get_sections([keys[i] for i in idx],
                                                                         [digests[i] for i in idx], index))
        return out

    def _fill_below_host(self, out: list[bytes | None],
                         read: Callable[[LMDBStore | RedisStore, list[int]], list[bytes | None]]) -> list[int]:
        """Fill the gaps in `out` from LMDB, then Redis (a failing Redis is a miss); the indices filled."""
        filled: list[int] = []
        for store in (self.lmdb, self.redis):
            missing = [i for i, v in enumerate(out) if v is None]
            if not missing or store is None:
                continue
            try:
                found = read(store, missing)
            except StoreError as exc:
                if store is self.lmdb:
                    raise
                self._redis_failed(exc)
                break
            for i, value in zip(missing, found, strict=True):
                if value is not None:
                    out[i] = value
                    filled.append(i)
        return filled

    @staticmethod
    def _check_keys(keys: Sequence[bytes], digests: Sequence[bytes]) -> None:
        if len(keys) != len(digests):
            raise StoreError(f"get_many: {len(keys)} keys but {len(digests)} digests")
        for key, digest in zip(keys, digests, strict=True):
            check_key(key)
            check_digest(digest)

    def _tier_get(self, tier: str, keys: list[bytes], digests: list[bytes]) -> list[bytes | None]:
        if tier == "lmdb":
            return self.lmdb.get_many(keys, digests) if self.lmdb else [None] * len(keys)
        if self.redis is None:
            return [None] * len(keys)
        try:
            return self.redis.get_many(keys, digests)
        except StoreError as exc:
            self._redis_failed(exc)
            return [None] * len(keys)

    def _promote(self, tier: str, key: bytes, digest: bytes, payload: bytes, sections: int) -> None:
        if len(payload) % sections:
            sections = 1  # not stored the way the caller expects: keep it whole
        summary = self.host.get_summary(key) or self._persistent_summary(key, tier)
        self.host.put(key, digest, payload, summary, sections)
        if tier == "redis" and summary is not None and "lmdb" in self._writers:
            self._writers["lmdb"].submit(key, digest, payload, summary, sections)

    def get_summary(self, key: bytes) -> bytes | None:
        """The summary from the fastest tier that has it; kept in host RAM afterwards."""
        return self.get_summaries([key])[0]

    def get_summaries(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """get_summary() for many keys: one host pass, one LMDB transaction, one Redis round trip."""
        for key in keys:
            check_key(key)
        out = [self.host.get_summary(key) for key in keys]
        for i in self._fill_below_host(out, lambda store, idx: store.get_summaries([keys[i] for i in idx])):
            self.host.put(keys[i], None, None, out[i])
        return out

    def _persistent_summary(self, key: bytes, deepest: str) -> bytes | None:
        summary = self.lmdb.get_summary(key) if self.lmdb else None
        if summary is None and deepest == "redis" and self.redis is not None:
            try:
                summary = self.redis.get_summary(key)
            except StoreError as exc:
                self._redis_failed(exc)
        return summary

    def contains(self, key: bytes) -> bool:
        """Whether any tier holds the page (unchecked; get() checks)."""
        check_key(key)
        if self.host.contains(key) or (self.lmdb is not None and self.lmdb.contains(key)):
            return True
        if self.redis is None:
            return False
        try:
            return self.redis.contains(key)
        except StoreError as exc:
            self._redis_failed(exc)
            return False

    def put(self, key: bytes, tokens_digest: bytes, payload: bytes, summary: bytes, sections: int = 1) -> bool:
        """Hold the page in host RAM and queue it for LMDB and Redis; True if any tier took it.

        The payload is stored as `sections` equal parts (one per layer), each readable alone.
        """
        check_item(key, payload, summary)
        check_digest(tokens_digest)
        payload, summary = bytes(payload), bytes(summary)
        check_sections(len(payload), sections)
        taken = self.host.put(key, tokens_digest, payload, summary, sections)
        for writer in self._writers.values():
            taken = writer.submit(key, tokens_digest, payload, summary, sections) or taken
        return taken

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until queued writes reach LMDB and Redis; False on timeout."""
        return all(w.flush(timeout) for w in self._writers.values())

    def stats(self) -> dict:
        """Bytes and hit/miss counters per tier, and the writers' counters."""
        out: dict = {"host": self.host.stats()}
        if self.lmdb is not None:
            out["lmdb"] = self.lmdb.stats()
        if self.redis is not None:
            try:
                out["redis"] = self.redis.stats()
            except StoreError as exc:
                out["redis"] = {"error": exc.message}
            out["redis"]["errors"] = self.redis_errors
        out["writers"] = {name: w.stats() for name, w in self._writers.items()}
        return out

    def verify(self, repair: bool = False) -> dict:
        """verify() of each persistent tier."""
        self.flush()
        out = {}
        if self.lmdb is not None:
            out["lmdb"] = self.lmdb.verify(repair)
        if self.redis is not None:
            out["redis"] = self.redis.verify(repair)
        return out

    def clear(self) -> None:
        """Empty every tier (after the queued writes, so none lands afterwards)."""
        self.flush()
        self.host.clear()
        for store in (self.lmdb, self.redis):
            if store is not None:
                store.clear()

    def close(self) -> None:
        """Finish queued writes, then close the persistent tiers."""
        for writer in self._writers.values():
            writer.close()
        for store in (self.lmdb, self.redis):
            if store is not None:
                store.close()

    def _redis_failed(self, exc: StoreError) -> None:
        self.redis_errors += 1
        log.warning("kvstore: Redis tier failed, treated as a miss: %s", exc.message)


def open_store(settings: Settings | None = None, path: Path | None = None) -> TieredStore:
    """The process's tiered store from settings: STRATA_KV_HOST_BYTES, _DISK_BYTES, _REDIS_URL.

    A disk budget of 0 leaves LMDB out; an unreachable Redis is logged and left out, not fatal.
    """
    settings = settings or get_settings()
    lmdb = None
    if settings.kv_disk_bytes > 0:
        lmdb = LMDBStore(path or settings.home / "lmdb", settings.kv_disk_bytes)
    redis = None
    if settings.kv_redis_url:
        try:
            redis = RedisStore(
                settings.kv_redis_url,
                ttl_s=settings.kv_redis_ttl_s,
                max_bytes=settings.kv_redis_max_bytes,
            )
        except StoreError as exc:
            log.warning("kvstore: Redis tier disabled: %s", exc.message)
    return TieredStore(settings.kv_host_bytes, lmdb, redis, writer_queue=settings.kv_write_queue)
