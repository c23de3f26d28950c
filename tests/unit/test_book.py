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

def _c_book():
    return pytest.importorskip("marketfeed._book", reason="C accelerator not built (no compiler at install)")


def _split(levels: dict, descending: bool) -> tuple[dict, list, list]:
    """A TopWindowSide's containers for ``levels``: the best 10 in the window, the rest deep."""
    ordered = sorted(levels)
    head = ordered[-10:] if descending else ordered[:10]
    deep = {p: s for p, s in levels.items() if p not in set(head)}
    return deep, head, [levels[p] for p in head]


def _random_updates(rng: random.Random) -> list:
    # a narrow price range makes repeats, re-inserts and deletions of absent levels common; ints mixed
    # in check Python's own comparison and hashing rules (1 == 1.0); some levels are lists
    updates = []
    for _ in range(rng.randint(0, 12)):
        p = rng.randrange(100)
        price = p if rng.random() < 0.1 else float(p)
        size = 0.0 if rng.random() < 0.3 else (0 if rng.random() < 0.05 else round(rng.uniform(0.1, 5), 2))
        updates.append((price, size) if rng.random() < 0.9 else [price, size])
    return updates


def test_accelerator_is_built_where_it_can_be() -> None:
    """CI has a compiler: the benchmarks' figures assume the C loop, so its absence must not pass silently."""
    import os

    if os.environ.get("MARKETFEED_PURE_PYTHON") or not os.environ.get("CI"):
        pytest.skip("only required in CI (MARKETFEED_PURE_PYTHON unset)")
    from marketfeed.adapters.binance import frames
    from marketfeed.adapters.okx import checksum

    from marketfeed import capture, events

    built = {
        "book": book_module.ACCELERATED, "okx checksum": checksum.ACCELERATED, "binance frames": frames.ACCELERATED,
        "capture": capture.ACCELERATED, "events": events.ACCELERATED,
    }
    assert all(built.values()), built


@pytest.mark.parametrize("seed", range(6))
def test_c_full_loop_matches_python_loop_on_random_diffs(seed: int) -> None:
    c_apply = _c_book().apply_levels
    rng = random.Random(seed)
    start = {float(p): 1.0 for p in rng.sample(range(100), 40)}
    c_state = (dict(start), sorted(start))
    py_state = (dict(start), sorted(start))
    for _ in range(3000):
        updates = _random_updates(rng)
        c_apply(*c_state, updates)
        book_module._apply_levels_py(*py_state, updates)
        assert c_state == py_state
        assert [type(p) for p in c_state[1]] == [type(p) for p in py_state[1]]


@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_c_window_loop_matches_python_loop_on_random_diffs(seed: int, descending: bool) -> None:
    c_apply = _c_book().apply_window
    rng = random.Random(seed)
    start = {float(p): 1.0 for p in rng.sample(range(100), 40)}
    c_state = _split(start, descending)
    py_state = _split(start, descending)
    for _ in range(3000):
        updates = _random_updates(rng)
        c_apply(*c_state, updates, descending)
        book_module._apply_window_py(*py_state, updates, descending)
        assert c_state == py_state
        assert [type(p) for p in c_state[1]] == [type(p) for p in py_state[1]]
        deep, head, sizes = c_state
        assert len(head) == len(sizes) and head == sorted(head)
        if not 5 <= len(head) <= 20:  # what TopWindowSide does around the loop: keep about 10
            levels = dict(deep)
            levels.update(zip(head, sizes))
            c_state = _split(levels, descending)
            py_state = _split(levels, descending)


@pytest.mark.parametrize(
    "bad",
    [[(1.0,)], [(1.0, 2.0, 3.0)], [5], [None], 7, [("x", 1.0)]],
    ids=["short", "long", "int", "none", "not-iterable", "str-price"],
)
def test_c_loop_raises_what_python_raises(bad: object) -> None:
    c_book = _c_book()
    levels = {2.0: 1.0, 3.0: 1.0}
    kinds = [
        ("full", c_book.apply_levels, book_module._apply_levels_py, lambda: (dict(levels), sorted(levels)), ()),
        ("window", c_book.apply_window, book_module._apply_window_py, lambda: ({}, [2.0, 3.0], [1.0, 1.0]), (True,)),
    ]
    for name, c_apply, py_apply, state, extra in kinds:
        errors = []
        states = []
        for apply in (c_apply, py_apply):
            st = state()
            try:
                apply(*st, bad, *extra)
                errors.append(None)
            except Exception as exc:  # noqa: BLE001 - the point is to compare whatever each raises
                errors.append(type(exc))
            states.append(st)
        assert errors[0] is not None and errors[0] is errors[1], (name, bad, errors)
        assert states[0] == states[1], (name, bad)
