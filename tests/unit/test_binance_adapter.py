"""The Binance adapter driven by hand, as the runtime would drive it: no sockets, no event loop."""

from __future__ import annotations

import json

import pytest

from marketfeed.adapters.binance.adapter import MAX_CONNECTION_AGE, BinanceAdapter
from marketfeed.config import VenueConfig
from marketfeed.events import Book, Status, Trade
from marketfeed.protocol import Connect, Disconnect, Fetch
from tests.helpers import ConsumerBooks

SPOT_INFO = {
    "symbols": [
        {"symbol": "BTCUSDT", "baseAsset": "BTC", "quoteAsset": "USDT", "status": "TRADING"},
        {"symbol": "ETHUSDT", "baseAsset": "ETH", "quoteAsset": "USDT", "status": "TRADING"},
    ]
}
USDM_INFO = {
    "symbols": [
        {"symbol": "BTCUSDT", "baseAsset": "BTC", "quoteAsset": "USDT", "contractType": "PERPETUAL"},
        {"symbol": "BTCUSDT_250926", "baseAsset": "BTC", "quoteAsset": "USDT", "contractType": "CURRENT_QUARTER", "deliveryDate": 1758873600000},
    ]
}


def frame(stream: str, data: dict) -> str:
    return json.dumps({"stream": stream, "data": data})


def diff(sym: str, U: int, u: int, bids=(), asks=(), pu: int | None = None) -> str:
    data = {"e": "depthUpdate", "E": 1700000000000, "s": sym, "U": U, "u": u,
            "b": [[str(p), str(q)] for p, q in bids], "a": [[str(p), str(q)] for p, q in asks]}
    if pu is not None:
        data["pu"] = pu
    return frame(f"{sym.lower()}@depth@100ms", data)


def snapshot(last_id: int, bids, asks) -> str:
    return json.dumps({"lastUpdateId": last_id, "bids": [[str(p), str(q)] for p, q in bids],
                       "asks": [[str(p), str(q)] for p, q in asks]})


class Harness:
    """Drives an adapter and keeps what it said."""

    def __init__(self, venue: str = "binance", **cfg) -> None:
        cfg.setdefault("symbols", ["BTC-USDT", "ETH-USDT"])
        cfg.setdefault("ws_url", "ws://127.0.0.1:9")
        cfg.setdefault("rest_url", "http://127.0.0.1:9")
        self.adapter = BinanceAdapter(venue, VenueConfig(**cfg))
        self.events: list = []
        self.commands: list = []
        self.consumer = ConsumerBooks()
        self.ts = 1_000

    def take(self):
        events, commands = self.adapter.take_events(), self.adapter.take_commands()
        for e in events:
            self.consumer.apply(e)
        self.events += events
        self.commands += commands
        return events, commands

    def call(self, method: str, *args):
        self.ts += 1
        getattr(self.adapter, method)(*args[:1], self.ts, *args[1:]) if method in ("on_open", "on_frame", "on_close") else getattr(self.adapter, method)(self.ts, *args)
        return self.take()

    def start(self, info=SPOT_INFO):
        _, (fetch,) = self.call("start")
        assert isinstance(fetch, Fetch) and "exchangeInfo" in fetch.url
        return self.call("on_rest", fetch.url, 200, json.dumps(info))

    def open(self, conn: str, connect: Connect):
        return self.call("on_open", conn, connect.url, connect.plan)

    def ack_all(self, conn: str, sends):
        out = []
        for s in sends:
            out.append(self.call("on_frame", conn, json.dumps({"result": None, "id": json.loads(s.data)["id"]})))
        return out


def started_spot(**cfg):
    h = Harness(**cfg)
    _, commands = h.start()
    (connect,) = commands
    _, sends = h.open("c1", connect)
    h.ack_all("c1", sends)
    return h


def synced_spot():
    h = started_spot()
    for sym, base in (("BTCUSDT", 100), ("ETHUSDT", 10)):
        _, cmds = h.call("on_frame", "c1", diff(sym, 98, 101, bids=[(base - 1, 1)]))
        (fetch,) = cmds
        h.call("on_rest", fetch.url, 200, snapshot(100, [(base - 1, 2), (base - 2, 3)], [(base + 1, 4)]))
    return h


