"""Replays of the real Binance captures, checked against the venue's own truth.

Truth 1: ``bookTicker`` carries the order-book update id ``u``. After each of our book events whose
``seq`` equals a bookTicker's ``u``, the book a consumer rebuilt from our events alone must show that
bookTicker's best bid/ask price and size.
Truth 2: every ``trade``/``aggTrade`` frame in the capture comes out exactly once, with the taker side
from ``m`` (buyer is maker -> the taker sold).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marketfeed.capture import Recv, read_capture
from marketfeed.events import Book, Status, Trade
from marketfeed.replay import Replayer
from tests.helpers import ConsumerBooks, shared_capture

CAPTURES = [
    # (path, minimum bookTicker matches we must be able to check)
    ("binance/spot-btcusdt-20240808.capture.jsonl.gz", 1000),
    ("binance-usdm/usdm-btcusdt-20240808.capture.jsonl.gz", 600),
    ("binance/cryptofeed-4symbols-20211012.capture.jsonl.gz", 20),
    ("binance-usdm/cryptofeed-4symbols-20210722.capture.jsonl.gz", 40),
]


def venue_truth(path: Path) -> tuple[dict, dict]:
    """bookTickers by (native symbol, u) and trades by (native symbol, id) -> taker side, read
    straight from the capture with the standard json module (independent of our decoders)."""
    tickers: dict[tuple[str, int], tuple[float, float, float, float]] = {}
    trades: dict[tuple[str, str], str] = {}
    _, records = read_capture(path)
    for rec in records:
        if type(rec) is not Recv:
            continue
        msg = json.loads(rec.data)
        stream, data = msg.get("stream", ""), msg.get("data", {})
        if stream.endswith("@bookTicker"):
            tickers[(data["s"], data["u"])] = (float(data["b"]), float(data["B"]), float(data["a"]), float(data["A"]))
        elif stream.endswith("@trade") or stream.endswith("@aggTrade"):
            tid = str(data["t"] if data["e"] == "trade" else data["a"])
            trades[(data["s"], tid)] = "sell" if data["m"] else "buy"
    return tickers, trades


@pytest.mark.parametrize("relative,min_checks", CAPTURES, ids=[c[0] for c in CAPTURES])
def test_books_match_book_ticker_and_trades_come_out_once(relative: str, min_checks: int) -> None:
    path = shared_capture(relative)
    tickers, trades = venue_truth(path)
    events: list = []
    replayer = Replayer()
    replayer.run(path, events.extend)
    (adapter,) = replayer.adapters.values()
    native = {st.symbol: st.native for st in adapter.states.values()}

    consumer = ConsumerBooks()
    checks = mismatches = 0
    seen_trades: dict[tuple[str, str], str] = {}
    for event in events:
        book = consumer.apply(event)
        if isinstance(event, Book) and book is not None:
            truth = tickers.get((native[event.symbol], event.seq))
            if truth is not None:
                checks += 1
                bid, ask = book.best_bid(), book.best_ask()
                if (bid[0], bid[1], ask[0], ask[1]) != truth:
                    mismatches += 1
        elif isinstance(event, Trade):
            key = (native[event.symbol], event.trade_id)
            assert key not in seen_trades, f"trade {key} emitted twice"
            seen_trades[key] = event.side
    assert consumer.violations == []
    assert mismatches == 0
    assert checks >= min_checks, f"only {checks} bookTicker checks: the oracle did not line up"
    assert seen_trades == trades
    # nothing in these recordings is broken: no gaps, no invalid books, no errors
    assert not [e for e in events if isinstance(e, Status) and e.state in ("book_invalid", "error")]
    assert adapter.counters["gaps"] == 0 and adapter.counters["malformed"] == 0


def test_spot_capture_buffers_the_bridging_diff() -> None:
    """In this recording the bridging diff arrives before the REST snapshot: the first book event is
    the snapshot, and the diffs that follow it were buffered before it arrived."""
    path = shared_capture("binance/spot-btcusdt-20240808.capture.jsonl.gz")
    events: list = []
    Replayer().run(path, events.extend)
    books = [e for e in events if isinstance(e, Book)]
    snapshot, first_diff = books[0], books[1]
    assert snapshot.snapshot and snapshot.seq == 50093239218
    assert not first_diff.snapshot and first_diff.seq > snapshot.seq
    assert first_diff.ts_recv < snapshot.ts_recv  # read before the snapshot came back
    assert all(not b.snapshot for b in books[1:])


def test_replay_is_deterministic() -> None:
    path = shared_capture("binance-usdm/cryptofeed-4symbols-20210722.capture.jsonl.gz")
    first: list = []
    second: list = []
    Replayer().run(path, first.extend)
    Replayer().run(path, second.extend)
    assert first == second and len(first) > 800
