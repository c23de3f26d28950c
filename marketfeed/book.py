"""The L2 order book: one price-keyed dict per side plus a sorted price index.

Why this shape: most diff levels change the size of a level that already exists, which is a single
dict store. The sorted index (ascending for both sides; the best bid is the last element) is touched
only when a level appears or disappears. On books of up to a few thousand levels a plain list kept with
``bisect`` beats a SortedList (a C memmove of a few KiB is cheaper than SortedList's Python-level
bookkeeping); past ``DEEP_LEVELS`` the list's insert cost grows linearly, so the side switches to a
``sortedcontainers.SortedList`` whose cost stays logarithmic. ``make bench`` shows both.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence

from sortedcontainers import SortedList

DEEP_LEVELS = 20_000

LevelPair = Sequence[float]  # (price, size)


class BookSide:
    """One side: ``levels`` maps price -> size; ``prices`` holds the same prices in ascending order."""

    __slots__ = ("levels", "prices", "descending")

    def __init__(self, descending: bool) -> None:
        self.levels: dict[float, float] = {}
        self.prices: list[float] | SortedList = []
        self.descending = descending  # True for bids: best is the highest price

    def __len__(self) -> int:
        return len(self.levels)

    def clear(self) -> None:
        self.levels = {}
        self.prices = []

    def load(self, levels: Iterable[LevelPair]) -> None:
        """Replace the side with ``levels`` (any order; zero sizes are skipped)."""
        self.levels = {p: s for p, s in levels if s}
        prices = sorted(self.levels)
        self.prices = SortedList(prices) if len(prices) > DEEP_LEVELS else prices

    def apply(self, updates: Iterable[LevelPair]) -> None:
        """Set each ``[price, size]`` in order; size 0 deletes (deleting an absent level is a no-op)."""
        levels = self.levels
        prices = self.prices
        if type(prices) is list:
            for p, s in updates:
                if s:
                    if p not in levels:
                        insort(prices, p)
                    levels[p] = s
                elif levels.pop(p, None) is not None:
                    del prices[bisect_left(prices, p)]
            if len(prices) > DEEP_LEVELS:
                self.prices = SortedList(prices)
        else:
            for p, s in updates:
                if s:
                    if p not in levels:
                        prices.add(p)
                    levels[p] = s
                elif levels.pop(p, None) is not None:
                    prices.remove(p)

    def set(self, price: float, size: float) -> None:
        self.apply(((price, size),))

    def best(self) -> tuple[float, float] | None:
        if not self.levels:
            return None
        p = self.prices[-1] if self.descending else self.prices[0]
        return p, self.levels[p]

    def best_price(self) -> float | None:
        if not self.levels:
            return None
        return self.prices[-1] if self.descending else self.prices[0]

    def top_prices(self, n: int) -> list[float]:
        prices = self.prices
        if self.descending:
            return list(prices[-1 : -n - 1 : -1]) if n < len(prices) else list(reversed(prices))
        return list(prices[:n])

    def top(self, n: int) -> list[tuple[float, float]]:
        """The best ``n`` levels, best first, as ``[price, size]``."""
        levels = self.levels
        return [(p, levels[p]) for p in self.top_prices(n)]

    def truncate(self, depth: int) -> list[float]:
        """Drop levels beyond the best ``depth``; return the removed prices (worst last)."""
        n = len(self.prices) - depth
        if n <= 0:
            return []
        prices = self.prices
        if self.descending:
            removed = list(prices[:n])
            del prices[:n]
            removed.reverse()
        else:
            removed = list(prices[depth:])
            del prices[depth:]
        for p in removed:
            del self.levels[p]
        return removed


class L2Book:
    """A price-level book: apply snapshots and diffs, read the top, check it is not crossed."""

    __slots__ = ("bids", "asks")

    def __init__(self) -> None:
        self.bids = BookSide(descending=True)
        self.asks = BookSide(descending=False)

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def apply_snapshot(self, bids: Iterable[LevelPair], asks: Iterable[LevelPair]) -> None:
        self.bids.load(bids)
        self.asks.load(asks)

    def apply(self, bids: Iterable[LevelPair], asks: Iterable[LevelPair]) -> None:
        self.bids.apply(bids)
        self.asks.apply(asks)

    def best_bid(self) -> tuple[float, float] | None:
        return self.bids.best()

    def best_ask(self) -> tuple[float, float] | None:
        return self.asks.best()

    def top(self, n: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        return self.bids.top(n), self.asks.top(n)

    def crossed(self) -> bool:
        """True when the best bid is at or above the best ask: a book that cannot be right."""
        b = self.bids.best_price()
        a = self.asks.best_price()
        return b is not None and a is not None and b >= a

    def __len__(self) -> int:
        return len(self.bids) + len(self.asks)