def test_start_fetches_metadata_then_connects_and_subscribes() -> None:
    h = Harness()
    _, (fetch,) = h.call("start")
    assert fetch.url.startswith("http://127.0.0.1:9/api/v3/exchangeInfo?symbols=")
    _, commands = h.call("on_rest", fetch.url, 200, json.dumps(SPOT_INFO))
    (connect,) = commands
    assert connect.url == "ws://127.0.0.1:9/stream"
    assert connect.plan == {"streams": ["btcusdt@depth@100ms", "ethusdt@depth@100ms", "btcusdt@trade", "ethusdt@trade"]}
    events, sends = h.open("c1", connect)
    assert [e.state for e in events] == ["connected"]
    (send,) = sends
    assert json.loads(send.data) == {"method": "SUBSCRIBE", "params": connect.plan["streams"], "id": 1}
    (acked,) = h.ack_all("c1", sends)
    assert [(e.symbol, e.state) for e in acked[0]] == [("BTC-USDT", "subscribed"), ("ETH-USDT", "subscribed")]


def test_usdm_splits_depth_and_trades_across_routes_and_names_contracts() -> None:
    h = Harness("binance-usdm", symbols=["BTC-USDT-PERP", "BTC-USDT-20250926"])
    _, commands = h.start(USDM_INFO)
    assert [(c.url, c.plan["streams"]) for c in commands] == [
        ("ws://127.0.0.1:9/public/stream", ["btcusdt@depth@100ms", "btcusdt_250926@depth@100ms"]),
        ("ws://127.0.0.1:9/market/stream", ["btcusdt@aggTrade", "btcusdt_250926@aggTrade"]),
    ]


def test_streams_are_split_by_the_per_connection_limit() -> None:
    h = Harness(max_streams_per_connection=3)
    _, commands = h.start()
    assert [len(c.plan["streams"]) for c in commands] == [3, 1]


def test_unknown_configured_symbol_is_reported_and_skipped() -> None:
    h = Harness(symbols=["BTC-USDT", "NOPE-USDT"])
    events, commands = h.start()
    assert [(e.symbol, e.state) for e in events] == [("NOPE-USDT", "error")]
    assert commands[0].plan["streams"] == ["btcusdt@depth@100ms", "btcusdt@trade"]


def test_invalid_symbol_in_filtered_request_falls_back_to_the_full_list() -> None:
    h = Harness()
    _, (fetch,) = h.call("start")
    events, (retry,) = h.call("on_rest", fetch.url, 400, json.dumps({"code": -1121, "msg": "Invalid symbol."}))
    assert events[0].state == "error" and "Invalid symbol" in events[0].reason
    assert retry.url == "http://127.0.0.1:9/api/v3/exchangeInfo" and retry.delay == 0


def test_exchange_info_outage_is_retried_with_growing_delay() -> None:
    h = Harness()
    _, (fetch,) = h.call("start")
    delays = []
    for _ in range(6):
        events, (fetch,) = h.call("on_rest", fetch.url, 0, "")
        assert events[0].state == "error" and "exchangeInfo failed" in events[0].reason
        delays.append(fetch.delay)
    assert delays == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0]
    _, (connect,) = h.call("on_rest", fetch.url, 200, json.dumps(SPOT_INFO))
    assert isinstance(connect, Connect)


def test_sync_emits_snapshot_then_buffered_diffs_and_matches_truth() -> None:
    h = started_spot()
    _, (fetch,) = h.call("on_frame", "c1", diff("BTCUSDT", 98, 101, bids=[(99, 5)]))
    assert fetch.url == "http://127.0.0.1:9/api/v3/depth?symbol=BTCUSDT&limit=1000" and fetch.weight == 50
    h.call("on_frame", "c1", diff("BTCUSDT", 102, 102, asks=[(101, 0), (102, 7)]))
    events, _ = h.call("on_rest", fetch.url, 200, snapshot(100, [(99, 2), (98, 3)], [(101, 4)]))
    assert [(e.snapshot, e.seq) for e in events] == [(True, 100), (False, 101), (False, 102)]
    book = h.consumer.books[("binance", "BTC-USDT")]
    assert book.top(5) == ([(99.0, 5.0), (98.0, 3.0)], [(102.0, 7.0)])
    assert h.adapter.states["btcusdt"].book.top(5) == book.top(5)


