"""End to end over real sockets: the live runtime (VenueRunner) and the real Coinbase adapter against the
loopback Coinbase Advanced Trade server (marketfeed.simulate.coinbase), whose true book is the oracle.

Every wait is a poll with a deadline (``wait_until``); nothing sleeps and then asserts, nothing asserts on
how long something took. Intervals are short (book changes every 20 ms, heartbeats every 0.2 s, stale
after 1 s, backoff 50-200 ms) so the file runs in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from marketfeed.events import BOOK_INVALID, CONNECTED, DISCONNECTED, ERROR, STALE, SUBSCRIBED, Book, Status, Trade
from marketfeed.recorder import Recorder
from marketfeed.replay import replay_events
from marketfeed.simulate.coinbase import CoinbaseSimulator
from tests.integration.live import DEADLINE, LiveVenue, wait_until

pytestmark = pytest.mark.timeout(60)

SYMBOLS = ("BTC-USD", "ETH-USD")


@pytest.fixture
async def sim():
    server = CoinbaseSimulator(seed=11, interval=0.02, heartbeat_interval=0.2, trade_probability=0.5)
    await server.start()
    yield server
    await server.stop()


class Live(LiveVenue):
    """The Coinbase venue live against the loopback server."""

    def __init__(self, sim: CoinbaseSimulator, recorder: Recorder | None = None, **config: object) -> None:
        super().__init__("coinbase", SYMBOLS, sim.ws_url, sim.rest_url, recorder, tick_interval=0.1, **config)
        self.sim = sim

    def matches_truth(self, symbol: str) -> bool:
        book = self.books.books.get(("coinbase", symbol))
        if book is None or not self.valid(symbol):
            return False
        bids, asks = self.sim.true_book(symbol)
        return book.bids.levels == bids and book.asks.levels == asks

    async def synced_to_truth(self) -> None:
        """Freeze the server's books and wait until the consumer's books equal them on every level of
        both sides (the server sends every change to every subscriber, so they must converge)."""
        for symbol in SYMBOLS:
            await wait_until(lambda: self.valid(symbol), f"{symbol} has a valid book")
        self.sim.pause()
        try:
            for symbol in SYMBOLS:
                await wait_until(lambda: self.matches_truth(symbol), f"{symbol} consumer book equals the true book")
                assert not self.books.books[("coinbase", symbol)].crossed()
        finally:
            self.sim.resume()


async def test_subscribe_sync_equals_true_book(sim: CoinbaseSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth()
        await wait_until(lambda: {e.symbol for e in live.events if isinstance(e, Trade)} == set(SYMBOLS), "trades")
        await wait_until(lambda: sim.connections[0].heartbeat_counter >= 3, "heartbeats")
        assert {e.symbol for e in live.statuses(SUBSCRIBED)} == set(SYMBOLS)
    conn = sim.connections[0]
    sent = [json.loads(m) for m in conn.received]
    # one channel per subscribe message, heartbeats always, every product in each
    assert [m["channel"] for m in sent] == ["heartbeats", "level2", "market_trades"]
    assert all(m["type"] == "subscribe" for m in sent) and sent[1]["product_ids"] == list(SYMBOLS)
    assert sim.deadline_disconnects == 0 and len(sim.connections) == 1
    trades = [e for e in live.events if isinstance(e, Trade)]
    assert len({(t.symbol, t.trade_id) for t in trades}) == len(trades)
    assert all(t.side in ("buy", "sell") for t in trades)
    # the simulator's trades print at the inside on the taker's side: the adapter's tally agrees
    assert live.adapter.counters["trade_side_disagrees"] == 0
    assert live.books.violations == []
    assert [e.reason for e in live.statuses(DISCONNECTED)] == ["shutdown"]
    assert live.runner.reconnects == 0


async def test_gap_invalidates_every_book_and_reconnects(sim: CoinbaseSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth()
        mark = len(live.events)
        sim.drop_next_update()
        await wait_until(lambda: len(live.statuses(BOOK_INVALID, since=mark)) >= 2, "book_invalid for both books")
        invalid = live.statuses(BOOK_INVALID, since=mark)
        assert {e.symbol for e in invalid} == set(SYMBOLS)
        assert all(e.reason.startswith("gap: expected sequence_num=") for e in invalid[:2])
        await wait_until(lambda: len(sim.connections) == 2, "a new connection")
        await live.synced_to_truth()
        assert live.adapter.counters["gaps"] == 1
    assert sim.connections[0].close_reason is None  # the client closed it, not the server
    assert live.books.violations == []


async def test_duplicate_is_dropped_without_resync(sim: CoinbaseSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth()
        sim.duplicate_next_update()
        await wait_until(lambda: live.adapter.counters["duplicates"] == 1, "the duplicate seen")
        await live.synced_to_truth()
        assert live.statuses(BOOK_INVALID) == [] and len(sim.connections) == 1
    assert live.books.violations == []


async def test_malformed_frame_is_counted_and_its_lost_number_resyncs(sim: CoinbaseSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth()
        mark = len(live.events)
        sim.send_malformed()
        await wait_until(lambda: len(live.statuses(BOOK_INVALID, since=mark)) >= 2, "book_invalid for both books")
        assert live.adapter.counters["malformed"] == 1
        await wait_until(lambda: len(sim.connections) == 2, "a new connection")
        await live.synced_to_truth()
    assert live.books.violations == []


async def test_killed_socket_reconnects_and_resyncs(sim: CoinbaseSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth()
        await wait_until(lambda: any(isinstance(e, Trade) for e in live.events), "a trade before the kill")
        trades_before = {(e.symbol, e.trade_id) for e in live.events if isinstance(e, Trade)}
        mark = len(live.events)
        assert sim.kill_connections() == 1
        await wait_until(lambda: live.statuses(DISCONNECTED, since=mark), "disconnected")
        await wait_until(lambda: len(live.statuses(BOOK_INVALID, since=mark)) >= 2, "book_invalid for both books")
        await wait_until(lambda: len(sim.connections) == 2, "a new connection")
        await live.synced_to_truth()
        assert live.runner.reconnects == 1 and len(live.statuses(CONNECTED)) == 2
        # the new connection's market_trades snapshot repeats trades we published: none come out twice
        await wait_until(lambda: live.adapter.counters["duplicate_trades"] > 0, "the reconnect trade snapshot")
    trades = [(e.symbol, e.trade_id) for e in live.events if isinstance(e, Trade)]
    assert len(set(trades)) == len(trades) and trades_before <= set(trades)
    assert live.books.violations == []


async def test_silent_socket_goes_stale_and_reconnects(sim: CoinbaseSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth()
        mark = len(live.events)
        assert len(sim.stall()) == 1
        await wait_until(lambda: live.statuses(STALE, since=mark), "stale")
        assert live.statuses(STALE, since=mark)[0].reason.startswith("stale")
        assert {e.symbol for e in live.statuses(BOOK_INVALID, since=mark)} == set(SYMBOLS)
        await wait_until(lambda: len(sim.connections) == 2, "a new connection")
        await live.synced_to_truth()
    assert live.books.violations == []


async def test_missing_heartbeats_are_stale_even_while_data_flows(sim: CoinbaseSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth()
        mark = len(live.events)
        sim.stop_heartbeats()
        await wait_until(lambda: live.statuses(STALE, since=mark), "stale")
        assert live.statuses(STALE, since=mark)[0].reason.startswith("stale: no heartbeat")
        sim.stop_heartbeats(False)
        await wait_until(lambda: len(sim.connections) == 2, "a new connection")
        await live.synced_to_truth()
        assert live.adapter.counters["stale"] == 1
    assert live.books.violations == []


async def test_rejected_subscription_is_reported(sim: CoinbaseSimulator) -> None:
    sim.reject_next_subscription("level2")
    async with Live(sim) as live:
        await wait_until(lambda: live.statuses(ERROR), "an error status")
        assert "level2 rejected" in live.statuses(ERROR)[0].reason
        await wait_until(lambda: any(isinstance(e, Trade) for e in live.events), "trades still flow")
        assert not any(isinstance(e, Book) for e in live.events)  # no level2, so no book
    assert live.adapter.counters["venue_errors"] == 1


async def test_server_closes_a_connection_that_does_not_subscribe(sim: CoinbaseSimulator) -> None:
    sim.subscribe_deadline = 0.2
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url) as ws:
        msg = await ws.receive(timeout=DEADLINE)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING)
    assert sim.deadline_disconnects == 1


async def test_recorded_live_run_replays_to_the_same_events(sim: CoinbaseSimulator, tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, ["coinbase"], rotate_mb=None, rotate_minutes=None, gzip=True)
    try:
        async with Live(sim, recorder=recorder) as live:
            await live.synced_to_truth()
            await wait_until(lambda: sum(isinstance(e, Trade) for e in live.events) >= 5
                             and sum(isinstance(e, Book) for e in live.events) >= 20, "some trades and book updates")
            sim.drop_next_update()
            await wait_until(lambda: len(sim.connections) == 2, "a new connection after the gap")
            await live.synced_to_truth()
            sim.kill_connections()
            await wait_until(lambda: len(sim.connections) == 3, "a new connection after the kill")
            await live.synced_to_truth()
    finally:
        recorder.close()
    replayed = list(replay_events(recorder.files))
    assert sum(isinstance(e, Book) for e in live.events) > 20
    assert any(isinstance(e, Status) and e.state == BOOK_INVALID and e.reason.startswith("gap") for e in live.events)
    assert replayed == live.events
