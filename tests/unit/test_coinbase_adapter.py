"""The Coinbase Advanced Trade adapter driven with frames shaped like the venue's (EXCHANGES.md 4.1)."""

from __future__ import annotations

import json

from marketfeed.adapters.coinbase.adapter import SECOND_NS, PRODUCTS_PATH, CoinbaseAdapter, RecentIds
from marketfeed.adapters.coinbase.schemas import Product
from marketfeed.adapters.coinbase.symbols import ProductMap, guess, normalise
from marketfeed.adapters.coinbase.times import parse_time_ns
from marketfeed.config import VenueConfig
from marketfeed.events import BOOK_INVALID, CONNECTED, DISCONNECTED, ERROR, STALE, SUBSCRIBED, Book, Status, Trade
from marketfeed.protocol import Connect, Disconnect, Fetch, Send
from tests.helpers import ConsumerBooks

S = 1_000_000_000
T0 = 1_760_000_000 * S

PRODUCTS = {
    "products": [
        {"product_id": "BTC-USD", "base_currency_id": "BTC", "quote_currency_id": "USD", "product_type": "SPOT",
         "alias": "", "alias_to": ["BTC-USDC"]},
        {"product_id": "BTC-USDC", "base_currency_id": "BTC", "quote_currency_id": "USDC", "product_type": "SPOT",
         "alias": "BTC-USD", "alias_to": []},
        {"product_id": "ETH-USD", "base_currency_id": "ETH", "quote_currency_id": "USD", "product_type": "SPOT"},
        {"product_id": "BIT-28NOV26-CDE", "base_currency_id": "", "quote_currency_id": "USD",
         "product_type": "FUTURE"},
    ],
    "num_products": 4,
}


def l2(seq, product, kind, updates, ts="2026-11-21T10:00:00.123456789Z"):
    return json.dumps({
        "channel": "l2_data", "client_id": "", "timestamp": ts, "sequence_num": seq,
        "events": [{"type": kind, "product_id": product, "updates": [
            {"side": side, "event_time": "2026-11-21T10:00:00.1Z", "price_level": p, "new_quantity": q}
            for side, p, q in updates]}]})


def trades(seq, kind, items):
    return json.dumps({
        "channel": "market_trades", "client_id": "", "timestamp": "2026-11-21T10:00:00Z", "sequence_num": seq,
        "events": [{"type": kind, "trades": [
            {"trade_id": tid, "product_id": product, "price": price, "size": size, "side": side,
             "time": "2026-11-21T10:00:00.5Z"} for tid, product, price, size, side in items]}]})


def heartbeat(seq, counter):
    return json.dumps({"channel": "heartbeats", "client_id": "", "timestamp": "2026-11-21T10:00:00Z",
                       "sequence_num": seq, "events": [{"current_time": "2026-11-21 10:00:00", "heartbeat_counter": counter}]})


def live(symbols=("BTC-USD", "ETH-USD")):
    adapter = CoinbaseAdapter("coinbase", VenueConfig(symbols=list(symbols), ws_url="ws://127.0.0.1:1", rest_url="http://127.0.0.1:2"))
    adapter.start(T0)
    (fetch,) = adapter.take_commands()
    assert isinstance(fetch, Fetch) and fetch.url == "http://127.0.0.1:2" + PRODUCTS_PATH
    adapter.on_rest(T0, fetch.url, 200, json.dumps(PRODUCTS))
    (connect,) = adapter.take_commands()
    assert isinstance(connect, Connect) and connect.url == "ws://127.0.0.1:1"
    adapter.on_open("c1", T0, connect.url, connect.plan)
    return adapter, connect


def synced(adapter, conn="c1", seq0=0):
    """Snapshots for BTC-USD and ETH-USD on ``conn``; returns the next sequence_num."""
    adapter.on_frame(conn, T0, l2(seq0, "BTC-USD", "snapshot",
                                  [("bid", "100.00", "1"), ("bid", "99.5", "2"), ("offer", "100.50", "3"), ("offer", "101", "4")]))
    adapter.on_frame(conn, T0, l2(seq0 + 1, "ETH-USD", "snapshot", [("bid", "10", "1"), ("offer", "11", "1")]))
    return seq0 + 2