def test_gap_resyncs_that_symbol_only() -> None:
    h = synced_spot()
    events, commands = h.call("on_frame", "c1", diff("BTCUSDT", 150, 151, bids=[(99, 1)]))
    assert [(e.symbol, e.state) for e in events] == [("BTC-USDT", "book_invalid")]
    assert events[0].reason == "gap: expected U<=102, got U=150"
    (fetch,) = commands
    assert "symbol=BTCUSDT" in fetch.url
    # ETH keeps flowing meanwhile
    events, _ = h.call("on_frame", "c1", diff("ETHUSDT", 102, 103, asks=[(12, 1)]))
    assert [(type(e), e.symbol) for e in events] == [(Book, "ETH-USDT")]
    # BTC recovers from a new snapshot; the diff that revealed the gap is replayed from the buffer
    events, _ = h.call("on_rest", fetch.url, 200, snapshot(150, [(99, 9)], [(101, 1)]))
    assert [(e.snapshot, e.seq) for e in events] == [(True, 150), (False, 151)]
    assert h.consumer.violations == []
    assert h.adapter.counters["gaps"] == 1


def test_duplicate_and_stale_diffs_are_dropped_silently() -> None:
    h = synced_spot()
    before = len(h.events)
    h.call("on_frame", "c1", diff("BTCUSDT", 98, 101, bids=[(99, 1)]))
    assert len(h.events) == before
    assert h.adapter.counters["stale_diffs"] == 1


def test_snapshot_failures_are_reported_and_retried_with_growing_delay() -> None:
    h = started_spot()
    _, (fetch,) = h.call("on_frame", "c1", diff("BTCUSDT", 98, 101))
    events, (retry,) = h.call("on_rest", fetch.url, 500, "<html>oops</html>")
    assert events[0].state == "error" and "HTTP 500" in events[0].reason and events[0].symbol == "BTC-USDT"
    events, (retry2,) = h.call("on_rest", retry.url, 0, "")
    assert "no response" in events[0].reason
    assert 0 < retry.delay < retry2.delay
    events, _ = h.call("on_rest", retry.url, 200, "{not json")
    assert "unreadable" in events[0].reason
    assert h.adapter.counters["snapshot_failures"] == 3


def test_snapshot_too_old_is_fetched_again() -> None:
    h = started_spot()
    _, (fetch,) = h.call("on_frame", "c1", diff("BTCUSDT", 200, 201))
    events, (again,) = h.call("on_rest", fetch.url, 200, snapshot(100, [(99, 1)], [(101, 1)]))
    assert events == [] and again.delay > 0
    events, _ = h.call("on_rest", fetch.url, 200, snapshot(200, [(99, 1)], [(101, 1)]))
    assert [(e.snapshot, e.seq) for e in events] == [(True, 200), (False, 201)]


def test_bad_frames_are_counted_never_raised() -> None:
    h = synced_spot()
    for bad in ['{"stream":"btcusdt@trade","data":', "not json", '{"hello":"world"}',
                frame("btcusdt@kline_1m", {"e": "kline"}), frame("dogeusdt@trade", {"e": "trade"})]:
        h.call("on_frame", "c1", bad)
    c = h.adapter.counters
    assert (c["malformed"], c["unknown_message"], c["ignored_stream"], c["unknown_symbol"]) == (2, 1, 1, 1)
    # a diff we cannot read on a live book invalidates it: it may have been the one that mattered
    events, _ = h.call("on_frame", "c1", frame("btcusdt@depth@100ms", {"e": "depthUpdate", "U": "x"}))
    assert [(e.symbol, e.state) for e in events if e.symbol] == [("BTC-USDT", "book_invalid")]


def test_trades_have_taker_side_and_are_deduplicated() -> None:
    h = started_spot()
    t = {"e": "trade", "E": 1, "s": "BTCUSDT", "t": 7, "p": "61800.30", "q": "0.00000015", "T": 1723161256322, "m": True}
    events, _ = h.call("on_frame", "c1", frame("btcusdt@trade", t))
    (trade,) = events
    assert trade == Trade("binance", "BTC-USDT", h.ts, 1723161256322000000, "7", 61800.3, 1.5e-07, "sell")
    events, _ = h.call("on_frame", "c2", frame("btcusdt@trade", t))  # the same trade on a second connection
    assert events == [] and h.adapter.counters["duplicate_trades"] == 1


def test_disconnect_invalidates_that_connections_books() -> None:
    h = synced_spot()
    events, _ = h.call("on_close", "c1", 1006, None)
    assert [(e.symbol, e.state) for e in events] == [
        (None, "disconnected"), ("BTC-USDT", "book_invalid"), ("ETH-USDT", "book_invalid")]
    events, _ = h.call("on_close", "c9", None, "stale: no data for 30.0 s")  # unknown conn: nothing
    assert events == []


def test_stale_close_reports_stale_then_disconnected() -> None:
    h = synced_spot()
    events, _ = h.call("on_close", "c1", None, "stale: no data for 30.0 s")
    assert [e.state for e in events[:2]] == ["stale", "disconnected"]


