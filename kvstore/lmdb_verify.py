"""A full scan of an LMDB page store: which records pass every check, which must go."""

from __future__ import annotations

import struct

import lmdb

from kvstore import record

_ACCESS = struct.Struct("<QQ")


def scan(txn: lmdb.Transaction, dbs: dict) -> tuple[dict, list[bytes], list[bytes]]:
    """Return (report, keys to delete, stale lru index keys) for one consistent snapshot."""
    ok = corrupt = charged = 0
    bad: list[bytes] = []
    reasons: dict[str, int] = {}
    for key, raw in txn.cursor(db=dbs["pages"]):
        key = bytes(key)
        reason = _check(txn, dbs, key, raw)
        if reason is None:
            ok += 1
            charged += _ACCESS.unpack(txn.get(key, db=dbs["access"]) or b"")[1]
        else:
            corrupt += 1
            bad.append(key)
            reasons[reason] = reasons.get(reason, 0) + 1
    orphans = _orphans(txn, dbs)
    stale_lru = _stale_lru(txn, dbs)
    report = {
        "ok": ok,
        "corrupt": corrupt,
        "orphans": len(orphans),
        "stale_lru": len(stale_lru),
        "reasons": reasons,
        "charged_bytes": charged,
    }
    return report, bad + orphans, stale_lru


def _check(txn: lmdb.Transaction, dbs: dict, key: bytes, raw: bytes | memoryview) -> str | None:
    """Why this page fails (None when it passes): its record, its summary, its bookkeeping."""
    try:
        header = record.read_header(raw)
        record.decode(raw, record.KIND_PAGE, header.tokens_digest)
        summary = txn.get(key, db=dbs["summaries"])
        if summary is None:
            return "summary missing"
        record.decode(summary, record.KIND_SUMMARY, header.tokens_digest)
    except record.RecordError as exc:
        return exc.reason
    access = txn.get(key, db=dbs["access"])
    if access is None or len(access) != _ACCESS.size:
        return "access record missing"
    ts = _ACCESS.unpack(access)[0]
    if txn.get(ts.to_bytes(8, "big") + key, db=dbs["lru"]) is None:
        return "lru entry missing"  # would never be evicted
    return None


def _orphans(txn: lmdb.Transaction, dbs: dict) -> list[bytes]:
    """Summaries or access records whose page is gone."""
    found = set()
    for name in ("summaries", "access"):
        for key in txn.cursor(db=dbs[name]).iternext(keys=True, values=False):
            if txn.get(key, db=dbs["pages"]) is None:
                found.add(bytes(key))
    return sorted(found)


def _stale_lru(txn: lmdb.Transaction, dbs: dict) -> list[bytes]:
    """LRU index entries that do not match their key's access record."""
    stale = []
    for lru_key in txn.cursor(db=dbs["lru"]).iternext(keys=True, values=False):
        lru_key = bytes(lru_key)
        access = txn.get(lru_key[8:], db=dbs["access"])
        if access is None or _ACCESS.unpack(access)[0] != int.from_bytes(lru_key[:8], "big"):
            stale.append(lru_key)
    return stale
