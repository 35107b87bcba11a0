"""HTTP API of the shop."""

from dataclasses import dataclass


@dataclass
class Item:
    """One thing for sale."""

    name: str
    price_cents: int


def total(items: list[Item]) -> int:
    """Sum of the prices, in cents."""
    return sum(item.price_cents for item in items)


def apply_discount(cents: int, percent: int) -> int:
    """A discount rounded down to the cent."""
    if not 0 <= percent <= 100:
        raise ValueError("percent must be within 0..100")
    return cents * (100 - percent) // 100
