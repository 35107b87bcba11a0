"""The interface every page store offers: LMDBStore, RedisStore and TieredStore."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from kvstore.keys import KEY_BYTES
from strata.errors import BadRequest

# One pending write: (key, tokens digest, payload, summary[, sections]); sections defaults to 1.
PageItem = tuple[bytes, bytes, bytes, bytes] | tuple[bytes, bytes, bytes, bytes, int]


def item_fields(item: PageItem) -> tuple[bytes, bytes, bytes, bytes, int]:
    """A PageItem with its section count spelled out."""
    if len(item) == 4:
        return (*item, 1)
    return item  # type: ignore[return-value]


@runtime_checkable
class PageStore(Protocol):
    def get(self, key: bytes, tokens_digest: bytes) -> bytes | None:
        """The payload stored under `key`, or None on a miss or a failed check."""
        ...

    def get_many(self, keys: Sequence[bytes], digests: Sequence[bytes]) -> list[bytes | None]:
        """get() for many keys at once (one transaction / round trip)."""
        ...

    def get_sections(self, keys: Sequence[bytes], digests: Sequence[bytes], index: int) -> list[bytes | None]:
        """Section `index` of each page's payload (one model layer), checked on its own; None on a miss."""
        ...

    def get_summary(self, key: bytes) -> bytes | None:
        """The page summary stored under `key`, or None."""
        ...

    def get_summaries(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """get_summary() for many keys at once (one transaction / round trip)."""
        ...

    def contains(self, key: bytes) -> bool:
        """Whether a page is stored under `key` (without reading or checking it)."""
        ...

    def put(self, key: bytes, tokens_digest: bytes, payload: bytes, summary: bytes, sections: int = 1) -> bool:
        """Store a page (its payload in `sections` equal parts); False when it was not stored."""
        ...

    def stats(self) -> dict:
        """Bytes, entries and counters, JSON-serialisable."""
        ...

    def verify(self, repair: bool = False) -> dict:
        """Check every record; counts of ok / corrupt / removed."""
        ...

    def clear(self) -> None:
        """Remove every page and summary."""
        ...

    def close(self) -> None:
        """Release the store's resources."""
        ...


def check_key(key: bytes) -> None:
    """Refuse a page key of the wrong type or length, naming the problem."""
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise BadRequest(f"page key must be {KEY_BYTES} bytes (kvstore.keys.chain_keys)")


def check_item(key: bytes, payload: bytes, summary: bytes) -> None:
    """Refuse a put whose key or byte arguments are of the wrong type."""
    check_key(key)
    for name, value in (("payload", payload), ("summary", summary)):
        if not isinstance(value, bytes | bytearray | memoryview):
            raise BadRequest(f"{name} must be bytes, got {type(value).__name__}")
