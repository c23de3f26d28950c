"""The OKX hot path's per-side apply (``_apply_side``, in C and in Python) against a plain reference: a dict of exact
price text -> size text, applied level by level. After every message the float book, the sorted
prices, the exact-text fragments and the top-25 checksum must agree with the reference, and a bad
level must be refused with ``ValueError`` before it touches the book."""

from __future__ import annotations

import random

import pytest

from marketfeed.adapters.okx import adapter as okx_adapter
from marketfeed.adapters.okx import schemas
from marketfeed.adapters.okx.adapter import _apply_side
from marketfeed.adapters.okx.checksum import checksum_of_fragments, okx_checksum
from marketfeed.book import BookSide


@pytest.fixture(autouse=True, params=["C", "Python"])
def loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on both forms of the loop: marketfeed/_book.c and the Python one."""
    if request.param == "C":
        if okx_adapter._apply_text_c is None:
            pytest.skip("C accelerator not built (no compiler at install)")
        monkeypatch.setattr(okx_adapter, "_apply_text", okx_adapter._apply_text_c)
    else:
        monkeypatch.setattr(okx_adapter, "_apply_text", okx_adapter._apply_text_py)
    return request.param


def _px(tick: int) -> str:
    whole, frac = divmod(tick, 10)
    return f"{whole}.{frac}" if frac else str(whole)


def _check(side: BookSide, frag: list[str], ref: dict[str, str]) -> None:
    ordered = sorted(ref, key=float)
    assert side.prices == [float(p) for p in ordered]
    assert frag == [f"{p}:{ref[p]}" for p in ordered]
    assert side.levels == {float(p): float(s) for p, s in ref.items()}


@pytest.mark.parametrize("seed", range(5))
def test_random_updates_match_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    bids, asks = BookSide(True), BookSide(False)
    bfrag: list[str] = []
    afrag: list[str] = []
    rb: dict[str, str] = {}
    ra: dict[str, str] = {}
    for _ in range(3000):
        msg_b, msg_a = [], []
        for _ in range(rng.choice((1, 2, 3, 8, 30))):
            is_bid = rng.random() < 0.5
            tick = 1000 - rng.randint(1, 60) if is_bid else 1000 + rng.randint(0, 59)
            size = "0" if rng.random() < 0.3 else rng.choice(("1", "0.5", "2.25", "0.00000001", "3.0", "-0"))
            (msg_b if is_bid else msg_a).append((_px(tick), size))
        for levels, side, frag, ref in ((msg_b, bids, bfrag, rb), (msg_a, asks, afrag, ra)):
            changes = _apply_side([schemas.Level(p, s) for p, s in levels], side, frag, None, 8)
            assert changes == [(float(p), float(s)) for p, s in levels]
            for p, s in levels:
                if float(s) == 0.0:
                    ref.pop(p, None)
                else:
                    ref[p] = s
            _check(side, frag, ref)
        top_b = sorted(rb, key=float, reverse=True)[:25]
        top_a = sorted(ra, key=float)[:25]
        assert checksum_of_fragments(bfrag[:-26:-1], afrag[:25]) == okx_checksum(
            [(p, rb[p]) for p in top_b], [(p, ra[p]) for p in top_a]
        )


@pytest.mark.parametrize(
    ("px", "sz"),
    [("nan", "1"), ("100.1", "-1"), ("-5", "1"), ("0", "1"), ("0", "0"), ("nan", "0"), ("100.1", "nan"), ("-5", "0")],
)
def test_a_bad_level_is_refused_before_it_touches_the_book(px: str, sz: str) -> None:
    side = BookSide(False)
    frag: list[str] = []
    _apply_side([schemas.Level("100.1", "2")], side, frag, None, 8)
    with pytest.raises(ValueError, match="bad level"):
        _apply_side([schemas.Level(px, sz)], side, frag, None, 8)
    assert side.prices == [100.1] and frag == ["100.1:2"] and side.levels == {100.1: 2.0}


def test_contract_sizes_are_scaled_and_a_zero_deletes() -> None:
    side = BookSide(True)
    frag: list[str] = []
    changes = _apply_side([schemas.Level("100.5", "3"), schemas.Level("100.4", "7")], side, frag, 0.01, 2)
    assert changes == [(100.5, 0.03), (100.4, 0.07)]
    assert frag == ["100.4:7", "100.5:3"] and side.levels == {100.5: 0.03, 100.4: 0.07}
    changes = _apply_side([schemas.Level("100.5", "0"), schemas.Level("100.3", "0")], side, frag, 0.01, 2)
    assert changes == [(100.5, 0.0), (100.3, 0.0)]
    assert frag == ["100.4:7"] and side.prices == [100.4] and side.levels == {100.4: 0.07}


def test_the_price_cache_is_bounded_and_never_changes_a_result(monkeypatch: pytest.MonkeyPatch) -> None:
    from marketfeed.adapters.okx import adapter

    monkeypatch.setattr(adapter, "PRICE_CACHE_LIMIT", 8)
    adapter._PRICES.clear()
    side = BookSide(False)
    frag: list[str] = []
    ref: dict[str, str] = {}
    rng = random.Random(3)
    for _ in range(500):
        p = _px(rng.randint(1, 40))
        s = rng.choice(("0", "1.5", "2"))
        assert _apply_side([schemas.Level(p, s)], side, frag, None, 8) == [(float(p), float(s))]
        if s == "0":
            ref.pop(p, None)
        else:
            ref[p] = s
        _check(side, frag, ref)
        assert len(adapter._PRICES) <= 8
    with pytest.raises(ValueError):
        _apply_side([schemas.Level("x1", "1")], side, frag, None, 8)
    assert "x1" not in adapter._PRICES
