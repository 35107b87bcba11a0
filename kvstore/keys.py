"""Content-addressed page keys: key_i = H(key_{i-1}, token ids of page i, media hashes in page i).

H is BLAKE2b-128 over explicit little-endian bytes (token ids as uint32), so a key depends only
on its inputs, never on the process, the byte order or PYTHONHASHSEED. BLAKE2b rather than a
non-cryptographic hash because the tenant salt at the root must make cross-tenant collisions
infeasible to craft.
The tokens digest (a second check on a hit) is xxh3-128: it guards against bugs, not adversaries.
"""

from __future__ import annotations

import array
import struct
import sys
from collections.abc import Sequence
from hashlib import blake2b

import numpy as np
import xxhash

from strata.errors import BadRequest

LAYOUT_VERSION: int = 2  # 2: page payloads in per-layer sections, each with its checksum
KEY_BYTES = 16
DIGEST_BYTES = 16

# Distinct BLAKE2b personalisations keep root keys and page keys in separate domains.
_ROOT_PERSON = b"strata-kv-root"
_PAGE_PERSON = b"strata-kv-page"
_PAGE_HASHER = blake2b(digest_size=KEY_BYTES, person=_PAGE_PERSON)
_MAX_TOKEN_ID = (1 << 32) - 1

MediaSpan = tuple[int, int, bytes]


def root_key(
    model_fingerprint: bytes,
    kv_dtype: str,
    page_size: int,
    tenant_salt: bytes = b"",
    layout_version: int = LAYOUT_VERSION,
) -> bytes:
    """The key before the first page: everything that makes one model's KV unlike another's."""
    if not isinstance(model_fingerprint, bytes | bytearray) or not model_fingerprint:
        raise BadRequest("root_key: model_fingerprint must be non-empty bytes")
    if not isinstance(kv_dtype, str) or not kv_dtype:
        raise BadRequest("root_key: kv_dtype must be a non-empty string")
    _check_page_size(page_size)
    if not isinstance(tenant_salt, bytes | bytearray):
        raise BadRequest("root_key: tenant_salt must be bytes")
    h = blake2b(digest_size=KEY_BYTES, person=_ROOT_PERSON)
    dtype = kv_dtype.encode()
    # Length prefixes make the encoding injective: no two field tuples share a byte string.
    for field in (bytes(model_fingerprint), dtype, bytes(tenant_salt)):
        h.update(struct.pack("<I", len(field)))
        h.update(field)
    h.update(struct.pack("<II", page_size, layout_version))
    return h.digest()


def page_key(parent: bytes, token_ids: Sequence[int], media_hashes: Sequence[bytes] = ()) -> bytes:
    """The key of one page, chained on its parent's key."""
    _check_key(parent, "parent")
    return _page_key(parent, token_bytes(token_ids), _media_blob(media_hashes))


def tokens_digest(token_ids: Sequence[int]) -> bytes:
    """A digest of the page's token ids, stored in the record and re-checked on every hit."""
    return xxhash.xxh3_128_digest(token_bytes(token_ids))


def chain_keys(
    root: bytes,
    token_ids: Sequence[int],
    page_size: int,
    media: Sequence[MediaSpan] = (),
) -> list[bytes]:
    """One key per FULL page of `token_ids`; a media hash enters every page its span overlaps."""
    return chain_pages(root, token_ids, page_size, media)[0]


def chain_digests(token_ids: Sequence[int], page_size: int) -> list[bytes]:
    """tokens_digest of every full page, computed from one bulk conversion of the ids."""
    _check_page_size(page_size)
    data = memoryview(token_bytes(token_ids))
    step = 4 * page_size
    return [xxhash.xxh3_128_digest(data[i : i + step]) for i in range(0, len(data) - step + 1, step)]


