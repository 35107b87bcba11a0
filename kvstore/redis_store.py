"""Pages shared between machines through Redis, with the same records and checks as LMDB.

Keys: `<ns>:page:<hex>` and `<ns>:sum:<hex>` hold records (kvstore.record); `<ns>:lru` is a
sorted set hex -> last access in microseconds, `<ns>:size` a hash hex -> charged bytes and `<ns>:bytes` their
total. Puts, drops and evictions run as Lua scripts so the accounting stays consistent when many
machines write at once. Scripts build key names from the namespace, so this targets one Redis
node, not Redis Cluster.

With ttl_s, pages expire on their own and hits refresh the TTL; the accounting of an expired page
lingers until it reaches the front of the LRU (it is the least recently used by construction) or
`verify(repair=True)` runs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast
from urllib.parse import urlsplit

import redis

from kvstore import record
from kvstore.keys import KEY_BYTES
from kvstore.store import PageItem, check_item, check_key, item_fields
from strata.errors import StoreError

ENTRY_OVERHEAD = 128
_LOW_WATER = 0.9
_SCAN_BATCH = 500

_PUT = """
local ttl = tonumber(ARGV[6])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('ZADD', KEYS[3], 'XX', ARGV[4], ARGV[3])
  if ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl); redis.call('EXPIRE', KEYS[2], ttl) end
  return -1
end
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
  redis.call('SET', KEYS[2], ARGV[2], 'EX', ttl)
else
  redis.call('SET', KEYS[1], ARGV[1])
  redis.call('SET', KEYS[2], ARGV[2])
end
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
local old = tonumber(redis.call('HGET', KEYS[4], ARGV[3]) or '0')
redis.call('HSET', KEYS[4], ARGV[3], ARGV[5])
return redis.call('INCRBY', KEYS[5], tonumber(ARGV[5]) - old)
"""

# Drop entries by hex (ARGV[3..]); KEYS = lru, size, bytes; ARGV[1..2] = page and summary prefixes.
_DROP = """
local freed = 0
for i = 3, #ARGV do
  local hex = ARGV[i]
  freed = freed + tonumber(redis.call('HGET', KEYS[2], hex) or '0')
  redis.call('DEL', ARGV[1] .. hex, ARGV[2] .. hex)
  redis.call('ZREM', KEYS[1], hex)
  redis.call('HDEL', KEYS[2], hex)
end
local total = tonumber(redis.call('GET', KEYS[3]) or '0') - freed
if total < 0 then total = 0 end
redis.call('SET', KEYS[3], total)
return freed
"""

# Evict least recently used until the total is at most ARGV[3]; returns the number evicted.
_EVICT = """
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
local n = 0
while total > tonumber(ARGV[3]) do
  local v = redis.call('ZRANGE', KEYS[1], 0, 0)
  if #v == 0 then total = 0; break end
  local hex = v[1]
  total = total - tonumber(redis.call('HGET', KEYS[2], hex) or '0')
  redis.call('DEL', ARGV[1] .. hex, ARGV[2] .. hex)
  redis.call('ZREM', KEYS[1], hex)
  redis.call('HDEL', KEYS[2], hex)
  n = n + 1
