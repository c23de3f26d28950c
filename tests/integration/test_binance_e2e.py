"""End to end over real sockets: the live runtime (VenueRunner) and the real Binance adapter against the
loopback Binance server (marketfeed.simulate.binance), whose true book is the oracle.

Every wait is a poll with a deadline (``wait_until``); nothing sleeps and then asserts, nothing asserts
on how long something took. Intervals are short (diffs every 20 ms, pings every 0.3 s, stale after
1 s, backoff 50-200 ms) so the whole file runs in a few seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from marketfeed.capture import Rest, read_capture
from marketfeed.config import Config
from marketfeed.events import BOOK_INVALID, CONNECTED, DISCONNECTED, ERROR, STALE, Book, Status, Trade
from marketfeed.recorder import Recorder
from marketfeed.replay import replay_events
from marketfeed.simulate.binance import SPOT, USDM, BinanceSimulator, SymbolSpec
from tests.integration.live import LiveVenue, wait_until

pytestmark = pytest.mark.timeout(60)

@pytest.fixture
async def sim():
    server = BinanceSimulator(seed=7, interval=0.02, ping_interval=0.3, trade_probability=0.5)
    await server.start()
    yield server
    await server.stop()


class Live(LiveVenue):
    """The Binance venue live against the loopback server."""

    def __init__(
        self,
        sim: BinanceSimulator,
        venue: str = "binance",
        symbols: tuple[str, ...] = ("BTC-USDT", "ETH-USDT"),
        recorder: Recorder | None = None,
        fetch_timeout: float = 2.0,
        **config: object,
    ) -> None:
        super().__init__(venue, symbols, sim.ws_url, sim.rest_url, recorder, fetch_timeout, **config)
        self.sim = sim
        self.market = SPOT if venue == "binance" else USDM

    async def synced_to_truth(self, symbol: str, native: str) -> None:
        """Freeze the server's book, wait until the consumer's book reaches its update id, and compare
        every level on both sides."""
        await wait_until(lambda: self.valid(symbol), f"{symbol} has a valid book")
        self.sim.pause(self.market)
        try:
            update_id, bids, asks = self.sim.true_book(native, self.market)
            await wait_until(
                lambda: self.valid(symbol) and self.seq.get(symbol) == update_id,
                f"{symbol} consumer book at update id {update_id}",
            )
            book = self.books.books[(self.venue, symbol)]
            assert book.bids.levels == bids
            assert book.asks.levels == asks
            assert not book.crossed()
        finally:
            self.sim.resume(self.market)


async def test_connect_subscribe_sync_equals_true_book(sim: BinanceSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth("BTC-USDT", "BTCUSDT")
        await live.synced_to_truth("ETH-USDT", "ETHUSDT")
        await wait_until(lambda: any(isinstance(e, Trade) for e in live.events), "a trade")
        # the server pings every 0.3 s; aiohttp's autoping answers each one
        await wait_until(lambda: sim.connections[0].pongs_received >= 2, "two pongs answered")
    assert len(sim.connections) == 1
    conn = sim.connections[0]
    assert conn.route == "stream"
    assert conn.subscriptions == {"btcusdt@depth@100ms", "ethusdt@depth@100ms", "btcusdt@trade", "ethusdt@trade"}
    assert sim.rate_limit_disconnects == 0
    assert live.books.violations == []
    # orderly shutdown: the adapter saw the close, said so, and invalidated the books
    assert [e.reason for e in live.statuses(DISCONNECTED)] == ["shutdown"]
    assert {(e.symbol, e.reason) for e in live.statuses(BOOK_INVALID)} == {
        ("BTC-USDT", "disconnected: shutdown"), ("ETH-USDT", "disconnected: shutdown")
    }
    assert live.runner.reconnects == 0
    assert live.runner.connections()[0]["state"] == "closed"


async def test_dropped_diff_resyncs_that_symbol_only(sim: BinanceSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth("BTC-USDT", "BTCUSDT")
        await live.synced_to_truth("ETH-USDT", "ETHUSDT")
        mark = len(live.events)
        snapshots_before = len(sim.depth_requests(SPOT, "BTCUSDT"))
        sim.drop_next_diff("BTCUSDT")
        await wait_until(lambda: live.statuses(BOOK_INVALID, "BTC-USDT", mark), "book_invalid for BTC-USDT")
        invalid = live.statuses(BOOK_INVALID, "BTC-USDT", mark)
        assert len(invalid) == 1 and invalid[0].reason.startswith("gap")
        await live.synced_to_truth("BTC-USDT", "BTCUSDT")
        # the other symbol on the same connection kept flowing, never invalidated
        assert live.statuses(BOOK_INVALID, "ETH-USDT") == []
        eth_after = [e for e in live.events[mark:] if isinstance(e, Book) and e.symbol == "ETH-USDT"]
        assert eth_after and not any(e.snapshot for e in eth_after)
        await live.synced_to_truth("ETH-USDT", "ETHUSDT")
    assert len(sim.depth_requests(SPOT, "BTCUSDT")) == snapshots_before + 1
    assert len(sim.connections) == 1  # recovery is per symbol: the socket stayed
    assert live.books.violations == []


async def test_server_kills_socket_reconnect_and_resync(sim: BinanceSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth("BTC-USDT", "BTCUSDT")
        await live.synced_to_truth("ETH-USDT", "ETHUSDT")
        mark = len(live.events)
        assert sim.kill_connections(SPOT) == 1
        await wait_until(lambda: live.statuses(DISCONNECTED, since=mark), "disconnected")
        await wait_until(
            lambda: live.statuses(BOOK_INVALID, "BTC-USDT", mark) and live.statuses(BOOK_INVALID, "ETH-USDT", mark),
            "book_invalid for every symbol",
        )
        await wait_until(lambda: len(sim.open_connections(SPOT)) == 1 and len(sim.connections) == 2, "a new connection")
        await live.synced_to_truth("BTC-USDT", "BTCUSDT")
        await live.synced_to_truth("ETH-USDT", "ETHUSDT")
        assert live.runner.reconnects == 1
        assert len(live.statuses(CONNECTED)) == 2
    assert sim.connections[1].subscriptions == sim.connections[0].subscriptions
    assert live.books.violations == []


async def test_silent_socket_goes_stale_and_reconnects(sim: BinanceSimulator) -> None:
    async with Live(sim, stale_after=0.5) as live:
        await live.synced_to_truth("BTC-USDT", "BTCUSDT")
        mark = len(live.events)
        assert len(sim.stall(SPOT)) == 1
        await wait_until(lambda: live.statuses(STALE, since=mark), "stale")
        stale = live.statuses(STALE, since=mark)[0]
        assert stale.reason == "stale: no data for 0.5 s"
        disconnected = live.statuses(DISCONNECTED, since=mark)
        assert disconnected and disconnected[0].reason.startswith("stale")
        await wait_until(lambda: len(sim.connections) == 2, "a new connection")
        await live.synced_to_truth("BTC-USDT", "BTCUSDT")
        await live.synced_to_truth("ETH-USDT", "ETHUSDT")
        assert live.runner.counters["stale"] == 1
    assert live.books.violations == []


async def test_snapshot_errors_are_reported_and_retried_with_retry_after(sim: BinanceSimulator) -> None:
    # the first depth request fails with 500, the second with 429 and Retry-After: 1
    sim.fail_depth(500, count=1)
    sim.fail_depth(429, count=1, retry_after=1)
    async with Live(sim) as live:
        await live.synced_to_truth("BTC-USDT", "BTCUSDT")
        await live.synced_to_truth("ETH-USDT", "ETHUSDT")
        errors = [e for e in live.statuses(ERROR) if e.reason and e.reason.startswith("snapshot failed")]
        assert {e.reason.split(":")[1].strip() for e in errors} == {"HTTP 500", "HTTP 429"}
        assert {e.symbol for e in errors} == {"BTC-USDT", "ETH-USDT"}
        assert live.runner.counters["rest_429"] == 1
    hits = sim.depth_requests(SPOT)
    limited = next(h for h in hits if h.status == 429)
    later = [h for h in hits if h.at > limited.at]
    assert later, "the snapshot was requested again"
    # no request reached the server before Retry-After had passed
    assert min(h.at for h in later) >= limited.at + 1.0
    assert live.books.violations == []


async def test_snapshot_timeout_is_reported_and_retried(sim: BinanceSimulator) -> None:
    sim.slow_depth(1.0, count=1)  # longer than the runner's fetch timeout
    async with Live(sim, symbols=("BTC-USDT",), fetch_timeout=0.3) as live:
        await live.synced_to_truth("BTC-USDT", "BTCUSDT")
        errors = [e for e in live.statuses(ERROR, "BTC-USDT") if e.reason and "no response" in e.reason]
        assert len(errors) == 1
        assert live.runner.counters["rest_errors"] == 1
    assert live.books.violations == []


async def test_usdm_depth_on_public_trades_on_market(sim: BinanceSimulator) -> None:
    async with Live(sim, venue="binance-usdm", symbols=("BTC-USDT-PERP", "ETH-USDT-PERP")) as live:
        await live.synced_to_truth("BTC-USDT-PERP", "BTCUSDT")
        await live.synced_to_truth("ETH-USDT-PERP", "ETHUSDT")
        await wait_until(
            lambda: {e.symbol for e in live.events if isinstance(e, Trade)} == {"BTC-USDT-PERP", "ETH-USDT-PERP"},
            "trades for both symbols",
        )
        # a USD-M gap is found by pu and recovered per symbol too
        mark = len(live.events)
        sim.drop_next_diff("ETHUSDT", USDM)
        await wait_until(lambda: live.statuses(BOOK_INVALID, "ETH-USDT-PERP", mark), "book_invalid for ETH-USDT-PERP")
        await live.synced_to_truth("ETH-USDT-PERP", "ETHUSDT")
        assert live.statuses(BOOK_INVALID, "BTC-USDT-PERP") == []
    routes = {c.route: c.subscriptions for c in sim.connections}
    assert routes == {
        "public/stream": {"btcusdt@depth@100ms", "ethusdt@depth@100ms"},
        "market/stream": {"btcusdt@aggTrade", "ethusdt@aggTrade"},
    }
    assert all(h.path == "/fapi/v1/depth" for h in sim.depth_requests(USDM))
    assert sim.depth_requests(SPOT) == []
    assert live.books.violations == []


async def test_server_shutdown_hands_over_without_invalidating(sim: BinanceSimulator) -> None:
    async with Live(sim) as live:
        await live.synced_to_truth("BTC-USDT", "BTCUSDT")
        await live.synced_to_truth("ETH-USDT", "ETHUSDT")
        assert await sim.server_shutdown(SPOT) == 1
        # make before break: a second connection subscribes, takes the books over, the first is closed
        await wait_until(lambda: len(sim.connections) == 2 and sim.connections[0].closed, "the old connection closed")
        await live.synced_to_truth("BTC-USDT", "BTCUSDT")
        await live.synced_to_truth("ETH-USDT", "ETHUSDT")
        assert live.statuses(BOOK_INVALID) == []
        assert [c["state"] for c in live.runner.connections()] == ["closed", "open"]
        assert live.runner.reconnects == 0  # the replaced connection is not reconnected
    assert live.books.violations == []


async def test_recorded_live_run_replays_to_the_same_events(sim: BinanceSimulator, tmp_path: Path) -> None:
    recorder = Recorder(tmp_path, ["binance"], rotate_mb=None, rotate_minutes=None, gzip=True)
    sim.fail_depth(500, count=1)  # an error answer in the recording
    sim.slow_depth(1.0, count=1)  # and no answer at all (status 0, a timeout)
    try:
        async with Live(sim, recorder=recorder, stale_after=0.5, fetch_timeout=0.3) as live:
            await live.synced_to_truth("BTC-USDT", "BTCUSDT")
            await wait_until(lambda: len(live.events) > 150, "150 events")
            sim.drop_next_diff("ETHUSDT")
            await wait_until(lambda: live.statuses(BOOK_INVALID, "ETH-USDT"), "book_invalid for ETH-USDT")
            await live.synced_to_truth("ETH-USDT", "ETHUSDT")
            recorder.rotate()  # the rest goes to a second file that continues the first
            sim.kill_connections(SPOT)
            await wait_until(lambda: len(sim.connections) == 2, "a new connection")
            await live.synced_to_truth("BTC-USDT", "BTCUSDT")
            sim.stall(SPOT)
            await wait_until(lambda: len(sim.connections) == 3, "a new connection after stale")
            await live.synced_to_truth("BTC-USDT", "BTCUSDT")
            await live.synced_to_truth("ETH-USDT", "ETHUSDT")
    finally:
        recorder.close()
    files = sorted(tmp_path.glob("*.capture.jsonl.gz"))
    assert files == recorder.files and len(files) == 2
    rests = [r for f in files for r in read_capture(f)[1] if isinstance(r, Rest)]
    assert {(r.status, r.error) for r in rests} >= {(500, None), (0, "timeout"), (200, None)}
    states = {e.state for e in live.events if isinstance(e, Status)}
    assert {ERROR, STALE, DISCONNECTED, BOOK_INVALID} <= states
    replayed = list(replay_events(files))
    assert len(replayed) == len(live.events)
    assert replayed == live.events


async def test_mass_resync_is_paced_by_the_weight_budget() -> None:
    """Four symbols needing snapshots at once (as after a reconnect) on a budget of 1200 weight a
    minute (20/s, a burst of 200): exchangeInfo (20) and three snapshots (50 each) go at once, the
    fourth waits for the refill. On the server's own log, no stretch of time saw more weight than the
    bucket allows. (A second round after a kill would take 10 s of refill: the unit tests of
    WeightBudget cover the steady state.)"""
    specs = [
        SymbolSpec("BTCUSDT", "BTC", "USDT", "0.01", "0.00001", 60000.0, levels=100, mean_lots=20000),
        SymbolSpec("ETHUSDT", "ETH", "USDT", "0.01", "0.0001", 3000.0, levels=100, mean_lots=5000),
        SymbolSpec("SOLUSDT", "SOL", "USDT", "0.01", "0.001", 150.0, levels=100, mean_lots=5000),
        SymbolSpec("BNBUSDT", "BNB", "USDT", "0.1", "0.001", 600.0, levels=100, mean_lots=2000),
    ]
    sim = BinanceSimulator(spot=specs, seed=11, interval=0.02, ping_interval=5.0)
    await sim.start()
    symbols = ("BTC-USDT", "ETH-USDT", "SOL-USDT", "BNB-USDT")
    try:
        async with Live(sim, symbols=symbols, snapshot_weight_per_minute=1200) as live:
            for s in symbols:
                await wait_until(lambda s=s: live.valid(s), f"{s} synced")
            await live.synced_to_truth("BNB-USDT", "BNBUSDT")
            assert live.runner.budget.spent == 20 + 4 * 50
    finally:
        await sim.stop()
    hits = sim.rest_log
    assert [h.weight for h in hits] == [20] + [50] * 4
    first_four = [h.at for h in hits[1:5]]
    assert max(first_four) - min(first_four) >= 0.9  # the fourth snapshot waited for the refill
    # the token-bucket bound, checked on arrival times (50 ms of slack for the loopback's jitter)
    rate, burst, slack = 20.0, 200.0, 0.05
    for i, start in enumerate(hits):
        window = 0
        for h in hits[i:]:
            window += h.weight
            assert window <= burst + rate * (h.at - start.at + slack), "more weight than the budget allows"
    assert live.books.violations == []


async def record_a_hand_over(sim: BinanceSimulator, tmp_path: Path) -> tuple[Live, list[Path]]:
    """A recorded live run in which ``serverShutdown`` makes the adapter replace its connection
    (make before break: the books pass to the new connection, nothing is invalidated)."""
    recorder = Recorder(tmp_path, ["binance"], rotate_mb=None, rotate_minutes=None)
    try:
        async with Live(sim, recorder=recorder) as live:
            await live.synced_to_truth("BTC-USDT", "BTCUSDT")
            await live.synced_to_truth("ETH-USDT", "ETHUSDT")
            await sim.server_shutdown(SPOT)
            await wait_until(lambda: len(sim.connections) == 2 and sim.connections[0].closed, "the hand-over")
            await live.synced_to_truth("BTC-USDT", "BTCUSDT")
            assert live.statuses(BOOK_INVALID) == []
    finally:
        recorder.close()
    return live, recorder.files


async def test_recorded_hand_over_replays_to_the_same_events_with_the_config(sim: BinanceSimulator, tmp_path: Path) -> None:
    live, files = await record_a_hand_over(sim, tmp_path)
    assert list(replay_events(files, Config(venues={"binance": live.config}))) == live.events


async def test_recorded_hand_over_replays_to_the_same_events_without_a_config(sim: BinanceSimulator, tmp_path: Path) -> None:
    live, files = await record_a_hand_over(sim, tmp_path)
    assert list(replay_events(files)) == live.events
