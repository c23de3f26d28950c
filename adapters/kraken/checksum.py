"""Kraken's book checksum (EXCHANGES.md 3.6), the same in WS v1 and v2.

CRC-32 (zlib) over the top 10 asks (ascending) then the top 10 bids (descending), each level written as
price text + quantity text, where each text is the number at the pair's fixed precision with the ``.``
and all leading zeros removed. Compared as an unsigned 32-bit integer.

v2 sends JSON numbers without trailing zeros, so the text has to be rebuilt at the pair's precision.
For a value ``x`` with ``prec`` decimals, the fixed-precision digits without the point are the integer
``x * 10**prec``; ``str(round(x * 10**prec))`` gives exactly those digits (without leading zeros) from the
float the decoder produced, as long as that integer is below ``2**51``: then the float's representation
error and the multiplication's rounding error together stay under 0.5. ``exact_limit`` gives that
bound; values beyond it take the Decimal path (``exact_level_text``) with the wire's own digits.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from decimal import Decimal

CHECKSUM_LEVELS = 10
_EXACT_INT = float(2**51)


def strip_text(text: str) -> str:
    """``"0.00100000"`` -> ``"100000"``: remove the point, then every leading zero."""
    return text.replace(".", "").lstrip("0")


def exact_limit(precision: int) -> float:
    """Values below this (times 10**precision below 2**51) format exactly from a float."""
    return _EXACT_INT / 10**precision


def level_text(price: float, qty: float, price_scale: int, qty_scale: int) -> str:
    """The checksum text of one level from floats; ``*_scale`` is ``10**precision``. Exact only for
    values under ``exact_limit`` (the adapter checks)."""
    return f"{round(price * price_scale)}{round(qty * qty_scale)}"


def decimal_text(value: Decimal | str, precision: int) -> str:
    """Exact checksum text of one number from its decimal value (or wire text)."""
    return strip_text(format(Decimal(value), f".{precision}f"))


def exact_level_text(price: Decimal | str, qty: Decimal | str, price_precision: int, qty_precision: int) -> str:
    return decimal_text(price, price_precision) + decimal_text(qty, qty_precision)


def checksum_of_texts(ask_texts: Iterable[str], bid_texts: Iterable[str]) -> int:
    """CRC-32 of ready level texts: asks best first, then bids best first (top 10 each)."""
    return zlib.crc32(("".join(ask_texts) + "".join(bid_texts)).encode("ascii")) & 0xFFFFFFFF


def checksum_decimal(
    asks: Sequence[tuple[Decimal | str, Decimal | str]],
    bids: Sequence[tuple[Decimal | str, Decimal | str]],
    price_precision: int,
    qty_precision: int,
) -> int:
    """Reference implementation (v2): levels as Decimals or decimal strings, asks ascending, bids
    descending; formats each at the pair's precision."""
    return checksum_of_texts(
        (exact_level_text(p, q, price_precision, qty_precision) for p, q in asks[:CHECKSUM_LEVELS]),
        (exact_level_text(p, q, price_precision, qty_precision) for p, q in bids[:CHECKSUM_LEVELS]),
    )


def checksum_v1(asks: Sequence[tuple[str, str]], bids: Sequence[tuple[str, str]]) -> int:
    """v1: the wire strings already carry fixed decimals, so they are used as they are."""
    return checksum_of_texts(
        (strip_text(p) + strip_text(q) for p, q in asks[:CHECKSUM_LEVELS]),
        (strip_text(p) + strip_text(q) for p, q in bids[:CHECKSUM_LEVELS]),
    )


def checksum_of_book(book, price_precision: int, qty_precision: int) -> int:
    """Checksum of an ``L2Book`` of floats (a consumer-side book), formatting each float at the given
    precision through its shortest repr: the independent check tests use."""
    bids, asks = book.top(CHECKSUM_LEVELS)
    return checksum_decimal(
        [(repr(p), repr(q)) for p, q in asks],
        [(repr(p), repr(q)) for p, q in bids],
        price_precision,
        qty_precision,
    )
