"""The L2 order book: one price-keyed dict per side plus a sorted price index.

Most diff levels change the size of a level that already exists: a single dict store. The sorted index
is touched only when a level appears or disappears, and it comes in two kinds, chosen per venue:

- ``BookSide`` keeps every price sorted (ascending for both sides; the best bid is the last element).
  Venues with a fixed depth window need that full order (Kraken truncates to its depth after every
  message, OKX keeps 400 levels): a plain list kept with ``bisect`` beats a SortedList on books of a
  few thousand levels (a C memmove is cheaper than SortedList's Python bookkeeping); past
  ``DEEP_LEVELS`` the side switches to a ``sortedcontainers.SortedList``, whose cost stays logarithmic.
- ``TopWindowSide`` keeps only the best ``window`` prices sorted and the deeper ones in the dict alone.
  Full-depth diff books (Binance) insert and delete thousands of levels far from the top: in the real
  BTCUSDT recording 60% of all inserts and deletes are below the 64th level. Those become a single dict
  operation, and the rest a bisect over a short list. The full order is computed only on request.

The per-level loop of both (``_apply_levels_py``, ``_apply_window_py``) also exists in C
(``marketfeed/_book.c``, built when the package is installed): the same steps without a dozen bytecodes
per level, which makes a Binance diff's apply several times faster. Where it could not be built, or
with ``MARKETFEED_PURE_PYTHON=1``, the Python loops run; ``ACCELERATED`` says which.

``make bench`` (benchmarks/bench_binance.py) measures the designs against a SortedDict per side.
"""

from __future__ import annotations

import os
from bisect import bisect_left, insort
from collections.abc import Iterable, Sequence

from sortedcontainers import SortedList

DEEP_LEVELS = 20_000

LevelPair = Sequence[float]  # (price, size)


def _apply_levels_py(levels: dict, prices: list, updates: Iterable[LevelPair]) -> None:
    """``BookSide`` diff on a plain list: set each ``(price, size)``; size 0 deletes."""
    for p, s in updates:
        if s:
            if p not in levels:
                insort(prices, p)
            levels[p] = s
        elif levels.pop(p, None) is not None:
            del prices[bisect_left(prices, p)]


def _apply_window_py(levels: dict, head: list, updates: Iterable[LevelPair], descending: bool) -> None:
    """``TopWindowSide`` diff: set each level in ``levels``, and in ``head`` where it is in the window."""
    if descending:
        for p, s in updates:
            if s:
                # a new price enters the window if it is better than the window's worst, or if the
                # window holds the whole side
                if p not in levels and (not head or p > head[0] or len(head) == len(levels)):
                    insort(head, p)
                levels[p] = s
            elif levels.pop(p, None) is not None and head and p >= head[0]:
                del head[bisect_left(head, p)]
    else:
        for p, s in updates:
            if s:
                if p not in levels and (not head or p < head[-1] or len(head) == len(levels)):
                    insort(head, p)
                levels[p] = s
            elif levels.pop(p, None) is not None and head and p <= head[-1]:
                del head[bisect_left(head, p)]


_apply_levels = _apply_levels_py
_apply_window = _apply_window_py
ACCELERATED = False
if not os.environ.get("MARKETFEED_PURE_PYTHON"):
    try:
        from marketfeed._book import apply_levels as _apply_levels, apply_window as _apply_window  # type: ignore[no-redef]

        ACCELERATED = True
    except ImportError:  # not built (no C compiler at install): the Python loops
        pass


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
            _apply_levels(levels, prices, updates)
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