def books_of(events):
    return [e for e in events if isinstance(e, Book)]


def statuses(events, state=None):
    return [e for e in events if isinstance(e, Status) and (state is None or e.state == state)]


def test_subscribes_one_channel_per_message_heartbeats_first():
    adapter, connect = live()
    assert connect.plan["products"] == ["BTC-USD", "ETH-USD"]
    sends = adapter.take_commands()
    assert all(isinstance(s, Send) and s.conn == "c1" for s in sends)
    bodies = [json.loads(s.data) for s in sends]
    assert [b["channel"] for b in bodies] == ["heartbeats", "level2", "market_trades"]
    assert all(b["type"] == "subscribe" and "channels" not in b for b in bodies)
    assert bodies[1]["product_ids"] == ["BTC-USD", "ETH-USD"]
    assert statuses(adapter.take_events(), CONNECTED)


def test_snapshot_and_offer_updates_keep_both_sides():
    adapter, _ = live()
    adapter.take_events()
    seq = synced(adapter)
    adapter.on_frame("c1", T0, l2(seq, "BTC-USD", "update",
                                  [("offer", "100.25", "5"), ("offer", "100.50", "0"), ("bid", "100.00", "0.5")]))
    events = adapter.take_events()
    snap, _, update = books_of(events)
    assert snap.snapshot and snap.symbol == "BTC-USD" and snap.seq == 0
    assert snap.bids == [(100.0, 1.0), (99.5, 2.0)] and snap.asks == [(100.5, 3.0), (101.0, 4.0)]
    assert not update.snapshot and update.seq == 2
    assert update.asks == [(100.25, 5.0), (100.5, 0.0)] and update.bids == [(100.0, 0.5)]
    assert update.ts_exchange == parse_time_ns("2026-11-21T10:00:00.123456789Z")
    book = adapter.books["BTC-USD"]
    assert book.top(5) == ([(100.0, 0.5), (99.5, 2.0)], [(100.25, 5.0), (101.0, 4.0)])
    consumer = ConsumerBooks()
    for e in events:
        consumer.apply(e)
    assert consumer.violations == []
    assert consumer.books[("coinbase", "BTC-USD")].top(5) == book.top(5)


def test_diff_levels_are_best_first_without_reordering_repeats():
    adapter, _ = live()
    seq = synced(adapter)
    adapter.take_events()
    adapter.on_frame("c1", T0, l2(seq, "BTC-USD", "update",
                                  [("bid", "98", "1"), ("bid", "99", "1"), ("bid", "98", "0"), ("offer", "103", "1"), ("offer", "102", "1")]))
    (update,) = books_of(adapter.take_events())
    assert update.bids == [(99.0, 1.0), (98.0, 1.0), (98.0, 0.0)]
    assert update.asks == [(102.0, 1.0), (103.0, 1.0)]
    assert 98.0 not in adapter.books["BTC-USD"].bids.levels


def test_gap_invalidates_every_book_on_the_connection_and_reconnects():
    adapter, _ = live()
    seq = synced(adapter)
    adapter.take_events()
    adapter.take_commands()
    adapter.on_frame("c1", T0 + 1, l2(seq + 1, "BTC-USD", "update", [("bid", "100", "9")]))  # seq skipped
    events = adapter.take_events()
    assert books_of(events) == []  # nothing from a book behind a gap
    invalid = statuses(events, BOOK_INVALID)
    assert sorted(e.symbol for e in invalid) == ["BTC-USD", "ETH-USD"]
    assert all(e.reason.startswith("gap: expected sequence_num=2, got 3") for e in invalid)
    (cmd,) = adapter.take_commands()
    assert isinstance(cmd, Disconnect) and cmd.conn == "c1" and not cmd.final and cmd.reason.startswith("gap")
    assert adapter.counters["gaps"] == 1
    # frames that arrive before the close are ignored; the close does not repeat book_invalid
    adapter.on_frame("c1", T0 + 2, l2(seq + 2, "BTC-USD", "update", [("bid", "100", "9")]))
    adapter.on_close("c1", T0 + 3, 1000, cmd.reason)
    events = adapter.take_events()
    assert [e.state for e in events] == [DISCONNECTED]
    # the runtime reconnects with the same plan: a fresh snapshot makes the books valid again
    adapter.on_open("c2", T0 + 4, "ws://127.0.0.1:1", {"products": ["BTC-USD", "ETH-USD"]})
    synced(adapter, "c2", seq0=0)
    events = adapter.take_events()
    assert [b.snapshot for b in books_of(events)] == [True, True]


