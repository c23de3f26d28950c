"""The Kraken adapter as a state machine: fed frames, checked on its events and commands.

Book frames come from the simulator's true book (``book_frames``: the view Kraken sends one
subscription, with the true checksum); faults are made by editing a frame. No sockets here."""

from __future__ import annotations

import calendar
import json

import msgspec
import pytest

from marketfeed.adapters.kraken.adapter import (
    RESYNC_BUDGET,
    RESYNC_WINDOW,
    SECOND,
    SNAPSHOT_TIMEOUT,
    KrakenAdapter,
)
from marketfeed.adapters.kraken.checksum import checksum_of_book
from marketfeed.config import ConfigError, VenueConfig
from marketfeed.events import BOOK_INVALID, CONNECTED, DISCONNECTED, ERROR, STALE, SUBSCRIBED, Book, Status
from marketfeed.protocol import Connect, Fetch, Send
from marketfeed.simulate.kraken import DEFAULT_PAIRS, asset_pairs_body, book_frames, number_text
from tests.helpers import ConsumerBooks

BTC, ETH = DEFAULT_PAIRS[0], DEFAULT_PAIRS[1]
T0 = 1_763_700_000 * SECOND


def ack(channel: str, symbol: str, depth: int | None = None, req_id: int = 1) -> str:
    result: dict = {"channel": channel, "symbol": symbol, "snapshot": True}
    if depth is not None:
        result["depth"] = depth
    return json.dumps({"method": "subscribe", "result": result, "success": True, "req_id": req_id,
                       "time_in": "2026-11-21T00:00:00.000000Z", "time_out": "2026-11-21T00:00:00.000001Z"})


def with_checksum(frame: str, checksum: int) -> str:
    obj = json.loads(frame)
    obj["data"][0]["checksum"] = checksum
    return json.dumps(obj)


def sends(adapter: KrakenAdapter) -> list[dict]:
    return [json.loads(c.data) for c in adapter.take_commands() if isinstance(c, Send)]


def statuses(events, state=None):
    return [e for e in events if isinstance(e, Status) and (state is None or e.state == state)]


class LiveKraken:
    """An adapter taken through start, metadata and connect, with BTC-USD and ETH-USD books synced."""

    def __init__(self, depth: int = 10, symbols=("BTC-USD", "ETH-USD"), count: int = 200) -> None:
        self.config = VenueConfig(symbols=list(symbols), depth=depth, ws_url="ws://127.0.0.1:1",
                                  rest_url="http://127.0.0.1:2")
        self.adapter = a = KrakenAdapter("kraken", self.config)
        self.ts = T0
        a.start(self.ts)
        [fetch] = a.take_commands()
        assert fetch == Fetch("http://127.0.0.1:2/0/public/AssetPairs")
        a.on_rest(self.tick(), fetch.url, 200, asset_pairs_body())
        [connect] = a.take_commands()
        assert isinstance(connect, Connect) and connect.url == "ws://127.0.0.1:1/v2"
        self.plan = connect.plan
        a.on_open("k1", self.tick(), connect.url, connect.plan)
        self.opening_sends = sends(a)
        self.frames = {}
        for spec in (BTC, ETH):
            if spec.v2.replace("/", "-") not in symbols:
                continue
            book, snapshot, frames = book_frames(spec, depth, count, seed=5)
            self.frames[spec.v2] = (book, snapshot, frames)
            a.on_frame("k1", self.tick(), ack("book", spec.v2, depth))
            a.on_frame("k1", self.tick(), snapshot)
        self.opening_events = a.take_events()

    def tick(self, seconds: float = 0.001) -> int:
        self.ts += int(seconds * SECOND)
        return self.ts

    def feed(self, data: str, conn: str = "k1") -> list:
        self.adapter.on_frame(conn, self.tick(), data)
        return self.adapter.take_events()


