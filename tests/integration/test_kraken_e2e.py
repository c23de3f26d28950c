"""End to end over real sockets: the live runtime (VenueRunner) and the Kraken adapter against the
loopback Kraken server (marketfeed.simulate.kraken), whose true book is the oracle.

Every wait is a poll with a deadline; nothing sleeps and then asserts. Intervals are short (book
messages every 20 ms, heartbeats every 0.2 s, stale after 1 s, backoff 50-200 ms).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marketfeed.adapters.kraken.checksum import checksum_of_book
from marketfeed.events import BOOK_INVALID, CONNECTED, DISCONNECTED, ERROR, STALE, SUBSCRIBED, Book, Trade
from marketfeed.recorder import Recorder
from marketfeed.replay import replay_events
from marketfeed.simulate.kraken import KrakenSimulator
from tests.integration.live import LiveVenue, wait_until

pytestmark = pytest.mark.timeout(60)

NATIVE = {"BTC-USD": "BTC/USD", "ETH-USD": "ETH/USD", "DOGE-USD": "DOGE/USD"}


@pytest.fixture
async def sim():
    server = KrakenSimulator(seed=7, interval=0.02, heartbeat_interval=0.2, trade_probability=0.3)
    await server.start()
    yield server
    await server.stop()


class Live(LiveVenue):
    """The Kraken venue live against the loopback server; every book event's checksum is recomputed
    from the consumer's book, and the frames handed to the adapter are counted per connection."""

    def __init__(self, sim: KrakenSimulator, symbols=("BTC-USD", "ETH-USD"), depth: int = 25,
                 recorder: Recorder | None = None, **config: object) -> None:
        super().__init__("kraken", symbols, sim.ws_url, sim.rest_url, recorder, depth=depth, **config)
        self.sim = sim
        self.depth = depth
        self.last_checksum: dict[str, int | None] = {}
        self.checksum_errors: list[str] = []
        self.frames: dict[str, int] = {}  # frames handed to the adapter, per connection
        on_frame = self.adapter.on_frame

        def counting_on_frame(conn: str, ts: int, data: str | bytes) -> None:
            self.frames[conn] = self.frames.get(conn, 0) + 1
            on_frame(conn, ts, data)

        self.adapter.on_frame = counting_on_frame  # type: ignore[method-assign]

    def on_book(self, event: Book, book: object) -> None:
        self.last_checksum[event.symbol] = event.checksum
        spec = self.sim.specs[NATIVE[event.symbol]]
        # the consumer's own book gives the checksum the venue sent, on every message
        if book is not None and checksum_of_book(book, spec.price_precision, spec.qty_precision) != event.checksum:
            self.checksum_errors.append(f"{event.symbol} {event.checksum}")

    def all_frames_read(self) -> bool:
        """Every frame the server sent on its open connection has been handed to the adapter."""
        conns = self.sim.open_connections()
        links = [c for c in self.runner.connections() if c["state"] == "open"]
        return (len(conns) == 1 and len(links) == 1
                and self.frames.get(links[0]["conn"], 0) == conns[0].frames_sent)

    async def synced_to_truth(self, symbol: str) -> None:
        """Freeze the server, wait until every frame it sent has been read, then compare every level of
        the subscribed depth on both sides, and the checksum of our last event with the true one.
        (The checksum alone would not do: messages that change only levels behind the top 10 carry
        the same checksum.)"""
        native = NATIVE[symbol]
        await wait_until(lambda: self.valid(symbol), f"{symbol} has a valid book")
        self.sim.pause()
        try:
            checksum, bids, asks = self.sim.true_view(native, self.depth)
            await wait_until(self.all_frames_read, "every frame read")
            assert self.valid(symbol) and self.last_checksum.get(symbol) == checksum
            book = self.books.books[("kraken", symbol)]
            assert book.bids.levels == bids
            assert book.asks.levels == asks
        finally:
            self.sim.resume()


