"""KrakenBook's cached checksum texts (the top 10 of each side, edited in place by ``apply_update``)
against a reference recomputed from scratch after every message: the levels kept, the levels the
message reports, and the checksum from the Decimal reference. The updates churn the top 10 hard (a
narrow price range, deletes of present and absent levels, a level set and removed in one message,
sides shorter than 10) so that a text left stale, at the wrong rank or not refilled shows up."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest
from marketfeed.adapters.kraken.book import KrakenBook
from marketfeed.adapters.kraken.checksum import (
    CHECKSUM_LEVELS,
    checksum_decimal,
    decimal_text,
    exact_level_text,
)
from marketfeed.adapters.kraken.schemas import BookLevel

PP, QP = 1, 8  # BTC/USD
MID = 1_000_000  # in ticks of 0.1: asks from MID + 1 up, bids from MID down


def price(ticks: int) -> float:
    return float(Decimal(ticks).scaleb(-PP))


def random_qty(rng: random.Random) -> float:
    return float(Decimal(rng.randint(1, 10**9)).scaleb(-QP))


def reference_checksum(asks: dict, bids: dict) -> int:
    top_asks = sorted(asks)[:CHECKSUM_LEVELS]
    top_bids = sorted(bids, reverse=True)[:CHECKSUM_LEVELS]
    return checksum_decimal([(repr(p), repr(asks[p])) for p in top_asks],
                            [(repr(p), repr(bids[p])) for p in top_bids], PP, QP)


def reference_texts(levels: dict, prices: list[float]) -> list[str]:
    """The book's cached form: price text, size text, ... best first."""
    return [text for p in prices for text in (decimal_text(repr(p), PP), decimal_text(repr(levels[p]), QP))]


def truncate(levels: dict, depth: int, best_low: bool) -> list[float]:
    """Drop all but the best ``depth`` levels; returns the dropped prices, worst last."""
    ordered = sorted(levels, reverse=not best_low)
    dropped = ordered[depth:]
    for p in dropped:
        del levels[p]
    return dropped[::-1]


def check(kb: KrakenBook, asks: dict, bids: dict) -> None:
    assert kb.book.asks.levels == asks and kb.book.bids.levels == bids
    assert kb.book.asks.prices == sorted(asks) and kb.book.bids.prices == sorted(bids)
    assert kb.ask_top == reference_texts(asks, sorted(asks)[:CHECKSUM_LEVELS])
    assert kb.bid_top == reference_texts(bids, sorted(bids, reverse=True)[:CHECKSUM_LEVELS])
    assert kb.checksum() == reference_checksum(asks, bids)


@pytest.mark.parametrize("depth", [10, 25, 1000])
@pytest.mark.parametrize("seed", range(4))
def test_cached_top_texts_match_a_fresh_computation_after_every_message(depth: int, seed: int) -> None:
    rng = random.Random(seed * 1000 + depth)
    spread = 40  # ticks per side the changes fall in: the top 10 changes in most messages
    kb = KrakenBook("BTC-USD", "BTC/USD", depth, PP, QP)
    asks = {price(MID + 1 + t): random_qty(rng) for t in rng.sample(range(spread), rng.randint(0, 14))}
    bids = {price(MID - t): random_qty(rng) for t in rng.sample(range(spread), rng.randint(0, 14))}
    kb.load_snapshot([BookLevel(p, q) for p, q in bids.items()], [BookLevel(p, q) for p, q in asks.items()], None)
    kb.live = True
    truncate(asks, depth, best_low=True)
    truncate(bids, depth, best_low=False)
    check(kb, asks, bids)
    for _ in range(1500):
        msg_asks: list[BookLevel] = []
        msg_bids: list[BookLevel] = []
        for _ in range(rng.randint(1, 4)):
            is_ask = rng.random() < 0.5
            model = asks if is_ask else bids
            roll = rng.random()
            if roll < 0.35 and model:  # delete a level that is there
                p, q = rng.choice(sorted(model)), 0.0
            elif roll < 0.45:  # a level that may not be there (a delete of an absent level included)
                p = price(MID + 1 + rng.randrange(spread) if is_ask else MID - rng.randrange(spread))
                q = 0.0 if rng.random() < 0.5 else random_qty(rng)
            elif roll < 0.5 and (msg_asks if is_ask else msg_bids):  # the same price again in one message
                p, q = (msg_asks if is_ask else msg_bids)[-1].price, 0.0 if rng.random() < 0.5 else random_qty(rng)
            else:  # set a level, new or present
                p = price(MID + 1 + rng.randrange(spread) if is_ask else MID - rng.randrange(spread))
                q = random_qty(rng)
            (msg_asks if is_ask else msg_bids).append(BookLevel(p, q))
            if q:
                model[p] = q
            else:
                model.pop(p, None)
        dropped_asks = truncate(asks, depth, best_low=True)
        dropped_bids = truncate(bids, depth, best_low=False)
        out_bids, out_asks = kb.apply_update(msg_bids, msg_asks, "")
        assert out_asks == [(lv.price, lv.qty) for lv in msg_asks] + [(p, 0.0) for p in dropped_asks]
        assert out_bids == [(lv.price, lv.qty) for lv in msg_bids] + [(p, 0.0) for p in dropped_bids]
        check(kb, asks, bids)