def test_duplicate_sequence_is_dropped():
    adapter, _ = live()
    seq = synced(adapter)
    adapter.take_events()
    adapter.on_frame("c1", T0, l2(seq, "BTC-USD", "update", [("bid", "100", "7")]))
    adapter.on_frame("c1", T0, l2(seq, "BTC-USD", "update", [("bid", "100", "7")]))
    adapter.on_frame("c1", T0, l2(seq - 1, "BTC-USD", "update", [("bid", "100", "8")]))
    assert len(books_of(adapter.take_events())) == 1
    assert adapter.counters["duplicates"] == 2
    assert adapter.books["BTC-USD"].best_bid() == (100.0, 7.0)
    assert not any(isinstance(c, Disconnect) for c in adapter.take_commands())


def test_sequence_counts_across_channels():
    adapter, _ = live()
    seq = synced(adapter)
    adapter.on_frame("c1", T0, heartbeat(seq, 1))
    adapter.on_frame("c1", T0, trades(seq + 1, "update", [("1", "BTC-USD", "100.5", "0.1", "BUY")]))
    adapter.on_frame("c1", T0, json.dumps({"channel": "ticker", "sequence_num": seq + 2, "events": []}))
    adapter.on_frame("c1", T0, l2(seq + 3, "ETH-USD", "update", [("offer", "11", "2")]))
    assert adapter.counters["gaps"] == 0
    assert books_of(adapter.take_events())[-1].seq == seq + 3


def test_update_before_snapshot_is_not_published():
    adapter, _ = live()
    adapter.take_events()
    adapter.on_frame("c1", T0, l2(0, "BTC-USD", "update", [("bid", "100", "1")]))
    assert books_of(adapter.take_events()) == []
    assert adapter.counters["update_without_snapshot"] == 1


def test_unknown_side_invalidates_instead_of_guessing():
    adapter, _ = live()
    seq = synced(adapter)
    adapter.take_events()
    adapter.take_commands()
    adapter.on_frame("c1", T0, l2(seq, "BTC-USD", "update", [("ask", "100.5", "1")]))
    events = adapter.take_events()
    assert books_of(events) == [] and {e.symbol for e in statuses(events, BOOK_INVALID)} == {"BTC-USD", "ETH-USD"}
    assert isinstance(adapter.take_commands()[0], Disconnect)


def test_trades_taker_side_and_no_repeats_after_reconnect():
    adapter, _ = live()
    synced(adapter)
    adapter.take_events()
    snapshot = [("11", "BTC-USD", "100.50", "0.1", "BUY"), ("10", "BTC-USD", "100.00", "0.2", "SELL")]
    adapter.on_frame("c1", T0, trades(2, "snapshot", snapshot))
    adapter.on_frame("c1", T0, trades(3, "update", [("12", "BTC-USD", "100.5", "0.3", "BUY")]))
    first = [e for e in adapter.take_events() if isinstance(e, Trade)]
    assert [(t.trade_id, t.side, t.price, t.size) for t in first] == [
        ("11", "buy", 100.5, 0.1), ("10", "sell", 100.0, 0.2), ("12", "buy", 100.5, 0.3)]
    assert first[0].ts_exchange == parse_time_ns("2026-11-21T10:00:00.5Z")
    # trades at the best ask bought, at the best bid sold: the evidence agrees with "taker side"
    assert adapter.counters["trade_side_agrees"] == 3 and adapter.counters["trade_side_disagrees"] == 0
    adapter.on_close("c1", T0, None, "connection lost")
    adapter.on_open("c2", T0, "ws://127.0.0.1:1", {"products": ["BTC-USD", "ETH-USD"]})
    snapshot2 = [("13", "BTC-USD", "100.5", "0.4", "SELL")] + snapshot + [("12", "BTC-USD", "100.5", "0.3", "BUY")]
    adapter.on_frame("c2", T0, trades(0, "snapshot", snapshot2))
    again = [e for e in adapter.take_events() if isinstance(e, Trade)]
    assert [t.trade_id for t in again] == ["13"]  # only the trade we missed while disconnected
    assert adapter.counters["duplicate_trades"] == 3


