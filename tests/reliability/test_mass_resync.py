"""Mass resync: 150 Binance USD-M symbols lose sync at once (every connection killed right after the
first sync); the snapshots go through the venue's weight budget, staggered, and the simulator, which
enforces USD-M's 2400 weight per rolling minute, never answers 429. Every book ends equal to the truth."""

from __future__ import annotations

import pytest

from marketfeed.simulate.binance import USDM, BinanceSimulator, SymbolSpec
from tests.integration.live import LiveVenue, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

N = 150


async def test_mass_resync_within_weight_limit() -> None:
    specs = [SymbolSpec(f"S{i:03d}USDT", f"S{i:03d}", "USDT", "0.01", "0.001", 100.0 + i, levels=40, mean_lots=50) for i in range(N)]
    sim = BinanceSimulator(spot=[], usdm=specs, interval=0.5, trade_probability=0.0, weight_limit={USDM: 2400})
    await sim.start()
    symbols = [f"S{i:03d}-USDT-PERP" for i in range(N)]
    try:
        async with LiveVenue("binance-usdm", symbols, sim.ws_url, sim.rest_url, depth=100, channels=["book"],
                             stale_after=5.0, fetch_timeout=5.0) as live:
            await wait_until(lambda: all(live.valid(s) for s in symbols), "all books synced", 60.0)
            first_round = len(sim.depth_requests(USDM))
            sim.kill_connections(USDM)
            await wait_until(lambda: len(sim.depth_requests(USDM)) >= first_round + N, "every symbol resynced", 90.0)
            await wait_until(lambda: all(live.valid(s) for s in symbols), "all books valid again", 90.0)
            sim.pause()
            try:
                for s in symbols:
                    native = s.removesuffix("-PERP").replace("-", "")
                    _, bids, asks = sim.true_book(native, USDM)
                    book = live.books.books[("binance-usdm", s)]
                    await wait_until(lambda b=book, t=(bids, asks): (b.bids.levels, b.asks.levels) == t, f"{s} equals the truth")
            finally:
                sim.resume()
            assert live.books.violations == []
        statuses = [h.status for h in sim.depth_requests(USDM)]
        assert 429 not in statuses and 418 not in statuses
        # 2 x 150 snapshots of weight 5 = 1500: more than the client's burst (its 1200 share), so the
        # second round was paced by the budget rather than sent at once
        assert live.runner.budget.spent >= 2 * N * 5
    finally:
        await sim.stop()