def book_requests(sim: KrakenSimulator, conn_index: int = 0) -> list[tuple[str, list[str], int | None, bool | None]]:
    out = []
    for req in sim.connections[conn_index].requests("subscribe", "book") + sim.connections[conn_index].requests("unsubscribe", "book"):
        p = req["params"]
        out.append((req["method"], p["symbol"], p.get("depth"), p.get("snapshot")))
    return out


async def test_connect_subscribe_sync_equals_true_book(sim: KrakenSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth("BTC-USD")
        await live.synced_to_truth("ETH-USD")
        await wait_until(lambda: any(isinstance(e, Trade) for e in live.events), "a trade")
        sim.pause()  # a quiet book: the server sends heartbeats instead
        await wait_until(lambda: live.adapter.counters["heartbeats"] >= 2, "heartbeats")
        sim.resume()
    assert len(sim.connections) == 1
    conn = sim.connections[0]
    assert conn.instrument  # the instrument channel's precision cross-checks AssetPairs
    assert live.adapter.counters["precision_mismatch"] == 0
    assert book_requests(sim) == [("subscribe", ["BTC/USD", "ETH/USD"], 25, True)]
    trade_sub = conn.requests("subscribe", "trade")[0]["params"]
    assert trade_sub == {"channel": "trade", "symbol": ["BTC/USD", "ETH/USD"], "snapshot": True}
    assert {(e.symbol, e.reason) for e in live.statuses(SUBSCRIBED)} == {
        ("BTC-USD", "book depth 25"), ("ETH-USD", "book depth 25"), ("BTC-USD", "trade"), ("ETH-USD", "trade")}
    assert live.books.violations == [] and live.checksum_errors == []
    assert [e.reason for e in live.statuses(DISCONNECTED)] == ["shutdown"]
    assert {(e.symbol, e.reason) for e in live.statuses(BOOK_INVALID)} == {
        ("BTC-USD", "disconnected: shutdown"), ("ETH-USD", "disconnected: shutdown")}
    trades = [e for e in live.events if isinstance(e, Trade)]
    assert len({(t.symbol, t.trade_id) for t in trades}) == len(trades)
    assert live.adapter.counters["checksum_failures"] == 0


@pytest.mark.parametrize("fault", ["gap", "corrupt"])
async def test_gap_or_bad_checksum_resyncs_that_symbol_only(sim: KrakenSimulator, fault: str) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth("BTC-USD")
        await live.synced_to_truth("ETH-USD")
        mark = len(live.events)
        if fault == "gap":
            sim.drop_next_update("BTC/USD")
        else:
            sim.corrupt_next_checksum("BTC/USD")
        await wait_until(lambda: live.statuses(BOOK_INVALID, "BTC-USD", mark), "book_invalid for BTC-USD")
        [invalid] = live.statuses(BOOK_INVALID, "BTC-USD", mark)
        assert invalid.reason.startswith("checksum mismatch")
        await live.synced_to_truth("BTC-USD")
        await live.synced_to_truth("ETH-USD")
        # only BTC was resubscribed: unsubscribe at the same depth, then subscribe with a snapshot
        assert book_requests(sim) == [("subscribe", ["BTC/USD", "ETH/USD"], 25, True),
                                      ("subscribe", ["BTC/USD"], 25, True),
                                      ("unsubscribe", ["BTC/USD"], 25, None)]
        unsub_at = next(i for i, t in enumerate(sim.connections[0].received) if '"unsubscribe"' in t)
        resub_at = max(i for i, t in enumerate(sim.connections[0].received) if '"subscribe"' in t and '"book"' in t)
        assert unsub_at < resub_at
        assert live.statuses(BOOK_INVALID, "ETH-USD") == []
        eth_after = [e for e in live.events[mark:] if isinstance(e, Book) and e.symbol == "ETH-USD"]
        assert eth_after and not any(e.snapshot for e in eth_after)
    assert len(sim.connections) == 1  # recovery is per symbol: the socket stayed
    assert live.books.violations == [] and live.checksum_errors == []
    assert live.adapter.counters["checksum_failures"] == 1


async def test_server_kills_socket_reconnect_and_resync(sim: KrakenSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth("BTC-USD")
        mark = len(live.events)
        assert sim.kill_connections() == 1
        await wait_until(lambda: live.statuses(DISCONNECTED, since=mark), "disconnected")
        await wait_until(lambda: live.statuses(BOOK_INVALID, "BTC-USD", mark)
                         and live.statuses(BOOK_INVALID, "ETH-USD", mark), "book_invalid for every symbol")
        await wait_until(lambda: len(sim.open_connections()) == 1 and len(sim.connections) == 2, "a new connection")
        await live.synced_to_truth("BTC-USD")
        await live.synced_to_truth("ETH-USD")
        assert live.runner.reconnects == 1
        assert len(live.statuses(CONNECTED)) == 2
    assert book_requests(sim, 1) == book_requests(sim, 0)
    assert live.books.violations == [] and live.checksum_errors == []


async def test_silent_socket_goes_stale_and_reconnects(sim: KrakenSimulator) -> None:
    async with Live(sim, stale_after=0.5) as live:
        await live.synced_to_truth("BTC-USD")
        mark = len(live.events)
        assert len(sim.stall()) == 1
        await wait_until(lambda: live.statuses(STALE, since=mark), "stale")
        disconnected = live.statuses(DISCONNECTED, since=mark)
        assert disconnected and disconnected[0].reason.startswith("stale")
        assert live.statuses(BOOK_INVALID, "BTC-USD", mark) and live.statuses(BOOK_INVALID, "ETH-USD", mark)
        await wait_until(lambda: len(sim.connections) == 2, "a new connection")
        await live.synced_to_truth("BTC-USD")
        await live.synced_to_truth("ETH-USD")
    assert live.books.violations == [] and live.checksum_errors == []


async def test_rejected_subscription_is_an_error_status(sim: KrakenSimulator) -> None:
    sim.reject("DOGE/USD")
    async with Live(sim, symbols=("BTC-USD", "DOGE-USD")) as live:
        await wait_until(lambda: live.statuses(ERROR, "DOGE-USD"), "error for DOGE-USD")
        errors = live.statuses(ERROR, "DOGE-USD")
        assert errors[0].reason.startswith("subscription rejected (")
        await live.synced_to_truth("BTC-USD")
        assert not live.valid("DOGE-USD")
    assert live.books.violations == []


async def test_idle_connection_gets_an_application_ping(sim: KrakenSimulator) -> None:
    # a quiet connection (no trades, no heartbeat yet) hears nothing: the adapter pings it, and the
    # pong keeps it from going stale
    sim.heartbeat_interval = 60.0
    sim.trade_probability = 0.0
    async with Live(sim, symbols=("BTC-USD",), channels=["trades"], stale_after=3.0) as live:
        live.adapter.ping_after_silence = 0.5  # type: ignore[attr-defined]
        live.adapter.ping_interval = 0.5  # type: ignore[attr-defined]
        await wait_until(lambda: live.adapter.counters["pongs"] >= 3, "pings answered")
    assert len(sim.connections[0].requests("ping")) >= 3
    assert live.statuses(STALE) == [] and live.runner.reconnects == 0


async def test_recorded_live_run_replays_to_the_same_events(sim: KrakenSimulator, tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, ["kraken"], rotate_mb=None, rotate_minutes=None, gzip=True)
    try:
        async with Live(sim, recorder=recorder) as live:
            await live.synced_to_truth("BTC-USD")
            await wait_until(lambda: len(live.events) > 150, "150 events")
            sim.corrupt_next_checksum("ETH/USD")
            await wait_until(lambda: live.statuses(BOOK_INVALID, "ETH-USD"), "book_invalid for ETH-USD")
            await live.synced_to_truth("ETH-USD")
            sim.kill_connections()
            await wait_until(lambda: len(sim.connections) == 2, "a new connection")
            await live.synced_to_truth("BTC-USD")
    finally:
        recorder.close()
    replayed = list(replay_events(recorder.files))
    assert replayed == live.events
    # the capture holds the AssetPairs response the precision came from
    assert any(json.loads(line).get("ev") == "rest" for line in __import__("gzip").open(recorder.files[0]))
