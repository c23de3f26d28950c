"""The L2 order book: per side, sizes by price plus the prices in order. Two kinds of side, chosen per
venue:

- ``BookSide`` keeps every level in a price -> size dict and every price sorted in a list (ascending
  for both sides; the best bid is the last element). Most diff levels change the size of a level that
  exists: one dict store; the list is touched only when a level appears or disappears.
  Venues with a fixed depth window need that full order (Kraken truncates to its depth after every
  message, OKX keeps 400 levels): a plain list kept with ``bisect`` beats a SortedList on books of a
  few thousand levels (a C memmove is cheaper than SortedList's Python bookkeeping); past
  ``DEEP_LEVELS`` the side switches to a ``sortedcontainers.SortedList``, whose cost stays logarithmic.
- ``TopWindowSide`` keeps the best prices in a short sorted list with their sizes beside them, and
  every deeper level in a dict. Full-depth diff books (Binance) change mostly the levels near the top,
  and a bisect over a short list of floats is cheaper than a dict store keyed by a float (hashing a
  float and probing: decimal prices on one tick collide in the low hash bits). Deeper levels (in the
  real BTCUSDT recording 60% of inserts and deletes are below the 64th level) are one dict operation.
  The full order is computed only on request.

The per-level loop of both (``_apply_levels_py``, ``_apply_window_py``) also exists in C
(``marketfeed/_book.c``, built when the package is installed): the same steps without a dozen bytecodes
per level, which makes a Binance diff's apply two to three times faster. Where it could not be built, or
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


def _apply_window_py(deep: dict, head: list, sizes: list, updates: Iterable[LevelPair], descending: bool) -> None:
    """``TopWindowSide`` diff: a level at or better than the window's worst price is in the window
    (``head``/``sizes``), any other in ``deep``."""
    for p, s in updates:
        n = len(head)
        if n and (not p < head[0] if descending else not head[-1] < p):
            i = bisect_left(head, p)
            if i < len(head) and head[i] == p:
                if s:
                    sizes[i] = s
                else:
                    del head[i]
                    del sizes[i]
            elif s:
                head.insert(i, p)
                sizes.insert(i, s)
        elif s:
            deep[p] = s
        else:
            deep.pop(p, None)


_apply_levels = _apply_levels_py
_apply_window = _apply_window_py
ACCELERATED = False
if not os.environ.get("MARKETFEED_PURE_PYTHON"):
    try:
        from marketfeed._book import apply_levels as _apply_levels  # type: ignore[no-redef]
        from marketfeed._book import apply_window as _apply_window

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
    """One side: the best prices ascending in ``head`` with their sizes in ``sizes``; the rest of the
    levels in ``deep`` (price -> size), all worse than every price in ``head``.

    ``head`` is refilled to the best ``2 * window`` levels when it shrinks below half the window, and
    trimmed back to that when it grows past four windows, so reading the best ``window // 2`` levels
    never sorts. The margins keep refills rare; a refill sorts the deep levels once.
    """

    __slots__ = ("deep", "head", "sizes", "descending", "window")

    def __init__(self, descending: bool, window: int = 64) -> None:
        self.deep: dict[float, float] = {}
        self.head: list[float] = []
        self.sizes: list[float] = []
        self.descending = descending  # True for bids: best is the highest price, at head[-1]
        self.window = window

    def __len__(self) -> int:
        return len(self.head) + len(self.deep)

    @property
    def levels(self) -> dict[float, float]:
        """Every level as price -> size (computed)."""
        levels = dict(self.deep)
        levels.update(zip(self.head, self.sizes))
        return levels

    @property
    def prices(self) -> list[float]:
        """Every price in ascending order (computed: use ``top_prices`` on hot paths)."""
        if not self.deep:
            return self.head
        deep = sorted(self.deep)
        return deep + self.head if self.descending else self.head + deep

    def clear(self) -> None:
        self.deep = {}
        self.head = []
        self.sizes = []

    def load(self, levels: Iterable[LevelPair]) -> None:
        self.deep = {p: s for p, s in levels if s}
        self.head = []
        self.sizes = []
        self._refill()

    def _refill(self) -> None:
        """Move the best deep levels into the window until it holds two windows (or everything)."""
        deep = self.deep
        want = 2 * self.window - len(self.head)
        if want <= 0 or not deep:
            return
        ordered = sorted(deep)
        if self.descending:
            moved = ordered[-want:]
            self.head[:0] = moved
            self.sizes[:0] = [deep.pop(p) for p in moved]
        else:
            moved = ordered[:want]
            self.head += moved
            self.sizes += [deep.pop(p) for p in moved]

    def _trim(self) -> None:
        """Move the window's worst levels into ``deep`` until it holds two windows."""
        head, sizes, keep = self.head, self.sizes, 2 * self.window
        cut = slice(0, len(head) - keep) if self.descending else slice(keep, None)
        self.deep.update(zip(head[cut], sizes[cut]))
        del head[cut]
        del sizes[cut]

    def maintain(self) -> None:
        """Bring the window back within its bounds after a diff."""
        n = len(self.head)
        if n > 4 * self.window:
            self._trim()
        elif n < self.window // 2 and self.deep:
            self._refill()

    def apply(self, updates: Iterable[LevelPair]) -> None:
        """Set each ``[price, size]`` in order; size 0 deletes (deleting an absent level is a no-op)."""
        _apply_window(self.deep, self.head, self.sizes, updates, self.descending)
        self.maintain()

    def set(self, price: float, size: float) -> None:
        self.apply(((price, size),))

    def best(self) -> tuple[float, float] | None:
        if not self.head:
            return None
        return (self.head[-1], self.sizes[-1]) if self.descending else (self.head[0], self.sizes[0])

    def best_price(self) -> float | None:
        head = self.head
        if not head:
            return None
        return head[-1] if self.descending else head[0]

    def top(self, n: int) -> list[tuple[float, float]]:
        """The best ``n`` levels, best first, as ``(price, size)``."""
        head, sizes = self.head, self.sizes
        if self.descending:
            top = list(zip(head[: -n - 1 : -1], sizes[: -n - 1 : -1]))
        else:
            top = list(zip(head[:n], sizes[:n]))
        if len(top) < n and self.deep:  # deeper than the window: sort on request
            deep = self.deep
            more = sorted(deep, reverse=self.descending)[: n - len(top)]
            top += [(p, deep[p]) for p in more]
        return top

    def top_prices(self, n: int) -> list[float]:
        return [p for p, _ in self.top(n)]

    def truncate(self, depth: int) -> list[float]:
        """Drop levels beyond the best ``depth``; return the removed prices (worst last)."""
        if len(self) <= depth:
            return []
        levels = self.levels
        ordered = sorted(levels, reverse=self.descending)
        removed = ordered[depth:]
        self.load((p, levels[p]) for p in ordered[:depth])
        return removed


class L2Book:
    """A price-level book: apply snapshots and diffs, read the top, check it is not crossed."""

    __slots__ = ("bids", "asks", "window")

    def __init__(self, window: int | None = None) -> None:
        """``window`` None keeps the full order of every level (``BookSide``); a number keeps only
        that many best levels sorted (``TopWindowSide``), for full-depth diff books."""
        self.window = window
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
        window = self.window
        if window is not None:
            # the Binance hot path: TopWindowSide.apply and best_price inlined (a Python call costs
            # about as much as applying a level)
            bh = b.head
            ah = a.head
            _apply_window(b.deep, bh, b.sizes, bids, True)
            _apply_window(a.deep, ah, a.sizes, asks, False)
            if not (window // 2 <= len(bh) <= 4 * window and window // 2 <= len(ah) <= 4 * window):
                b.maintain()  # in place: bh and ah stay the sides' lists
                a.maintain()
            return bool(bh) and bool(ah) and bh[-1] >= ah[0]
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
