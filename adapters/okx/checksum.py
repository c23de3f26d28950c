"""The OKX order-book checksum (EXCHANGES.md 5.7): CRC-32 of the best 25 bids and asks, interleaved
``bid0:ask0:bid1:ask1...``, each entry ``"<price>:<size>"`` in the exact text OKX sent; when one side
runs out its entries are simply skipped. Read as a signed 32-bit integer.

``okx_checksum`` is the reference form (pairs of strings). The adapter keeps each level's ``"px:sz"``
fragment next to its float key and calls ``crc_of_top`` on the fragment lists: in C where it was built
(marketfeed/_checksum.c), else ``crc_of_fragments``, which does the same with C-level slicing instead of
a Python loop.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from zlib import crc32

DEPTH = 25


def signed32(v: int) -> int:
    return v - 0x1_0000_0000 if v >= 0x8000_0000 else v


_FULL: list[str] = [""] * (2 * DEPTH)  # reused for the common case of 25 levels a side


def crc_of_fragments(bids: Sequence[str], asks: Sequence[str]) -> int:
    """The unsigned CRC-32 of the checksum string: ``bids`` best first, ``asks`` best first, at most
    25 each, entries ``"px:sz"``. Compare with ``venue_checksum & 0xFFFFFFFF``."""
    nb = len(bids)
    na = len(asks)
    if nb == na == DEPTH:
        parts = _FULL
        parts[0::2] = bids
        parts[1::2] = asks
        return crc32(":".join(parts).encode())
    n = nb if nb < na else na
    parts = [""] * (2 * n)
    parts[0::2] = bids[:n] if nb > n else bids
    parts[1::2] = asks[:n] if na > n else asks
    if nb > n:
        parts += bids[n:]
    elif na > n:
        parts += asks[n:]
    return crc32(":".join(parts).encode())


def _crc_of_top_py(bids: list[str], asks: list[str], depth: int = DEPTH) -> int:
    """``crc_of_fragments`` of the best ``depth`` of two ascending fragment lists (bids best last, asks
    best first), as the adapter keeps them."""
    return crc_of_fragments(bids[: -depth - 1 : -1] if depth else [], asks[:depth])


# the same in C (marketfeed/_checksum.c): no slicing, interleaving, joining or encoding
try:
    from marketfeed._checksum import crc32_interleaved
except ImportError:  # not built (no C compiler at install)
    crc32_interleaved = None
ACCELERATED = crc32_interleaved is not None and not os.environ.get("MARKETFEED_PURE_PYTHON")
crc_of_top = crc32_interleaved if ACCELERATED else _crc_of_top_py


def checksum_of_fragments(bids: Sequence[str], asks: Sequence[str]) -> int:
    """The venue's signed form of ``crc_of_fragments``."""
    return signed32(crc_of_fragments(bids, asks))


def okx_checksum(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """``bids`` descending and ``asks`` ascending as ``(price_text, size_text)``; only the first 25
    of each are used."""
    parts = []
    for i in range(DEPTH):
        if i < len(bids):
            parts.append(f"{bids[i][0]}:{bids[i][1]}")
        if i < len(asks):
            parts.append(f"{asks[i][0]}:{asks[i][1]}")
    return signed32(crc32(":".join(parts).encode()))
