"""The L2 book against a brute-force model: every side kind, random diffs, small and deep books."""

from __future__ import annotations

import random

import pytest
from sortedcontainers import SortedList

from marketfeed.book import DEEP_LEVELS, BookSide, L2Book, TopWindowSide


def model_top(levels: dict[float, float], n: int, descending: bool) -> list[tuple[float, float]]:
    return [(p, levels[p]) for p in sorted(levels, reverse=descending)[:n]]


@pytest.mark.parametrize("window", [None, 4, 64])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_diffs_match_a_brute_force_model(window: int | None, seed: int) -> None:
    rng = random.Random(seed)
    book = L2Book(window)
    model = {"b": {}, "a": {}}
    snapshot_b = [(float(1000 - i), 1.0 + i) for i in range(rng.randint(0, 300))]
    snapshot_a = [(float(1001 + i), 2.0 + i) for i in range(rng.randint(0, 300))]
    book.apply_snapshot(snapshot_b, snapshot_a)
    model["b"] = dict(snapshot_b)
    model["a"] = dict(snapshot_a)
    for _ in range(2000):
        bids, asks = [], []
        for _ in range(rng.randint(0, 20)):
            bid = rng.random() < 0.5
            # mostly near the top, sometimes far away; a quarter are deletions (some of absent levels)
            dist = int(rng.expovariate(1 / 30)) if rng.random() < 0.8 else rng.randint(0, 5000)
            price = float(1000 - dist) if bid else float(1001 + dist)
            size = 0.0 if rng.random() < 0.25 else round(rng.uniform(0.1, 9), 3)
            (bids if bid else asks).append((price, size))
        crossed = book.apply(bids, asks)
        for side, updates in (("b", bids), ("a", asks)):
            for p, s in updates:
                if s:
                    model[side][p] = s
                else:
                    model[side].pop(p, None)
        assert crossed is False
        n = rng.choice([1, 5, 25, 200])
        assert book.bids.top(n) == model_top(model["b"], n, True)
        assert book.asks.top(n) == model_top(model["a"], n, False)
    assert book.bids.levels == model["b"] and book.asks.levels == model["a"]
    assert list(book.bids.prices) == sorted(model["b"]) and list(book.asks.prices) == sorted(model["a"])
    assert book.best_bid() == (model_top(model["b"], 1, True) or [None])[0]


@pytest.mark.parametrize("window", [None, 8])
def test_truncate_returns_removed_prices_worst_last(window: int | None) -> None:
    book = L2Book(window)
    book.apply_snapshot([(float(p), 1.0) for p in range(100, 80, -1)], [(float(p), 1.0) for p in range(101, 121)])
    assert book.bids.truncate(15) == [85.0, 84.0, 83.0, 82.0, 81.0]
    assert book.asks.truncate(18) == [119.0, 120.0]
    assert book.bids.truncate(15) == []
    assert len(book.bids) == 15 and book.bids.top(1) == [(100.0, 1.0)]
    assert len(book.asks) == 18 and book.asks.top(100)[-1] == (118.0, 1.0)


def test_crossed_and_empty() -> None:
    book = L2Book()
    assert book.best_bid() is None and book.best_ask() is None and not book.crossed()
    assert book.apply([(10.0, 1.0)], [(10.0, 1.0)]) is True
    assert book.crossed()


def test_full_order_side_switches_to_sorted_list_when_very_deep() -> None:
    side = BookSide(descending=False)
    side.load([(float(i), 1.0) for i in range(DEEP_LEVELS - 1)])
    assert type(side.prices) is list
    side.apply([(float(DEEP_LEVELS + i), 1.0) for i in range(5)])
    assert isinstance(side.prices, SortedList)
    side.apply([(0.0, 0.0), (-1.0, 2.0)])
    assert side.top(2) == [(-1.0, 2.0), (1.0, 1.0)]


def test_window_side_refills_when_the_top_is_eaten() -> None:
    side = TopWindowSide(descending=True, window=4)
    side.load([(float(p), 1.0) for p in range(1, 101)])
    assert len(side.head) == 4
    side.apply([(float(p), 0.0) for p in range(100, 90, -1)])  # the best ten levels go
    assert side.best() == (90.0, 1.0)
    assert side.top(3) == [(90.0, 1.0), (89.0, 1.0), (88.0, 1.0)]
    side.apply([(float(p), 2.0) for p in range(200, 190, -1)])  # ten new best levels
    assert len(side.head) <= 8 and side.best() == (200.0, 2.0)