def chain_pages(
    root: bytes,
    token_ids: Sequence[int],
    page_size: int,
    media: Sequence[MediaSpan] = (),
) -> tuple[list[bytes], list[bytes]]:
    """(keys, tokens digests) of every full page from one conversion: what a lookup needs."""
    _check_key(root, "root")
    _check_page_size(page_size)
    data = token_bytes(token_ids)
    step = 4 * page_size
    n_pages = len(data) // step
    per_page = _media_per_page(media, page_size, n_pages)
    keys: list[bytes] = []
    digests: list[bytes] = []
    # The hot loop of a prompt lookup: _page_key inlined, names bound locally (~2x faster).
    parent, length = root, struct.pack("<I", step)
    new_hasher, join, digest_of = _PAGE_HASHER.copy, b"".join, xxhash.xxh3_128_digest
    for i in range(n_pages):
        tokens = data[i * step : (i + 1) * step]
        h = new_hasher()
        h.update(join((parent, length, tokens, per_page.get(i, b""))))
        parent = h.digest()
        keys.append(parent)
        digests.append(digest_of(tokens))
    return keys, digests


def token_bytes(token_ids: Sequence[int]) -> bytes:
    """Token ids as little-endian uint32 bytes, converted in bulk (the hot part of hashing)."""
    if isinstance(token_ids, np.ndarray):
        return _ndarray_bytes(token_ids)
    try:
        # 'I' refuses negative and >= 2**32 values itself, without a Python-level pass.
        arr = array.array("I", token_ids)
    except (OverflowError, TypeError) as exc:
        raise BadRequest(f"token ids must be integers in [0, 2**32): {exc}") from None
    if arr.itemsize != 4:  # pragma: no cover - every platform CPython supports has a 4-byte int
        return _ndarray_bytes(np.asarray(token_ids))
    if sys.byteorder == "big":  # pragma: no cover - keys must not depend on the host
        arr.byteswap()
    return arr.tobytes()


def _ndarray_bytes(ids: np.ndarray) -> bytes:
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise BadRequest(f"token ids must be a 1-D integer array, got {ids.dtype} with shape {ids.shape}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) > _MAX_TOKEN_ID):
        raise BadRequest("token ids must be integers in [0, 2**32)")
    return np.ascontiguousarray(ids, dtype="<u4").tobytes()


def _page_key(parent: bytes, tokens: bytes | memoryview, media_blob: bytes) -> bytes:
    # Copying a pre-personalised hasher is about twice as fast as building one per page, and
    # one update of the joined bytes hashes exactly what separate updates would.
    h = _PAGE_HASHER.copy()
    h.update(b"".join((parent, struct.pack("<I", len(tokens)), tokens, media_blob)))
    return h.digest()


def _media_blob(media_hashes: Sequence[bytes]) -> bytes:
    parts = []
    for m in media_hashes:
        if not isinstance(m, bytes | bytearray) or not m:
            raise BadRequest("media hashes must be non-empty bytes")
        parts.append(struct.pack("<I", len(m)) + bytes(m))
    return b"".join(parts)


def _media_per_page(media: Sequence[MediaSpan], page_size: int, n_pages: int) -> dict[int, bytes]:
    """Map page index -> encoded media hashes of the spans overlapping it, in position order."""
    hits: dict[int, list[bytes]] = {}
    for span in sorted(media, key=lambda s: (s[0], s[1])):
        if len(span) != 3:
            raise BadRequest("media spans must be (start_position, length, media_hash) triples")
        start, length, digest = span
        if not isinstance(start, int) or not isinstance(length, int) or start < 0 or length <= 0:
            raise BadRequest(f"media span needs start >= 0 and length > 0, got ({start}, {length})")
        first, last = start // page_size, (start + length - 1) // page_size
        for page in range(first, min(last, n_pages - 1) + 1):
            hits.setdefault(page, []).append(digest)
    return {page: _media_blob(hashes) for page, hashes in hits.items()}


def _check_key(key: bytes, name: str) -> None:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise BadRequest(f"{name} must be a {KEY_BYTES}-byte page key")


def _check_page_size(page_size: int) -> None:
    if not isinstance(page_size, int) or page_size <= 0:
        raise BadRequest(f"page_size must be a positive integer, got {page_size!r}")
