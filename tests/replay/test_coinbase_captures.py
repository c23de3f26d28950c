"""Replay of the real Coinbase capture, checked against the venue's own truth.

The only real Coinbase recording is of the older Exchange feed (``coinbase-legacy``: ``level2``
snapshot/l2update, ``ticker``, ``match``; 10 products, 2021-04-17). Its book messages carry no checksum
and no sequence number; the truth in it is the ``ticker`` channel: after every trade the venue reports
its best bid and best ask at that trade's ``sequence``. The level2 update that the same trade caused
carries the identical timestamp, so the k-th ticker (by ``sequence``) stamped T describes the book right
after the k-th l2update stamped T. The check holds the book that a consumer rebuilds from OUR events
(``ConsumerBooks``) to those ticker values on both sides; tickers stamped before the level2 snapshot
describe a state older than our book and cannot line up, so they are only required to be older.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec
import pytest

from marketfeed.adapters.coinbase.times import parse_time_ns
from marketfeed.capture import Recv, Rest, read_capture
from marketfeed.events import BOOK_INVALID, Book, Status, Trade
from marketfeed.replay import replay_events
from tests.helpers import ConsumerBooks, shared_capture

LEGACY = "coinbase/cryptofeed-legacy-level2-20210417.capture.jsonl.gz"

pytestmark = pytest.mark.shared


def _truth(path):
    """What the capture itself says, read independently of the adapter: product names from the
    recorded /products response, every ticker, every match, the number of book messages."""
    header, records = read_capture(path)
    names: dict[str, str] = {}
    tickers = []  # (symbol, time ns, sequence, best bid, best ask, trade id, taker side, price)
    matches = []  # (symbol, trade id, maker side, price, size)
    book_messages = 0
    for rec in records:
        if isinstance(rec, Rest) and rec.url.endswith("/products"):
            for p in msgspec.json.decode(rec.data):
                names[p["id"]] = f"{p['base_currency']}-{p['quote_currency']}"
        elif isinstance(rec, Recv):
            msg = msgspec.json.decode(rec.data)
            kind = msg.get("type")
            if kind == "ticker":
                tickers.append((names[msg["product_id"]], parse_time_ns(msg["time"]), msg["sequence"],
                                float(msg["best_bid"]), float(msg["best_ask"]), str(msg["trade_id"]), msg["side"],
                                float(msg["price"])))
            elif kind in ("match", "last_match"):
                matches.append((names[msg["product_id"]], str(msg["trade_id"]), msg["side"],
                                float(msg["price"]), float(msg["size"])))
            elif kind in ("snapshot", "l2update"):
                book_messages += 1
    return names, tickers, matches, book_messages


def test_legacy_books_match_the_venue_ticker_at_every_trade():
    path = shared_capture(LEGACY)
    names, tickers, _, book_messages = _truth(path)
    consumer = ConsumerBooks()
    states: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    first_update: dict[str, int] = {}
    invalid = []
    for event in replay_events([path]):
        book = consumer.apply(event)
        if isinstance(event, Book) and not event.snapshot:
            first_update.setdefault(event.symbol, event.ts_exchange)
            states[(event.symbol, event.ts_exchange)].append((book.best_bid()[0], book.best_ask()[0]))
        if isinstance(event, Status) and event.state == BOOK_INVALID:
            invalid.append(event)
    assert consumer.violations == []
    assert invalid == []  # one uninterrupted connection: nothing may invalidate a book
    assert consumer.book_events == book_messages  # one book event per venue book message

    by_time: dict[tuple[str, int], list[tuple[int, float, float]]] = defaultdict(list)
    for symbol, t, seq, bid, ask, *_ in tickers:
        by_time[(symbol, t)].append((seq, bid, ask))
    compared = older = 0
    for (symbol, t), group in by_time.items():
        seen = states.get((symbol, t))
        if seen is None:
            # no book message of this instant: only allowed for tickers older than our snapshot
            assert t < first_update[symbol], f"{symbol} ticker at {t} has no book update of the same instant"
            older += len(group)
            continue
        group.sort()
        assert len(group) == len(seen), f"{symbol} at {t}: {len(group)} tickers, {len(seen)} book updates"
        for (seq, bid, ask), (our_bid, our_ask) in zip(group, seen):
            assert (our_bid, our_ask) == (bid, ask), f"{symbol} sequence {seq}: venue {bid}/{ask}, ours {our_bid}/{our_ask}"
            compared += 1
    assert compared + older == len(tickers)
    assert compared > 0 and older <= len(names)  # only the one ticker per product sent on subscribing is older


def test_legacy_every_match_comes_out_once_with_the_taker_side():
    """Each match once, its maker side inverted; and the venue's own word on the taker side: the ticker
    of a trade names it (``side`` there is the taker's), so our trade with that id must agree."""
    path = shared_capture(LEGACY)
    _, tickers, matches, _ = _truth(path)
    trades = [e for e in replay_events([path]) if isinstance(e, Trade)]
    ours = {(t.symbol, t.trade_id): t for t in trades}
    assert len(ours) == len(trades), "a trade came out twice"
    assert len(trades) == len(matches)
    taker = {"buy": "sell", "sell": "buy"}  # legacy match.side is the maker's side
    for symbol, trade_id, maker_side, price, size in matches:
        t = ours[(symbol, trade_id)]
        assert (t.side, t.price, t.size) == (taker[maker_side], price, size)
        assert t.venue == "coinbase-legacy" and t.ts_exchange is not None
    for symbol, _, _, _, _, trade_id, taker_side, price in tickers:
        t = ours[(symbol, trade_id)]
        assert (t.side, t.price) == (taker_side, price), f"{symbol} trade {trade_id}"
    assert tickers  # not vacuous: every ticker in the capture names a trade we published