def test_recent_ids_are_bounded():
    ids = RecentIds(3)
    assert all(ids.add(i) for i in range(5))
    assert len(ids) == 3 and not ids.add(4) and ids.add(0)


def test_heartbeat_silence_is_stale():
    adapter, _ = live()
    adapter.take_commands()
    adapter.on_frame("c1", T0 + 1 * S, heartbeat(0, 1))
    adapter.on_tick(T0 + 5 * S)
    assert adapter.take_commands() == []
    # a heartbeat whose counter does not advance is not a sign of life
    adapter.on_frame("c1", T0 + 4 * S, heartbeat(1, 1))
    assert adapter.counters["heartbeat_stalled"] == 1
    adapter.on_tick(T0 + 6 * S + 1)
    (cmd,) = adapter.take_commands()
    assert isinstance(cmd, Disconnect) and cmd.reason.startswith("stale")
    adapter.on_tick(T0 + 7 * S)
    assert adapter.take_commands() == []  # asked once
    synced(adapter, seq0=2)
    adapter.take_events()
    adapter.on_close("c1", T0 + 7 * S, None, cmd.reason)
    events = adapter.take_events()
    assert [e.state for e in events] == [STALE, DISCONNECTED, BOOK_INVALID, BOOK_INVALID]


def test_heartbeats_keep_the_connection_fresh():
    adapter, _ = live()
    adapter.take_commands()
    for i in range(10):
        adapter.on_frame("c1", T0 + i * S, heartbeat(i, i))
        adapter.on_tick(T0 + i * S + S // 2)
    assert adapter.take_commands() == []


def test_subscriptions_ack_and_venue_error():
    adapter, _ = live()
    adapter.take_events()
    adapter.on_frame("c1", T0, json.dumps({"channel": "subscriptions", "sequence_num": 0, "events": [
        {"subscriptions": {"level2": ["BTC-USD", "ETH-USD"], "heartbeats": ["heartbeats"]}}]}))
    adapter.on_frame("c1", T0, json.dumps({"channel": "subscriptions", "sequence_num": 1, "events": [
        {"subscriptions": {"level2": ["BTC-USD", "ETH-USD"], "market_trades": ["BTC-USD"]}}]}))
    assert [e.symbol for e in statuses(adapter.take_events(), SUBSCRIBED)] == ["BTC-USD", "ETH-USD"]
    adapter.on_frame("c1", T0, '{"type":"error","message":"Failed to subscribe: product DOGE-XYZ"}')
    (err,) = statuses(adapter.take_events(), ERROR)
    assert "DOGE-XYZ" in err.reason and adapter.counters["venue_errors"] == 1


def test_refused_subscription_is_asked_again_after_a_pause():
    adapter, _ = live()
    adapter.take_commands()
    adapter.on_frame("c1", T0, '{"type":"error","message":"Failure to subscribe"}')
    adapter.on_frame("c1", T0 + 1, '{"type":"error","message":"Failure to subscribe"}')  # one retry pending
    adapter.on_tick(T0 + SECOND_NS)
    assert adapter.take_commands() == []
    adapter.on_tick(T0 + 2 * SECOND_NS)
    bodies = [json.loads(s.data) for s in adapter.take_commands()]
    assert [(b["type"], b["channel"], b["product_ids"]) for b in bodies] == [
        ("subscribe", "level2", ["BTC-USD", "ETH-USD"]), ("subscribe", "market_trades", ["BTC-USD", "ETH-USD"])]
    adapter.on_tick(T0 + 10 * SECOND_NS)
    assert [c for c in adapter.take_commands() if isinstance(c, Send)] == []
    assert adapter.counters["resubscribes"] == 1


def test_bad_input_is_counted_never_raised():
    adapter, _ = live()
    seq = synced(adapter)
    adapter.take_events()
    for frame in ("not json", "[1,2]", '{"channel":"l2_data"}', b"\x00\xff", '{"hello":1}'):
        adapter.on_frame("c1", T0, frame)
    assert adapter.counters["malformed"] >= 3 and adapter.counters["unknown_message"] >= 1
    # a known channel that does not decode consumes its sequence number and loses its update
    adapter.on_frame("c1", T0, json.dumps({"channel": "l2_data", "sequence_num": seq, "events": "garbage"}))
    assert {e.symbol for e in statuses(adapter.take_events(), BOOK_INVALID)} == {"BTC-USD", "ETH-USD"}
    adapter.on_frame("c9", T0, heartbeat(0, 1))  # a connection we never saw opened
    assert adapter.counters["ignored_after_close"] == 1


def test_products_not_subscribed_are_ignored_live():
    adapter, _ = live(("BTC-USD",))
    adapter.on_frame("c1", T0, l2(0, "ETH-USD", "snapshot", [("bid", "1", "1")]))
    assert books_of(adapter.take_events()) == [] and adapter.counters["unknown_symbol"] == 1


def test_unknown_symbol_and_usdc_alias():
    adapter, connect = live(("BTC-USDC", "NOPE-USD"))
    assert connect.plan["products"] == ["BTC-USD"]  # USDC market data is served as the USD product
    errors = statuses(adapter.take_events(), ERROR)
    assert [e.symbol for e in errors] == ["NOPE-USD"]
    adapter.on_frame("c1", T0, l2(0, "BTC-USD", "snapshot", [("bid", "1", "1"), ("offer", "2", "1")]))
    assert books_of(adapter.take_events())[0].symbol == "BTC-USDC"
    # a replay without the config learns the published name from the recorded plan
    replay = CoinbaseAdapter("coinbase", None)
    replay.on_rest(T0, "https://api.coinbase.com" + PRODUCTS_PATH, 200, json.dumps(PRODUCTS))
    replay.on_open("c1", T0, connect.url, json.loads(json.dumps(connect.plan)))
    replay.on_frame("c1", T0, l2(0, "BTC-USD", "snapshot", [("bid", "1", "1"), ("offer", "2", "1")]))
    assert books_of(replay.take_events())[0].symbol == "BTC-USDC"


def test_products_failure_retries_with_delay():
    adapter = CoinbaseAdapter("coinbase", VenueConfig(symbols=["BTC-USD"]))
    adapter.start(T0)
    (fetch,) = adapter.take_commands()
    assert fetch.url == "https://api.coinbase.com" + PRODUCTS_PATH
    adapter.on_rest(T0, fetch.url, 503, "unavailable")
    (retry,) = adapter.take_commands()
    assert isinstance(retry, Fetch) and retry.delay > 0
    assert statuses(adapter.take_events(), ERROR)
    adapter.on_rest(T0, fetch.url, 200, json.dumps(PRODUCTS))
    (connect,) = adapter.take_commands()
    assert connect.url == "wss://advanced-trade-ws.coinbase.com"


def test_replay_mode_follows_every_product():
    adapter = CoinbaseAdapter("coinbase", None)
    adapter.on_open("c1", T0, "wss://advanced-trade-ws.coinbase.com", None)
    adapter.on_frame("c1", T0, l2(0, "SOL-EUR", "snapshot", [("bid", "1", "1"), ("offer", "2", "1")]))
    adapter.on_rest(T0, "https://api.coinbase.com" + PRODUCTS_PATH, 200, json.dumps(PRODUCTS))
    adapter.on_frame("c1", T0, l2(1, "ETH-USD", "snapshot", [("bid", "1", "1"), ("offer", "2", "1")]))
    assert [b.symbol for b in books_of(adapter.take_events())] == ["SOL-EUR", "ETH-USD"]
    assert adapter.take_commands() == [Send("c1", '{"type":"subscribe","channel":"heartbeats"}')]


def test_symbols_from_metadata():
    products = [Product(**p) for p in PRODUCTS["products"]]
    assert [normalise(p) for p in products] == ["BTC-USD", "BTC-USDC", "ETH-USD", None]
    m = ProductMap(products)
    assert m.subscription_for("BTC-USDC") == "BTC-USD" and m.subscription_for("BTC-USD") == "BTC-USD"
    assert m.subscription_for("BIT-28NOV26-CDE") is None
    assert guess("btc-usd") == "BTC-USD" and guess("BIT-28NOV26-CDE") is None


def test_parse_time_ns():
    assert parse_time_ns("2023-02-09T20:32:50.714964855Z") == 1675974770714964855
    assert parse_time_ns("2023-02-09T20:32:50.714964Z") == 1675974770714964000
    assert parse_time_ns("2023-02-09T20:32:50Z") == 1675974770000000000
    assert parse_time_ns("1970-01-01T00:00:00Z") == 0
    assert parse_time_ns("2023-02-09T21:32:50.5+01:00") == 1675974770500000000
    assert parse_time_ns("garbage") is None and parse_time_ns(None) is None and parse_time_ns("") is None


def test_crossed_book_is_never_published():
    adapter, _ = live()
    seq = synced(adapter)
    adapter.take_events()
    adapter.take_commands()
    adapter.on_frame("c1", T0, l2(seq, "BTC-USD", "update", [("bid", "100.75", "1")]))  # above the best offer
    events = adapter.take_events()
    assert books_of(events) == [] and adapter.counters["crossed"] == 1
    assert {e.symbol for e in statuses(events, BOOK_INVALID)} == {"BTC-USD", "ETH-USD"}
    assert isinstance(adapter.take_commands()[0], Disconnect)


def test_parse_time_ns_rejects_odd_fractions_and_crosses_days():
    assert parse_time_ns("2023-02-09T20:32:50.-7Z") is None
    assert parse_time_ns("2023-02-09T20:32:50. 7Z") is None
    assert parse_time_ns("2023-02-09T23:59:59.999999999Z") + 1 == parse_time_ns("2023-02-10T00:00:00Z")
    assert parse_time_ns("2024-02-29T00:00:00.000001Z") == 1709164800000001000


def test_prices_parse_exactly_like_float_of_the_text():
    import random

    rng = random.Random(5)
    texts = [f"{rng.randint(0, 10**6)}.{rng.randint(0, 10**8):08d}"[: rng.randint(3, 16)].rstrip(".") or "0"
             for _ in range(2000)] + ["0.00000015", "61800.30", "1e-8", "0"]
    for text in texts:
        frame = l2(0, "BTC-USD", "snapshot", [("bid", text, text)])
        adapter = CoinbaseAdapter("coinbase", None)
        adapter.on_open("c1", T0, "x", None)
        adapter.on_frame("c1", T0, frame)
        book = books_of(adapter.take_events())[0]
        assert book.bids == ([(float(text), float(text))] if float(text) else [])


def test_product_missing_from_the_level2_acknowledgement_is_an_error():
    adapter, _ = live()
    adapter.take_events()
    adapter.on_frame("c1", T0, json.dumps({"channel": "subscriptions", "sequence_num": 0, "events": [
        {"subscriptions": {"heartbeats": ["heartbeats"]}}]}))
    adapter.on_frame("c1", T0, json.dumps({"channel": "subscriptions", "sequence_num": 1, "events": [
        {"subscriptions": {"heartbeats": ["heartbeats"], "level2": ["BTC-USD"]}}]}))
    adapter.on_frame("c1", T0, json.dumps({"channel": "subscriptions", "sequence_num": 2, "events": [
        {"subscriptions": {"level2": ["BTC-USD"], "market_trades": ["BTC-USD"]}}]}))
    events = adapter.take_events()
    assert [(e.symbol, e.reason) for e in statuses(events, ERROR)] == [("ETH-USD", "level2 not subscribed for ETH-USD")]
    assert [e.symbol for e in statuses(events, SUBSCRIBED)] == ["BTC-USD"]