def test_precision_change_reformats_the_cached_texts() -> None:
    kb = KrakenBook("BTC-USD", "BTC/USD", 10, PP, QP)
    kb.load_snapshot([BookLevel(99.5, 1.25)], [BookLevel(100.5, 2.5)], None)
    before = kb.checksum()
    assert kb.set_precision(2, 8)
    kb.refresh_asks()
    kb.refresh_bids()
    assert "".join(kb.ask_top) == exact_level_text("100.5", "2.5", 2, 8)
    assert "".join(kb.bid_top) == exact_level_text("99.5", "1.25", 2, 8)
    assert kb.checksum() == checksum_decimal([("100.5", "2.5")], [("99.5", "1.25")], 2, 8) != before


def test_sizes_beyond_float_precision_then_a_plain_size_at_the_same_level() -> None:
    # the exact path formats a too-large size from its wire digits; a later plain size at that level
    # takes the float path for the size while the level's price text stays: both must stay exact
    pp = qp = 8
    tick = Decimal("0.00000010")
    asks = [(f"{Decimal('0.00002100') + i * tick:.8f}", "244272509.76397250" if i == 0 else "1000") for i in range(10)]
    bids = [(f"{Decimal('0.00002000') - i * tick:.8f}", "98765432.98765432" if i == 3 else "2500.5") for i in range(10)]

    def frame(bid_levels, ask_levels) -> str:
        def side(levels) -> str:
            return "[" + ",".join(f'{{"price":{p},"qty":{q}}}' for p, q in levels) + "]"
        return f'{{"data":[{{"symbol":"SHIB/USD","bids":{side(bid_levels)},"asks":{side(ask_levels)}}}]}}'

    def levels(side) -> list[BookLevel]:
        return [BookLevel(float(p), float(q)) for p, q in side]

    kb = KrakenBook("SHIB-USD", "SHIB/USD", 10, pp, qp)
    kb.load_snapshot(levels(bids), levels(asks), frame(bids, asks))
    assert kb.checksum() == checksum_decimal(asks, bids, pp, qp)
    steps = [
        ([(bids[3][0], "12.5")], [(asks[0][0], "7")]),  # plain sizes where the huge ones were
        ([(bids[3][0], "555555555.55555555")], []),  # huge again
        ([], [(asks[0][0], "0")]),  # the level leaves; the 11th ask is not known: 9 asks remain
        ([(bids[3][0], "3")], []),
    ]
    for bid_changes, ask_changes in steps:
        for changes, book_side in ((bid_changes, bids), (ask_changes, asks)):
            for p, q in changes:
                i = next(j for j, (bp, _) in enumerate(book_side) if bp == p)
                if q == "0":
                    del book_side[i]
                else:
                    book_side[i] = (p, q)
        kb.apply_update(levels(bid_changes), levels(ask_changes), frame(bid_changes, ask_changes))
        assert kb.checksum() == checksum_decimal(asks, bids, pp, qp)
