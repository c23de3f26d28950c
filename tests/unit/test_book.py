"""The L2 book against a brute-force model: every side kind, random diffs, small and deep books."""

from __future__ import annotations

import random

import pytest
from sortedcontainers import SortedList

import marketfeed.book as book_module
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
    assert len(side.head) == 8  # refilled to two windows
    side.apply([(float(p), 0.0) for p in range(100, 90, -1)])  # the best ten levels go
    assert side.best() == (90.0, 1.0)
    assert side.top(3) == [(90.0, 1.0), (89.0, 1.0), (88.0, 1.0)]
    side.apply([(float(p), 2.0) for p in range(200, 180, -1)])  # twenty new best levels
    assert len(side.head) <= 16 and side.best() == (200.0, 2.0)  # trimmed back past four windows


# --- the C loop (marketfeed/_book.c) against the Python loop it replaces ------------------------------

def _kinds() -> list:
    """(name, C function, Python function, extra args) for both side kinds; skipped where not built."""
    c_book = pytest.importorskip("marketfeed._book", reason="C accelerator not built (no compiler at install)")
    return [
        ("full", c_book.apply_levels, book_module._apply_levels_py, ()),
        ("window bids", c_book.apply_window, book_module._apply_window_py, (True,)),
        ("window asks", c_book.apply_window, book_module._apply_window_py, (False,)),
    ]


def test_accelerator_is_built_where_it_can_be() -> None:
    """CI has a compiler: the benchmarks' figures assume the C loop, so its absence must not pass silently."""
    import os

    if os.environ.get("MARKETFEED_PURE_PYTHON") or not os.environ.get("CI"):
        pytest.skip("only required in CI (MARKETFEED_PURE_PYTHON unset)")
    assert book_module.ACCELERATED


@pytest.mark.parametrize("seed", range(6))
def test_c_loop_matches_python_loop_on_random_diffs(seed: int) -> None:
    rng = random.Random(seed)
    for name, c_apply, py_apply, extra in _kinds():
        # a narrow price range makes repeats, re-inserts and deletions of absent levels common; ints
        # mixed in check Python's own comparison and hashing rules (1 == 1.0)
        start = {float(p): 1.0 for p in rng.sample(range(100), 40)}
        head = sorted(start)
        if name != "full":
            head = head[-10:] if extra[0] else head[:10]
        c_state = (dict(start), list(head))
        py_state = (dict(start), list(head))
        for _ in range(3000):
            updates = []
            for _ in range(rng.randint(0, 12)):
                p = rng.randrange(100)
                price = p if rng.random() < 0.1 else float(p)
                size = 0.0 if rng.random() < 0.3 else (0 if rng.random() < 0.05 else round(rng.uniform(0.1, 5), 2))
                updates.append((price, size) if rng.random() < 0.9 else [price, size])
            c_apply(*c_state, updates, *extra)
            py_apply(*py_state, updates, *extra)
            assert c_state == py_state, name
            assert all(type(a) is type(b) for a, b in zip(c_state[1], py_state[1])), name
            if name != "full" and not 5 <= len(c_state[1]) <= 20:
                # what TopWindowSide does around the loop: keep the window the best 10
                best = sorted(c_state[0])
                c_state[1][:] = best[-10:] if extra[0] else best[:10]
                py_state[1][:] = c_state[1]


@pytest.mark.parametrize(
    "bad",
    [[(1.0,)], [(1.0, 2.0, 3.0)], [5], [None], 7, [("x", 1.0)]],
    ids=["short", "long", "int", "none", "not-iterable", "str-price"],
)
def test_c_loop_raises_what_python_raises(bad: object) -> None:
    for name, c_apply, py_apply, extra in _kinds():
        levels = {2.0: 1.0, 3.0: 1.0}
        errors = []
        for apply in (c_apply, py_apply):
            try:
                apply(dict(levels), sorted(levels), bad, *extra)
                errors.append(None)
            except Exception as exc:  # noqa: BLE001 - the point is to compare whatever each raises
                errors.append(type(exc))
        assert errors[0] is not None and errors[0] is errors[1], (name, bad, errors)
