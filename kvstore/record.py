"""The stored record: a fixed header in front of an opaque payload, checked on every read.

    offset size field
    0      4    magic b"SKV1"
    4      2    layout version (uint16, little-endian)
    6      2    kind: 1 = page payload, 2 = page summary
    8      16   tokens digest (xxh3-128 of the page's uint32 token ids)
    24     8    payload length (uint64)
    32     8    checksum: xxh3-64 of the payload
    40     -    payload

LMDB and Redis store the same bytes, so a record written on one machine is checked the same way
on another.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import xxhash

from kvstore.keys import DIGEST_BYTES, LAYOUT_VERSION
from strata.errors import BadRequest

MAGIC = b"SKV1"
KIND_PAGE = 1
KIND_SUMMARY = 2
_HEADER = struct.Struct("<4sHH16sQQ")
HEADER_BYTES = _HEADER.size


@dataclass(slots=True, frozen=True)
class Header:
    layout_version: int
    kind: int
    tokens_digest: bytes
    length: int
    checksum: int


class RecordError(Exception):
    """A stored record that must not be served; `reason` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(kind: int, tokens_digest: bytes, payload: bytes | memoryview) -> bytes:
    """Header + payload as one bytes object, ready to store."""
    check_digest(tokens_digest)
    payload = _byte_view(payload)
    header = _HEADER.pack(MAGIC, LAYOUT_VERSION, kind, tokens_digest, len(payload), xxhash.xxh3_64_intdigest(payload))
    return b"".join((header, payload))


def _byte_view(payload: bytes | memoryview) -> bytes | memoryview:
    """Bytes as they are; any other buffer as a flat byte view, so len() counts bytes."""
    if isinstance(payload, bytes):
        return payload
    try:
        return memoryview(payload).cast("B")
    except TypeError as exc:
        raise BadRequest(f"page payloads must be contiguous buffers: {exc}") from None


def read_header(raw: bytes | memoryview) -> Header:
    """Parse and sanity-check the header; raises RecordError when it is not ours."""
    if len(raw) < HEADER_BYTES:
        raise RecordError("truncated header")
    magic, layout, kind, digest, length, checksum = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise RecordError("bad magic")
    if layout != LAYOUT_VERSION:
        raise RecordError(f"layout version {layout}, expected {LAYOUT_VERSION}")
    if length != len(raw) - HEADER_BYTES:
        raise RecordError("length mismatch")
    return Header(layout, kind, digest, length, checksum)


def decode(raw: bytes | memoryview, kind: int, tokens_digest: bytes | None = None) -> memoryview:
    """The payload of a record after every check passes (a view into `raw`, no copy)."""
    header = read_header(raw)
    if header.kind != kind:
        raise RecordError(f"kind {header.kind}, expected {kind}")
    if tokens_digest is not None and header.tokens_digest != tokens_digest:
        raise RecordError("tokens digest mismatch")
    payload = memoryview(raw)[HEADER_BYTES:]
    if xxhash.xxh3_64_intdigest(payload) != header.checksum:
        raise RecordError("checksum mismatch")
    return payload


def check_digest(digest: bytes) -> None:
    """Refuse a tokens digest of the wrong type or length, naming the problem."""
    if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        raise BadRequest(f"tokens_digest must be {DIGEST_BYTES} bytes (kvstore.keys.tokens_digest)")
