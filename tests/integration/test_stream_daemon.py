"""The stream end to end: the daemon (in process) against the loopback Binance simulator, and the real
``marketfeed.client`` over real sockets. The simulator's true book is the oracle."""

from __future__ import annotations

import pytest

from marketfeed.client import StreamClient
from marketfeed.events import BOOK_INVALID, Book, Status, Top, Trade
from marketfeed.options import TopConfig
from marketfeed.simulate.binance import SPOT, BinanceSimulator
from tests.integration.live import wait_until
from tests.integration.stream_harness import RunningDaemon, daemon_config, free_port

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def sim():
    server = BinanceSimulator(seed=11, interval=0.02, trade_probability=0.5)
    await server.start()
    yield server
    await server.stop()


async def read_until(client: StreamClient, condition, what: str, seen: list | None = None, timeout: float = 10.0):
    """Consume events until ``condition(event)`` holds (a deadline, not a timed assertion)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"timed out waiting for: {what}")
        try:
            event = await client.next_event(left)
        except TimeoutError:
            pytest.fail(f"timed out waiting for: {what}")
        if seen is not None:
            seen.append(event)
        if condition(event):
            return event


async def equals_truth(sim: BinanceSimulator, client: StreamClient, symbol: str, native: str) -> None:
    """Freeze the simulator, read until the client's book is at the true update id, compare every level."""
    sim.pause(SPOT)
    try:
        update_id, bids, asks = sim.true_book(native, SPOT)
        key = ("binance", symbol)
        if client.seq.get(key) != update_id or not client.valid.get(key):
            await read_until(client, lambda e: client.valid.get(key) and client.seq.get(key) == update_id, f"{symbol} at {update_id}")
        book = client.book("binance", symbol)
        assert book is not None
        assert book.bids.levels == bids
        assert book.asks.levels == asks
    finally:
        sim.resume(SPOT)


async def test_late_joiner_gets_snapshot_then_deltas_equal_to_truth(sim: BinanceSimulator, tmp_path) -> None:
    async with RunningDaemon(daemon_config(sim, tmp_path / "events.jsonl")) as d:
        # the daemon has been running a while: its book is valid, many diffs were already published
        await wait_until(lambda: d.valid("BTC-USDT") and sim.diffs_sent > 20, "daemon synced and running")
        depth_requests = len(sim.depth_requests(SPOT))
        async with StreamClient(d.url, ["book:binance:BTC-USDT", "trade:binance:*"]) as client:
            seen: list = []
            first = await read_until(client, lambda e: isinstance(e, Book), "first book event", seen)
            assert first.snapshot, "a late joiner's first book event is a snapshot from the daemon's book"
            await equals_truth(sim, client, "BTC-USDT", "BTCUSDT")
            await read_until(client, lambda e: isinstance(e, Trade), "a trade", seen)
            await read_until(client, lambda e: isinstance(e, Book) and not e.snapshot, "a diff", seen)
            await equals_truth(sim, client, "BTC-USDT", "BTCUSDT")  # still exact after further diffs
            assert client.ignored_diffs == 0
            assert not [e for e in seen if isinstance(e, Status) and e.state == BOOK_INVALID]
            assert all(e.symbol == "BTC-USDT" for e in seen if isinstance(e, Book))
        # the late joiner did not make the daemon go back to the venue
        assert len(sim.depth_requests(SPOT)) == depth_requests


async def test_top_events_are_the_book_top_at_their_seq(sim: BinanceSimulator, tmp_path) -> None:
    config = daemon_config(sim, tmp_path / "events.jsonl", top=TopConfig(depth=3, min_interval=0.05))
    async with RunningDaemon(config) as d:
        async with StreamClient(d.url, ["book:binance:ETH-USDT", "top:binance:ETH-USDT"]) as client:
            tops: list[Top] = []

            def check(event: object) -> bool:
                if isinstance(event, Top):
                    book = client.book("binance", "ETH-USDT")
                    assert book is not None
                    # the top follows every book event it summarises on the same stream
                    assert event.seq == client.seq[("binance", "ETH-USDT")]
                    assert (event.bids, event.asks) == book.top(3)
                    tops.append(event)
                return len(tops) >= 15

            await read_until(client, check, "15 tops")
            # coalesced: at most one per 50 ms by their state time (ts_recv of the last update)
            stamps = [t.ts_recv for t in tops]
            assert all(b > a for a, b in zip(stamps, stamps[1:]))
            await equals_truth(sim, client, "ETH-USDT", "ETHUSDT")
    # the sinks carry the same tops
    from marketfeed.events import decode

    sunk = [e for e in map(decode, (tmp_path / "events.jsonl").read_bytes().splitlines()) if isinstance(e, Top)]
    assert {(t.seq, tuple(t.bids), tuple(t.asks)) for t in tops} <= {(t.seq, tuple(t.bids), tuple(t.asks)) for t in sunk}


async def test_reconnect_after_server_restart_resubscribes(sim: BinanceSimulator, tmp_path) -> None:
    port = free_port()
    config = daemon_config(sim, tmp_path / "events.jsonl", port=port)
    client = StreamClient(f"ws://127.0.0.1:{port}/v1/stream", ["book:binance:BTC-USDT"], backoff_base=0.05, backoff_cap=0.2)
    async with RunningDaemon(config):
        await client.start()
        await read_until(client, lambda e: client.valid.get(("binance", "BTC-USDT")), "valid book")
    # the daemon is gone: the client says its book is invalid
    await read_until(client, lambda e: isinstance(e, Status) and e.state == BOOK_INVALID, "book_invalid after the server left")
    assert client.book("binance", "BTC-USDT") is None
    connects = client.connects
    async with RunningDaemon(config):
        await read_until(client, lambda e: isinstance(e, Book) and e.snapshot, "a snapshot after reconnecting")
        assert client.connects > connects
        await equals_truth(sim, client, "BTC-USDT", "BTCUSDT")
    await client.close()


async def test_example_bot_prints_spread_and_trades(sim: BinanceSimulator, tmp_path) -> None:
    import asyncio
    import sys

    from tests.helpers import REPO

    async with RunningDaemon(daemon_config(sim, tmp_path / "events.jsonl")) as d:
        await wait_until(lambda: d.valid("BTC-USDT"), "daemon synced")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "examples" / "bot.py"), "--url", d.url, "--limit", "200",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    spreads = [line for line in lines if " spread " in line]
    assert spreads and any(" trade " in line for line in lines)
    for line in spreads:
        words = line.split()
        bid, ask = float(words[3]), float(words[7])
        assert bid < ask