def test_start_fetches_metadata_then_connects_with_a_plan():
    live = LiveKraken(depth=25)
    assert live.plan == {"book": ["BTC/USD", "ETH/USD"], "depth": 25, "trade": ["BTC/USD", "ETH/USD"],
                         "instrument": True}
    instrument, book, trade = live.opening_sends
    assert instrument["method"] == "subscribe" and instrument["params"] == {"channel": "instrument", "snapshot": True}
    assert book["params"] == {"channel": "book", "symbol": ["BTC/USD", "ETH/USD"], "depth": 25, "snapshot": True}
    assert trade["params"] == {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": True}
    assert len({instrument["req_id"], book["req_id"], trade["req_id"]}) == 3
    events = live.opening_events
    assert isinstance(events[0], Status) and events[0].state == CONNECTED  # connected came on open
    assert [(e.symbol, e.reason) for e in statuses(events, SUBSCRIBED)] == [("BTC-USD", "book depth 25"),
                                                                           ("ETH-USD", "book depth 25")]
    snapshots = [e for e in events if isinstance(e, Book)]
    assert [(e.symbol, e.snapshot, len(e.bids), len(e.asks)) for e in snapshots] == [
        ("BTC-USD", True, 25, 25), ("ETH-USD", True, 25, 25)]


def test_unknown_symbol_in_config_is_an_error_status_not_a_crash():
    config = VenueConfig(symbols=["BTC-USD", "NOPE-USD"])
    a = KrakenAdapter("kraken", config)
    a.start(T0)
    [fetch] = a.take_commands()
    assert fetch.url == "https://api.kraken.com/0/public/AssetPairs"
    a.on_rest(T0 + 1, fetch.url, 200, asset_pairs_body())
    [error] = a.take_events()
    assert error.state == ERROR and error.symbol == "NOPE-USD"
    [connect] = a.take_commands()
    assert connect.url == "wss://ws.kraken.com/v2" and connect.plan["book"] == ["BTC/USD"]
    assert a.counters["unknown_symbol"] == 1


def test_asset_pairs_failure_is_retried_with_a_delay():
    a = KrakenAdapter("kraken", VenueConfig(symbols=["BTC-USD"]))
    a.start(T0)
    url = a.take_commands()[0].url
    a.on_rest(T0 + 1, url, 503, "busy")
    [retry] = a.take_commands()
    assert isinstance(retry, Fetch) and retry.url == url and retry.delay > 0
    a.on_rest(T0 + 2, url, 200, '{"error":["EGeneral:Temporary lockout"],"result":{}}')
    [retry2] = a.take_commands()
    assert retry2.delay > retry.delay
    a.on_rest(T0 + 3, url, 200, asset_pairs_body())
    assert [type(c) for c in a.take_commands()] == [Connect]
    assert a.counters["rest_errors"] == 2


def test_invalid_depth_is_a_config_error():
    with pytest.raises(ConfigError, match="depth"):
        KrakenAdapter("kraken", VenueConfig(symbols=["BTC-USD"], depth=20))


@pytest.mark.parametrize("depth", [10, 25, 100, 1000])
def test_every_update_verified_and_consumer_book_equals_the_true_view(depth):
    live = LiveKraken(depth=depth, count=1500)
    consumer = ConsumerBooks()
    for e in live.opening_events:
        consumer.apply(e)
    for spec in (BTC, ETH):
        book, _, frames = live.frames[spec.v2]
        for frame in frames:
            [event] = live.feed(frame)
            assert isinstance(event, Book) and not event.snapshot
            consumer_book = consumer.apply(event)
            assert checksum_of_book(consumer_book, spec.price_precision, spec.qty_precision) == event.checksum
        # the consumer's book is exactly the venue's book to the subscribed depth
        bids, asks = book.view_floats(depth)
        consumer_book = consumer.books[("kraken", spec.v2.replace("/", "-"))]
        assert consumer_book.bids.levels == bids and consumer_book.asks.levels == asks
    assert consumer.violations == []
    assert live.adapter.counters["checksum_failures"] == 0


def test_truncation_emits_explicit_deletions():
    live = LiveKraken(depth=10)
    book, _, frames = live.frames[BTC.v2]
    for frame in frames:  # bring the adapter to the true book's present state
        live.feed(frame)
    best_bid = book.bid_prices[-1]
    tenth_bid = book.bid_prices[-10]
    # a new bid between the best and the second: the 10th bid leaves the window without a delete
    new_price = best_bid + 1 if best_bid + 1 < book.ask_prices[0] else None
    assert new_price is not None
    change = book.change("bids", new_price, 12345678)
    [level] = book.view_of_change(change, 10)
    frame = (f'{{"channel":"book","type":"update","data":[{{"symbol":"BTC/USD","bids":[{level}],"asks":[],'
             f'"checksum":{book.checksum()},"timestamp":"2026-11-21T00:00:01.000001Z"}}]}}')
    [event] = live.feed(frame)
    assert isinstance(event, Book) and event.checksum == book.checksum()
    assert event.bids == [(float(number_text(new_price, 1)), 0.12345678), (float(number_text(tenth_bid, 1)), 0.0)]
    assert len(live.adapter.books["BTC/USD"].book.bids) == 10


def test_checksum_mismatch_resubscribes_that_symbol_only():
    live = LiveKraken(depth=25)
    a = live.adapter
    _, _, btc_frames = live.frames[BTC.v2]
    _, _, eth_frames = live.frames[ETH.v2]
    assert isinstance(live.feed(btc_frames[0])[0], Book)
    bad = with_checksum(btc_frames[1], (json.loads(btc_frames[1])["data"][0]["checksum"] + 1) % 2**32)
    events = live.feed(bad)
    # no event from the failing message: only the status
    assert [(type(e), e.state, e.symbol) for e in events] == [(Status, BOOK_INVALID, "BTC-USD")]
    assert events[0].reason.startswith("checksum mismatch: venue")
    unsub, sub = sends(a)
    assert unsub["method"] == "unsubscribe" and unsub["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": 25}
    assert sub["method"] == "subscribe" and sub["params"] == {"channel": "book", "symbol": ["BTC/USD"], "depth": 25,
                                                              "snapshot": True}
    # updates for BTC still in flight are dropped; ETH goes on untouched
    assert live.feed(btc_frames[2]) == []
    [eth] = live.feed(eth_frames[0])
    assert isinstance(eth, Book) and eth.symbol == "ETH-USD" and not eth.snapshot
    # the fresh snapshot brings BTC back
    book, _, _ = live.frames[BTC.v2]
    live.feed(json.dumps({"method": "unsubscribe", "result": {"channel": "book", "depth": 25, "symbol": "BTC/USD"},
                          "success": True}))
    live.feed(ack("book", "BTC/USD", 25))
    events = live.feed(book.snapshot_message(25))
    assert isinstance(events[0], Book) and events[0].snapshot and events[0].symbol == "BTC-USD"
    assert a.counters["checksum_failures"] == 1 and a.counters["resyncs"] == 1
    assert statuses(events, BOOK_INVALID) == []


def test_resync_budget_opens_the_circuit_then_retries_after_the_window():
    live = LiveKraken(depth=10)
    a = live.adapter
    book, snapshot, frames = live.frames[BTC.v2]
    bad_snapshot = with_checksum(snapshot, 1)
    for i in range(RESYNC_BUDGET):
        events = live.feed(bad_snapshot)
        assert statuses(events, BOOK_INVALID) and not statuses(events, ERROR)
        assert [s["method"] for s in sends(a)] == ["unsubscribe", "subscribe"]
    events = live.feed(bad_snapshot)  # one more within the window: the budget is spent
    [error] = statuses(events, ERROR)
    assert error.symbol == "BTC-USD" and error.reason.startswith("resync budget spent")
    assert [s["method"] for s in sends(a)] == ["unsubscribe"]  # and no new subscribe
    a.on_tick(live.tick(SNAPSHOT_TIMEOUT / SECOND + 1))
    assert sends(a) == [] or all(s["method"] == "ping" for s in sends(a))
    a.on_tick(live.tick(RESYNC_WINDOW / SECOND))
    assert [s["method"] for s in sends(a) if s["method"] != "ping"] == ["subscribe"]
    # ETH was never touched
    assert not [e for e in statuses(live.opening_events + events) if e.symbol == "ETH-USD" and e.state != SUBSCRIBED]


def test_snapshot_timeout_resubscribes():
    live = LiveKraken(depth=10)
    a = live.adapter
    _, _, frames = live.frames[BTC.v2]
    live.feed(with_checksum(frames[0], 7))
    sends(a)
    a.on_tick(live.tick(SNAPSHOT_TIMEOUT / SECOND - 1))
    assert [s for s in sends(a) if s["method"] != "ping"] == []
    a.on_tick(live.tick(2))
    assert [s["method"] for s in sends(a) if s["method"] != "ping"] == ["unsubscribe", "subscribe"]
    assert a.counters["snapshot_timeouts"] == 1


def test_rejected_subscription_is_an_error_and_not_retried():
    live = LiveKraken(depth=10, symbols=("BTC-USD",))
    a = live.adapter
    a.books["BTC/USD"].reset()
    a.books["BTC/USD"].awaiting_since = live.ts
    events = live.feed(json.dumps({"method": "subscribe", "error": "Currency pair not supported BTC/USD",
                                   "success": False, "symbol": "BTC/USD", "req_id": 3}))
    [error] = events
    assert error.state == ERROR and error.symbol == "BTC-USD" and "Currency pair not supported" in error.reason
    a.on_tick(live.tick(60))
    assert [s for s in sends(a) if s["method"] != "ping"] == []


def test_already_subscribed_is_reported_but_the_snapshot_timer_keeps_running():
    live = LiveKraken(depth=10, symbols=("BTC-USD",))
    a = live.adapter
    _, _, frames = live.frames[BTC.v2]
    live.feed(with_checksum(frames[0], 7))  # a mismatch: resubscribe
    sends(a)
    [error] = live.feed(json.dumps({"method": "subscribe", "error": "Already subscribed", "success": False,
                                    "symbol": "BTC/USD"}))
    assert error.state == ERROR and error.symbol == "BTC-USD"
    a.on_tick(live.tick(SNAPSHOT_TIMEOUT / SECOND + 1))
    assert [s["method"] for s in sends(a) if s["method"] != "ping"] == ["unsubscribe", "subscribe"]


def test_ping_when_idle_and_pong_counted():
    live = LiveKraken(depth=10)
    a = live.adapter
    a.on_tick(live.tick(1))
    assert sends(a) == []
    a.on_tick(live.tick(6))  # no frame for over 5 s
    [ping] = sends(a)
    assert ping["method"] == "ping" and isinstance(ping["req_id"], int)
    a.on_tick(live.tick(1))
    assert sends(a) == []  # one ping per interval
    live.feed(json.dumps({"method": "pong", "req_id": ping["req_id"]}))
    live.feed('{"channel":"heartbeat"}')
    assert a.counters["pongs"] == 1 and a.counters["heartbeats"] == 1
    assert a.take_events() == []


def test_close_marks_stale_disconnected_and_every_book_invalid():
    live = LiveKraken(depth=10)
    a = live.adapter
    a.on_close("k1", live.tick(), None, "stale: no data for 10.0 s")
    events = a.take_events()
    assert [(e.state, e.symbol) for e in events] == [
        (STALE, None), (DISCONNECTED, None), (BOOK_INVALID, "BTC-USD"), (BOOK_INVALID, "ETH-USD")]
    # the runtime reconnects with the same plan: subscriptions again, books wait for snapshots
    a.on_open("k2", live.tick(), "ws://127.0.0.1:1/v2", live.plan)
    assert [s["params"]["channel"] for s in sends(a)] == ["instrument", "book", "trade"]
    assert [e.state for e in a.take_events()] == [CONNECTED]
    _, _, frames = live.frames[BTC.v2]
    assert live.feed(frames[0], conn="k2") == []  # an update before the snapshot is not applied
    assert a.counters["book_waiting_snapshot"] == 1


def trade_msg(kind: str, trades: list[tuple[int, str]]) -> str:
    return json.dumps({"channel": "trade", "type": kind, "data": [
        {"symbol": "BTC/USD", "side": side, "price": 60000.1, "qty": 0.5, "ord_type": "market", "trade_id": tid,
         "timestamp": "2026-11-21T00:00:01.000001Z"} for tid, side in trades]})


def test_trades_once_each_across_a_reconnect_snapshot():
    live = LiveKraken(depth=10, symbols=("BTC-USD",))
    # the first snapshot is history from before the subscription: not emitted
    assert live.feed(trade_msg("snapshot", [(98, "buy"), (99, "sell"), (100, "buy")])) == []
    events = live.feed(trade_msg("update", [(101, "sell"), (102, "buy")]))
    assert [(t.trade_id, t.side, t.symbol, t.price, t.size) for t in events] == [
        ("101", "sell", "BTC-USD", 60000.1, 0.5), ("102", "buy", "BTC-USD", 60000.1, 0.5)]
    assert events[0].ts_exchange == calendar.timegm((2026, 11, 21, 0, 0, 1)) * SECOND + 1000
    # after a reconnect the snapshot overlaps what was seen: only the newer trades come out
    events = live.feed(trade_msg("snapshot", [(100, "buy"), (101, "sell"), (102, "buy"), (103, "sell"), (104, "buy")]))
    assert [t.trade_id for t in events] == ["103", "104"]
    assert live.feed(trade_msg("update", [(104, "buy")])) == []
    assert live.adapter.counters["duplicate_trades"] == 4


def test_bad_input_is_counted_never_raised():
    live = LiveKraken(depth=10)
    a = live.adapter
    for frame in ("not json", "[1,2", '{"channel":"nope","type":"update","data":[]}', "[]", '[1,{"a":[]},"book-10"]',
                  '{"something":"else"}', '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD"}]}',
                  b"\x00\x01"):
        assert live.feed(frame) == []
    assert a.counters["malformed"] >= 4 and a.counters["unknown_message"] >= 2
    # a book message we cannot read invalidates that book
    events = live.feed('{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":"x"}]}]}')
    assert [(e.state, e.symbol) for e in events] == [(BOOK_INVALID, "BTC-USD")]
    # a book for a symbol we did not subscribe
    assert live.feed('{"channel":"book","type":"update","data":[{"symbol":"XRP/USD","bids":[],"asks":[],"checksum":1}]}') == []
    assert a.counters["unknown_symbol"] == 1


def test_system_status_not_online_is_an_error():
    live = LiveKraken(depth=10)
    events = live.feed(json.dumps({"channel": "status", "type": "update", "data": [
        {"system": "maintenance", "api_version": "v2", "connection_id": 1, "version": "2.0.9"}]}))
    assert [(e.state, e.reason) for e in events] == [(ERROR, "kraken system status: maintenance")]
    assert live.feed(json.dumps({"channel": "status", "type": "update", "data": [{"system": "online"}]})) == []


def test_instrument_precision_wins_over_asset_pairs():
    live = LiveKraken(depth=10, symbols=("BTC-USD",))
    a = live.adapter
    kb = a.books["BTC/USD"]
    assert (kb.price_precision, kb.qty_precision) == (1, 8)
    live.feed(json.dumps({"channel": "instrument", "type": "snapshot", "data": {"assets": [], "pairs": [
        {"symbol": "BTC/USD", "base": "BTC", "quote": "USD", "status": "online", "price_precision": 2,
         "qty_precision": 8, "price_increment": 0.01, "qty_increment": 1e-08}]}}))
    assert (kb.price_precision, kb.qty_precision) == (2, 8)
    assert a.counters["precision_mismatch"] == 1
    assert a.pairs.by_v2["BTC/USD"].v1 == "XBT/USD"  # the REST names are kept


def test_replay_mode_learns_depth_from_the_ack_and_follows_every_symbol():
    a = KrakenAdapter("kraken", None)
    a.on_rest(T0, "https://api.kraken.com/0/public/AssetPairs", 200, asset_pairs_body())
    a.on_open("c1", T0, "wss://ws.kraken.com/v2", None)
    book, snapshot, frames = book_frames(ETH, 25, 50, seed=9)
    a.on_frame("c1", T0 + 1, ack("book", "ETH/USD", 25))
    a.on_frame("c1", T0 + 2, snapshot)
    for i, f in enumerate(frames):
        a.on_frame("c1", T0 + 3 + i, f)
    events = a.take_events()
    assert a.books["ETH/USD"].depth == 25
    assert sum(isinstance(e, Book) for e in events) == 51
    assert a.counters["checksum_failures"] == 0
    # a second connection carrying the same symbol never mixes into the book
    a.on_open("c2", T0 + 100, "wss://ws.kraken.com/v2", None)
    a.on_frame("c2", T0 + 101, snapshot)
    assert a.take_events() == [Status("kraken", None, T0 + 100, CONNECTED, "wss://ws.kraken.com/v2")]
    assert a.counters["book_other_conn"] == 1


def test_decoders_accept_bytes():
    live = LiveKraken(depth=10)
    _, _, frames = live.frames[BTC.v2]
    [event] = live.feed(frames[0].encode())
    assert isinstance(event, Book)
    assert msgspec.json.decode(frames[0].encode())["channel"] == "book"
