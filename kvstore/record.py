"""The stored record: a fixed header, a table of section checksums, a payload; checked on every read.

    offset size      field
    0      4         magic b"SKV1"
    4      2         layout version (uint16, little-endian)
    6      2         kind: 1 = page payload, 2 = page summary
    8      16        tokens digest (xxh3-128 of the page's uint32 token ids)
    24     8         payload length (uint64)
    32     8         checksum: xxh3-64 of the section table
    40     4         sections n (uint32): the payload is n equal parts
    44     4         reserved (0)
    48     8n        section table: xxh3-64 of each part
    48+8n  -         payload

A page payload is stored in sections (one per model layer) so a reader can take one layer of a
page and check just that: `decode_section` hashes the table and the one part it returns. `decode`
checks every part. LMDB and Redis store the same bytes, so a record written on one machine is
checked the same way on another.
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
MAX_SECTIONS = 4096
_HEADER = struct.Struct("<4sHH16sQQII")
_CHECKSUM = struct.Struct("<Q")
HEADER_BYTES = _HEADER.size


@dataclass(slots=True, frozen=True)
class Header:
    layout_version: int
    kind: int
    tokens_digest: bytes
    length: int
    checksum: int
    sections: int

    @property
    def payload_offset(self) -> int:
        return HEADER_BYTES + _CHECKSUM.size * self.sections

    @property
    def section_bytes(self) -> int:
        return self.length // self.sections


class RecordError(Exception):
    """A stored record that must not be served; `reason` says which check failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(kind: int, tokens_digest: bytes, payload: bytes | memoryview, sections: int = 1) -> bytes:
    """Header + section table + payload as one bytes object, ready to store."""
    check_digest(tokens_digest)
    payload = _byte_view(payload)
    check_sections(len(payload), sections)
    part = len(payload) // sections
    view = memoryview(payload)
    table = b"".join(_CHECKSUM.pack(xxhash.xxh3_64_intdigest(view[i * part:(i + 1) * part]))
                     for i in range(sections))
    header = _HEADER.pack(MAGIC, LAYOUT_VERSION, kind, tokens_digest, len(payload),
                          xxhash.xxh3_64_intdigest(table), sections, 0)
    return b"".join((header, table, payload))


def check_sections(length: int, sections: int) -> None:
    """Refuse a section count that does not split the payload into equal parts."""
    if not isinstance(sections, int) or not 1 <= sections <= MAX_SECTIONS or length % sections:
        raise BadRequest(f"a payload of {length} bytes cannot be stored in {sections!r} equal sections")


def _byte_view(payload: bytes | memoryview) -> bytes | memoryview:
    """Bytes as they are; any other buffer as a flat byte view, so len() counts bytes."""
    if isinstance(payload, bytes):
        return payload
    try:
        return memoryview(payload).cast("B")
    except TypeError as exc:
        raise BadRequest(f"page payloads must be contiguous buffers: {exc}") from None


def read_header(raw: bytes | memoryview) -> Header:
    """Parse and sanity-check the header and the section table; raises RecordError when it is not ours."""
    if len(raw) < HEADER_BYTES:
        raise RecordError("truncated header")
    magic, layout, kind, digest, length, checksum, sections, _ = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise RecordError("bad magic")
    if layout != LAYOUT_VERSION:
        raise RecordError(f"layout version {layout}, expected {LAYOUT_VERSION}")
    if not 1 <= sections <= MAX_SECTIONS or length % sections:
        raise RecordError("bad section count")
    header = Header(layout, kind, digest, length, checksum, sections)
    if length != len(raw) - header.payload_offset:
        raise RecordError("length mismatch")
    if xxhash.xxh3_64_intdigest(memoryview(raw)[HEADER_BYTES:header.payload_offset]) != checksum:
        raise RecordError("checksum mismatch")
    return header


def _checked(raw: bytes | memoryview, kind: int, tokens_digest: bytes | None) -> Header:
    header = read_header(raw)
    if header.kind != kind:
        raise RecordError(f"kind {header.kind}, expected {kind}")
    if tokens_digest is not None and header.tokens_digest != tokens_digest:
        raise RecordError("tokens digest mismatch")
    return header


def _section(raw: bytes | memoryview, header: Header, index: int) -> memoryview:
    part = header.section_bytes
    start = header.payload_offset + index * part
    body = memoryview(raw)[start:start + part]
    (want,) = _CHECKSUM.unpack_from(raw, HEADER_BYTES + _CHECKSUM.size * index)
    if xxhash.xxh3_64_intdigest(body) != want:
        raise RecordError("checksum mismatch")
    return body


def decode(raw: bytes | memoryview, kind: int, tokens_digest: bytes | None = None) -> memoryview:
    """The payload of a record after every check passes (a view into `raw`, no copy)."""
    header = _checked(raw, kind, tokens_digest)
    for index in range(header.sections):
        _section(raw, header, index)
    return memoryview(raw)[header.payload_offset:]


def decode_section(raw: bytes | memoryview, kind: int, tokens_digest: bytes | None, index: int) -> memoryview:
    """Part `index` of a record's payload, after the header, the table and that part are checked."""
    header = _checked(raw, kind, tokens_digest)
    if not 0 <= index < header.sections:
        raise RecordError(f"section {index} of {header.sections}")
    return _section(raw, header, index)


def check_digest(digest: bytes) -> None:
    """Refuse a tokens digest of the wrong type or length, naming the problem."""
    if not isinstance(digest, bytes) or len(digest) != DIGEST_BYTES:
        raise BadRequest(f"tokens_digest must be {DIGEST_BYTES} bytes (kvstore.keys.tokens_digest)")