end
if total < 0 then total = 0 end
redis.call('SET', KEYS[3], total)
return n
"""


class RedisStore:
    """A PageStore in Redis; Redis failures raise StoreError (the tiered store treats them as misses)."""

    def __init__(
        self,
        url: str,
        ttl_s: int | None = None,
        max_bytes: int | None = None,
        namespace: str = "strata:kv",
        timeout_s: float = 2.0,
    ) -> None:
        if ttl_s is not None and ttl_s <= 0:
            raise StoreError(f"Redis ttl_s must be positive, got {ttl_s}")
        if max_bytes is not None and max_bytes <= 0:
            raise StoreError(f"Redis max_bytes must be positive, got {max_bytes}")
        parts = urlsplit(url)
        self.where = f"{parts.hostname}:{parts.port or 6379}"  # never echo a password
        self.ttl_s, self.max_bytes, self.ns = ttl_s, max_bytes, namespace
        self._page, self._sum = f"{namespace}:page:", f"{namespace}:sum:"
        self._acct = [f"{namespace}:lru", f"{namespace}:size", f"{namespace}:bytes"]
        self.counters = dict.fromkeys(("hits", "misses", "corrupt", "puts", "evicted"), 0)
        try:
            self._r = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
            self._r.ping()
            self._put_script = self._r.register_script(_PUT)
            self._drop_script = self._r.register_script(_DROP)
            self._evict_script = self._r.register_script(_EVICT)
        except (redis.RedisError, ValueError) as exc:
            raise StoreError(f"Redis KV store at {self.where} is unreachable: {exc}") from None

    def get(self, key: bytes, tokens_digest: bytes) -> bytes | None:
        """The page payload, or None on a miss; a record that fails a check is deleted."""
        return self.get_many([key], [tokens_digest])[0]

    def get_many(self, keys: Sequence[bytes], digests: Sequence[bytes]) -> list[bytes | None]:
        """get() for many keys in one round trip (GET or GETEX, plus an LRU touch)."""
        return self._get_pages(keys, digests, None)

    def get_sections(self, keys: Sequence[bytes], digests: Sequence[bytes], index: int) -> list[bytes | None]:
        """Section `index` of each page, checked alone (the whole record crosses the network)."""
        return self._get_pages(keys, digests, index)

    def _get_pages(self, keys: Sequence[bytes], digests: Sequence[bytes], section: int | None) -> list[bytes | None]:
        if len(keys) != len(digests):
            raise StoreError(f"get_many: {len(keys)} keys but {len(digests)} digests")
        for key, digest in zip(keys, digests, strict=True):
            check_key(key)
            record.check_digest(digest)
        now = _now_us()
        with self._errors():
            pipe = self._r.pipeline(transaction=False)
            for key in keys:
                if self.ttl_s:
                    pipe.getex(self._page + key.hex(), ex=self.ttl_s)
                else:
                    pipe.get(self._page + key.hex())
                pipe.zadd(self._acct[0], {key.hex(): now}, xx=True)
            raws = pipe.execute()[::2]
        out: list[bytes | None] = []
        bad: list[bytes] = []
        for key, digest, raw in zip(keys, digests, raws, strict=True):
            out.append(self._check(key, raw, record.KIND_PAGE, digest, bad, section))
        if bad:
            self._drop(bad)
        return out

    def get_summary(self, key: bytes) -> bytes | None:
        """The page summary, or None."""
        return self.get_summaries([key])[0]

    def get_summaries(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """get_summary() for many keys in one round trip (MGET)."""
        for key in keys:
            check_key(key)
        if not keys:
            return []
        with self._errors():
            raws = cast(list[bytes | None], self._r.mget([self._sum + key.hex() for key in keys]))
        bad: list[bytes] = []
        values = [self._check(k, raw, record.KIND_SUMMARY, None, bad) for k, raw in zip(keys, raws, strict=True)]
        if bad:
            self._drop(bad)
        return values

    def _check(self, key: bytes, raw: bytes | None, kind: int, digest: bytes | None, bad: list[bytes],
               section: int | None = None) -> bytes | None:
        if raw is None:
            self.counters["misses"] += kind == record.KIND_PAGE
            return None
        try:
            if section is not None:
                value = bytes(record.decode_section(raw, kind, digest, section))
            else:
                value = bytes(record.decode(raw, kind, digest))
        except record.RecordError:
            self.counters["corrupt"] += 1
            bad.append(key)
            return None
        self.counters["hits"] += kind == record.KIND_PAGE
        return value

    def contains(self, key: bytes) -> bool:
        """Whether a page is stored under key (not checked: get() does that)."""
        check_key(key)
        with self._errors():
            return bool(self._r.exists(self._page + key.hex()))

    def put(self, key: bytes, tokens_digest: bytes, payload: bytes, summary: bytes, sections: int = 1) -> bool:
        """Store a page (a no-op that refreshes its TTL when present); evicts over max_bytes."""
        return self.put_many([(key, tokens_digest, payload, summary, sections)])[0]

    def put_many(self, items: Sequence[PageItem]) -> list[bool]:
        """Store pages in one pipelined round trip."""
        now = _now_us()
        stored = []
        with self._errors():
            pipe = self._r.pipeline(transaction=False)
            for key, digest, payload, summary, sections in map(item_fields, items):
                check_item(key, payload, summary)
                page = record.encode(record.KIND_PAGE, digest, payload, sections)
                summ = record.encode(record.KIND_SUMMARY, digest, summary)
                size = len(page) + len(summ) + ENTRY_OVERHEAD
                stored.append(not self.max_bytes or size <= self.max_bytes * _LOW_WATER)
                if not stored[-1]:
                    continue  # larger than the whole budget: storing it would evict everything
                hexkey = key.hex()
                self._put_script(
                    keys=[self._page + hexkey, self._sum + hexkey, *self._acct],
                    args=[page, summ, hexkey, now, size, self.ttl_s or 0],
                    client=pipe,
                )
            totals = pipe.execute()
            self.counters["puts"] += sum(1 for t in totals if t >= 0)
            if self.max_bytes and max(totals, default=0) > self.max_bytes:
                target = int(self.max_bytes * _LOW_WATER)
                self.counters["evicted"] += self._evict_script(keys=self._acct, args=[self._page, self._sum, target])
        return stored

    def _drop(self, keys: Sequence[bytes]) -> None:
        with self._errors():
            self._drop_script(keys=self._acct, args=[self._page, self._sum, *(k.hex() for k in keys)])

    def stats(self) -> dict:
        """Entries and bytes as accounted in Redis, the server's memory, this process's counters."""
        with self._errors():
            pipe = self._r.pipeline(transaction=False)
            pipe.zcard(self._acct[0])
            pipe.get(self._acct[2])
            pipe.info("memory")
            entries, total, info = pipe.execute()
        return {
            "url": self.where,
            "namespace": self.ns,
            "entries": int(entries),
            "bytes": int(total or 0),
            "max_bytes": self.max_bytes,
            "ttl_s": self.ttl_s,
            "server_used_memory": int(info.get("used_memory", 0)),
            **self.counters,
        }

    def verify(self, repair: bool = False) -> dict:
        """Check every page and summary under the namespace; repair drops the bad and the expired."""
        ok = corrupt = 0
        bad: list[bytes] = []
        with self._errors():
            for hexes in self._scan_hexes(self._page):
                pipe = self._r.pipeline(transaction=False)
                for h in hexes:
                    pipe.get(self._page + h)
                    pipe.get(self._sum + h)
                values = pipe.execute()
                for i, h in enumerate(hexes):
                    page, summary = values[2 * i], values[2 * i + 1]
                    if page is None and summary is None:
                        continue  # expired or deleted between SCAN and GET
                    if _record_ok(page, summary):
                        ok += 1
                    else:
                        corrupt += 1
                        bad.append(bytes.fromhex(h))
            stale = self._stale()
        removed = 0
        if repair and (bad or stale):
            self._drop(bad + stale)
            removed = len(bad)
        return {"ok": ok, "corrupt": corrupt, "stale": len(stale), "removed": removed}

    def _stale(self) -> list[bytes]:
        """Accounted entries whose page is gone (expired by TTL or deleted by hand)."""
        names = cast(list[bytes], self._r.zrange(self._acct[0], 0, -1))
        hexes = [h.decode(errors="replace") for h in names]
        members = [bytes.fromhex(h) for h in hexes if _is_key_hex(h)]
        pipe = self._r.pipeline(transaction=False)
        for k in members:
            pipe.exists(self._page + k.hex())
        return [k for k, present in zip(members, pipe.execute(), strict=True) if not present]

    def _scan_hexes(self, prefix: str) -> list[list[str]]:
        batches, batch = [], []
        for name in self._r.scan_iter(match=prefix + "*", count=_SCAN_BATCH):
            hexkey = name.decode(errors="replace")[len(prefix) :]
            if not _is_key_hex(hexkey):
                continue  # not written by Strata: not ours to judge or delete
            batch.append(hexkey)
            if len(batch) >= _SCAN_BATCH:
                batches.append(batch)
                batch = []
        return [*batches, batch] if batch else batches

    def clear(self) -> None:
        """Delete every key under the namespace (never the rest of the server)."""
        with self._errors():
            names = list(self._r.scan_iter(match=self.ns + ":*", count=_SCAN_BATCH))
            for i in range(0, len(names), _SCAN_BATCH):
                self._r.unlink(*names[i : i + _SCAN_BATCH])

    def close(self) -> None:
        """Close the connection pool."""
        self._r.close()

    def _errors(self) -> _RedisErrors:
        return _RedisErrors(self.where)


class _RedisErrors:
    """Turns any Redis client failure into a StoreError naming the server."""

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None and isinstance(exc, redis.RedisError):
            raise StoreError(f"Redis KV store at {self.where} failed: {exc}") from None


def _record_ok(page: bytes | None, summary: bytes | None) -> bool:
    if page is None or summary is None:
        return False  # one half of the pair is gone
    try:
        header = record.read_header(page)
        record.decode(page, record.KIND_PAGE, header.tokens_digest)
        record.decode(summary, record.KIND_SUMMARY, header.tokens_digest)
    except record.RecordError:
        return False
    return True


def _is_key_hex(text: str) -> bool:
    if len(text) != 2 * KEY_BYTES:
        return False
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


def _now_us() -> int:
    # Microseconds stay exact in a sorted-set score (a double) until the year 2255.
    return time.time_ns() // 1_000
