"""The daemon runs on uvloop when it is installed: the same end-to-end path (sync, a killed socket,
reconnect, resync, equal to the server's truth) on uvloop's event loop."""

from __future__ import annotations

import asyncio

import pytest

from marketfeed.events import BOOK_INVALID
from marketfeed.simulate.binance import SPOT, BinanceSimulator
from tests.integration.test_binance_e2e import Live, wait_until

uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed on this platform")

pytestmark = pytest.mark.timeout(60)


def test_sync_and_reconnect_on_uvloop() -> None:
    # a plain test that runs its own uvloop loop, as the daemon does
    uvloop.run(scenario())


async def scenario() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    sim = BinanceSimulator(seed=5, interval=0.02, ping_interval=0.3)
    await sim.start()
    try:
        async with Live(sim) as live:
            await live.synced_to_truth("BTC-USDT", "BTCUSDT")
            mark = len(live.events)
            sim.kill_connections(SPOT)
            await wait_until(lambda: live.statuses(BOOK_INVALID, "ETH-USDT", mark), "book_invalid after the kill")
            await wait_until(lambda: len(sim.connections) == 2, "a new connection")
            await live.synced_to_truth("BTC-USDT", "BTCUSDT")
            await live.synced_to_truth("ETH-USDT", "ETHUSDT")
            await wait_until(lambda: sim.connections[1].pongs_received >= 1, "a pong on uvloop")
    finally:
        await sim.stop()
    assert live.books.violations == []