def test_server_shutdown_replaces_the_connection_before_closing_it() -> None:
    h = synced_spot()
    _, (connect,) = h.call("on_frame", "c1", frame("!serverShutdown", {"e": "serverShutdown", "E": 1}))
    assert connect.replaces == "c1" and connect.plan["replaces"] == "c1"
    _, sends = h.open("c2", connect)
    # until c2 is subscribed, c1 still owns the books; c2's diffs are ignored
    h.call("on_frame", "c2", diff("BTCUSDT", 102, 102, bids=[(99, 8)]))
    assert h.adapter.states["btcusdt"].owner == "c1"
    (acked,) = h.ack_all("c2", sends)
    assert acked[1] == [Disconnect("c1", "replaced by c2", final=True)]
    assert h.adapter.states["btcusdt"].owner == "c2"
    events, _ = h.call("on_close", "c1", 1000, "replaced by c2")
    assert [e.state for e in events] == ["disconnected"]  # no book lost
    events, _ = h.call("on_frame", "c2", diff("BTCUSDT", 102, 103, bids=[(99, 6)]))
    assert [(type(e), e.seq) for e in events] == [(Book, 103)]
    assert h.consumer.violations == []


def test_connections_are_rotated_before_the_24_hour_limit() -> None:
    h = synced_spot()
    h.adapter.on_tick(h.ts + MAX_CONNECTION_AGE - 10**9)
    assert h.adapter.take_commands() == []
    h.adapter.on_tick(h.ts + MAX_CONNECTION_AGE)
    (connect,) = h.adapter.take_commands()
    assert connect.replaces == "c1"
    h.adapter.on_tick(h.ts + MAX_CONNECTION_AGE + 10**9)
    assert h.adapter.take_commands() == []  # asked once


@pytest.mark.parametrize("nested", [False, True])
def test_rejected_subscription_is_an_error_status_per_symbol(nested: bool) -> None:
    h = Harness()
    _, (connect,) = h.start()
    _, (send,) = h.open("c1", connect)
    req = json.loads(send.data)["id"]
    error = {"code": 2, "msg": "Invalid request"}
    reply = {"error": error, "id": req} if nested else {**error, "id": req}
    events, _ = h.call("on_frame", "c1", json.dumps(reply))
    assert [(e.symbol, e.state) for e in events] == [("BTC-USDT", "error"), ("ETH-USDT", "error")]
    assert "code 2: Invalid request" in events[0].reason


def test_usdm_continuity_uses_pu() -> None:
    h = Harness("binance-usdm", symbols=["BTC-USDT-PERP"])
    _, (public, market) = h.start(USDM_INFO)
    _, sends = h.open("p1", public)
    h.ack_all("p1", sends)
    _, (fetch,) = h.call("on_frame", "p1", diff("BTCUSDT", 95, 105, bids=[(99, 1)], pu=90))
    assert fetch.url == "http://127.0.0.1:9/fapi/v1/depth?symbol=BTCUSDT&limit=1000" and fetch.weight == 20
    events, _ = h.call("on_rest", fetch.url, 200, snapshot(100, [(99, 2)], [(101, 1)]))
    assert [(e.snapshot, e.seq) for e in events] == [(True, 100), (False, 105)]
    events, _ = h.call("on_frame", "p1", diff("BTCUSDT", 110, 120, asks=[(102, 1)], pu=105))
    assert [e.seq for e in events] == [120]
    events, _ = h.call("on_frame", "p1", diff("BTCUSDT", 130, 140, asks=[(102, 2)], pu=125))
    assert [(e.state, e.reason) for e in events] == [("book_invalid", "gap: expected pu=120, got pu=125")]


def test_crossed_book_is_never_emitted() -> None:
    h = synced_spot()
    events, _ = h.call("on_frame", "c1", diff("BTCUSDT", 102, 102, bids=[(105, 1)]))  # bid above the ask
    assert [(type(e), e.state) for e in events] == [(Status, "book_invalid")]
    assert h.adapter.counters["crossed"] == 1


@pytest.mark.parametrize("cfg,match", [
    ({"depth": 6000}, "depth"),
    ({"book_interval_ms": 250}, "book_interval_ms"),
    ({"trade_stream": "trades"}, "trade_stream"),
])
def test_bad_venue_settings_are_refused(cfg: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        BinanceAdapter("binance", VenueConfig(symbols=["BTC-USDT"], **cfg))
