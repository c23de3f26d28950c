"""The coinbase-legacy replay decoder (the Exchange feed of EXCHANGES.md 4.2) with hand-made frames."""

from __future__ import annotations

import json

from marketfeed.adapters.coinbase.legacy import CoinbaseLegacyAdapter
from marketfeed.events import BOOK_INVALID, DISCONNECTED, ERROR, SUBSCRIBED, Book, Status, Trade
from marketfeed.venues import make_adapter

T0 = 1_618_677_816_000_000_000
PRODUCTS = json.dumps([{"id": "SKL-USD", "base_currency": "SKL", "quote_currency": "USD"},
                       {"id": "XBT-EUR", "base_currency": "XBT", "quote_currency": "EUR"}])


def adapter():
    a = make_adapter("coinbase-legacy", None)
    assert isinstance(a, CoinbaseLegacyAdapter)
    a.on_rest(T0, "https://api.pro.coinbase.com/products", 200, PRODUCTS)
    a.on_open("c1", T0, "wss://ws-feed.pro.coinbase.com", None)
    a.on_frame("c1", T0, json.dumps({"type": "snapshot", "product_id": "SKL-USD",
                                     "bids": [["0.7900", "10"], ["0.7800", "5"]], "asks": [["0.7910", "3"], ["0.8000", "1"]]}))
    return a


def change(side, price, size, product="SKL-USD"):
    return json.dumps({"type": "l2update", "product_id": product, "changes": [[side, price, size]],
                       "time": "2021-04-17T16:43:37.075687Z"})


def test_buy_is_bid_sell_is_ask():
    a = adapter()
    a.on_frame("c1", T0, change("sell", "0.7905", "2"))
    a.on_frame("c1", T0, change("buy", "0.7900", "0"))
    snap, ask, bid = [e for e in a.take_events() if isinstance(e, Book)]
    assert snap.snapshot and snap.seq is None and snap.bids == [(0.79, 10.0), (0.78, 5.0)]
    assert ask.asks == [(0.7905, 2.0)] and ask.bids == []
    assert bid.bids == [(0.79, 0.0)] and bid.ts_exchange == 1618677817075687000
    assert a.books["SKL-USD"].top(1) == ([(0.78, 5.0)], [(0.7905, 2.0)])


def test_match_side_is_inverted_and_deduplicated():
    a = adapter()
    a.take_events()
    match = {"type": "match", "trade_id": 7, "maker_order_id": "m", "taker_order_id": "t", "side": "sell",
             "size": "3", "price": "0.7910", "product_id": "SKL-USD", "sequence": 5, "time": "2021-04-17T16:43:37.1Z"}
    a.on_frame("c1", T0, json.dumps({**match, "type": "last_match"}))
    a.on_frame("c1", T0, json.dumps(match))
    a.on_frame("c1", T0, json.dumps({**match, "trade_id": 8, "side": "buy"}))
    trades = [e for e in a.take_events() if isinstance(e, Trade)]
    assert [(t.trade_id, t.side) for t in trades] == [("7", "buy"), ("8", "sell")]
    assert a.counters["duplicate_trades"] == 1


def test_symbols_from_metadata_with_aliases():
    a = adapter()
    a.on_frame("c1", T0, json.dumps({"type": "subscriptions", "channels": [
        {"name": "level2", "product_ids": ["SKL-USD", "XBT-EUR"]}, {"name": "ticker", "product_ids": ["SKL-USD"]}]}))
    assert [e.symbol for e in a.take_events() if isinstance(e, Status) and e.state == SUBSCRIBED] == ["SKL-USD", "BTC-EUR"]


def test_unknown_side_crossed_book_and_close_invalidate():
    a = adapter()
    a.take_events()
    a.on_frame("c1", T0, change("bid", "0.7", "1"))
    events = a.take_events()
    assert [(e.symbol, e.state) for e in events if isinstance(e, Status)] == [("SKL-USD", BOOK_INVALID)]
    a.on_frame("c1", T0, change("buy", "0.7", "1"))  # no valid book: nothing comes out
    assert a.take_events() == [] and a.counters["update_without_snapshot"] == 1
    a.on_frame("c1", T0, json.dumps({"type": "snapshot", "product_id": "SKL-USD", "bids": [["1", "1"]], "asks": [["2", "1"]]}))
    a.on_frame("c1", T0, change("buy", "2.5", "1"))  # crosses the ask
    events = a.take_events()
    assert [type(e) for e in events] == [Book, Status] and events[1].reason == "crossed book"
    a.on_frame("c1", T0, json.dumps({"type": "snapshot", "product_id": "SKL-USD", "bids": [["1", "1"]], "asks": [["2", "1"]]}))
    a.take_events()
    a.on_close("c1", T0, 1006, "connection lost")
    assert [(e.state, e.symbol) for e in a.take_events()] == [(DISCONNECTED, None), (BOOK_INVALID, "SKL-USD")]


def test_bad_input_is_counted():
    a = adapter()
    a.take_events()
    for frame in ("{", '{"type":"l2update"}', '{"type":"brand_new"}', "[]"):
        a.on_frame("c1", T0, frame)
    assert a.counters["malformed"] == 3 and a.counters["unknown_message"] == 1 and a.take_events() == []
    a.on_frame("c1", T0, '{"type":"error","message":"Failed to subscribe","reason":"level2 requires auth"}')
    (err,) = a.take_events()
    assert err.state == ERROR and "Failed to subscribe" in err.reason