class TopWindowSide:
    """One side: ``levels`` maps price -> size; ``head`` holds the best prices in ascending order.

    Invariant: ``head`` is exactly the best ``len(head)`` prices of ``levels`` (all of them while the side
    is small). It is refilled with the best ``2 * window`` prices when it shrinks below half the window,
    and trimmed back to that when it grows past four windows, so reading the best ``window // 2`` levels
    never sorts. The margins make refills rare: one refill sorts the whole side (``sorted`` in C beats
    ``heapq.nlargest``, whose loop is Python).
    """

    __slots__ = ("levels", "head", "descending", "window")

    def __init__(self, descending: bool, window: int = 64) -> None:
        self.levels: dict[float, float] = {}
        self.head: list[float] = []
        self.descending = descending  # True for bids: best is the highest price, at head[-1]
        self.window = window

    def __len__(self) -> int:
        return len(self.levels)

    @property
    def prices(self) -> list[float]:
        """Every price in ascending order (computed: use ``top_prices`` on hot paths)."""
        return self.head if len(self.head) == len(self.levels) else sorted(self.levels)

    def clear(self) -> None:
        self.levels = {}
        self.head = []

    def load(self, levels: Iterable[LevelPair]) -> None:
        self.levels = {p: s for p, s in levels if s}
        self.head = []
        self._refill()

    def _refill(self) -> None:
        keep = 2 * self.window
        head = sorted(self.levels)
        if len(head) > keep:
            head = head[-keep:] if self.descending else head[:keep]
        self.head = head

    def apply(self, updates: Iterable[LevelPair]) -> None:
        """Set each ``[price, size]`` in order; size 0 deletes (deleting an absent level is a no-op)."""
        levels = self.levels
        head = self.head
        _apply_window(levels, head, updates, self.descending)
        n = len(head)
        window = self.window
        if n > 4 * window:
            if self.descending:
                del head[: n - 2 * window]
            else:
                del head[2 * window :]
        elif n < window // 2 and n < len(levels):
            self._refill()

    def set(self, price: float, size: float) -> None:
        self.apply(((price, size),))

    def best(self) -> tuple[float, float] | None:
        head = self.head
        if not head:
            return None
        p = head[-1] if self.descending else head[0]
        return p, self.levels[p]

    def best_price(self) -> float | None:
        head = self.head
        if not head:
            return None
        return head[-1] if self.descending else head[0]

    def top_prices(self, n: int) -> list[float]:
        head = self.head
        if n > len(head) and len(head) < len(self.levels):
            head = sorted(self.levels)  # deeper than the window: sort on request
        if self.descending:
            return head[-1 : -n - 1 : -1] if n < len(head) else head[::-1]
        return head[:n]

    def top(self, n: int) -> list[tuple[float, float]]:
        """The best ``n`` levels, best first, as ``(price, size)``."""
        levels = self.levels
        return [(p, levels[p]) for p in self.top_prices(n)]

    def truncate(self, depth: int) -> list[float]:
        """Drop levels beyond the best ``depth``; return the removed prices (worst last)."""
        if len(self.levels) <= depth:
            return []
        ordered = sorted(self.levels, reverse=self.descending)
        removed = ordered[depth:]
        for p in removed:
            del self.levels[p]
        self._refill()
        return removed


class L2Book:
    """A price-level book: apply snapshots and diffs, read the top, check it is not crossed."""

    __slots__ = ("bids", "asks")

    def __init__(self, window: int | None = None) -> None:
        """``window`` None keeps the full order of every level (``BookSide``); a number keeps only
        that many best levels sorted (``TopWindowSide``), for full-depth diff books."""
        if window is None:
            self.bids: BookSide | TopWindowSide = BookSide(descending=True)
            self.asks: BookSide | TopWindowSide = BookSide(descending=False)
        else:
            self.bids = TopWindowSide(descending=True, window=window)
            self.asks = TopWindowSide(descending=False, window=window)

    def clear(self) -> None:
        self.bids.clear()
        self.asks.clear()

    def apply_snapshot(self, bids: Iterable[LevelPair], asks: Iterable[LevelPair]) -> None:
        self.bids.load(bids)
        self.asks.load(asks)

    def apply(self, bids: Iterable[LevelPair], asks: Iterable[LevelPair]) -> bool:
        """Apply a diff; return True when it left the book crossed (a book that cannot be right),
        so the hot path checks consistency without another call."""
        b = self.bids
        a = self.asks
        b.apply(bids)
        a.apply(asks)
        b = b.best_price()
        a = a.best_price()
        return b is not None and a is not None and b >= a

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
