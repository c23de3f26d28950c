"""The loopback Binance server's ``<symbol>@bookTicker``: after each diff that changes the best bid or
ask it shows the true book's best levels at that diff's final update id, in the venue's shape
(EXCHANGES.md 1.4 spot, 2.4 USD-M); after a diff that leaves the top alone it says nothing.

The server is paused and stepped by hand, so every frame of a step is on the socket when ``step``
returns and the test reads exactly the frames the server counts as sent: no waiting on time.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from marketfeed.simulate.binance import SPOT, USDM, BinanceSimulator, SimConnection

pytestmark = pytest.mark.timeout(60)

STEPS = 400
DROP_AT = 200  # this diff reaches nobody, but its top change still gets a bookTicker
KEYS = {
    SPOT: ["u", "s", "b", "B", "a", "A"],
    USDM: ["e", "u", "s", "b", "B", "a", "A", "T", "E"],
}
ROUTES = {SPOT: "/stream", USDM: "/public/stream"}
REST = {SPOT: "/api/v3/depth", USDM: "/fapi/v1/depth"}


async def server_side(sim: BinanceSimulator, market: str) -> SimConnection:
    """The server's record of our one connection (it registers right after the handshake)."""
    while not sim.open_connections(market):
        await asyncio.sleep(0.01)
    (conn,) = sim.open_connections(market)
    return conn


def top_of(bids: dict[float, float], asks: dict[float, float]) -> tuple[float, float, float, float]:
    bb, ba = max(bids), min(asks)
    return bb, bids[bb], ba, asks[ba]


@pytest.mark.parametrize("market", [SPOT, USDM])
async def test_book_ticker_is_the_true_top_at_its_update_id(market: str) -> None:
    sim = BinanceSimulator(seed=11, ping_interval=3600.0)
    await sim.start()
    sim.pause()
    try:
        async with aiohttp.ClientSession() as session:

            async def snapshot() -> tuple[int, dict[float, float], dict[float, float]]:
                url = f"{sim.rest_url}{REST[market]}?symbol=BTCUSDT&limit=1000"
                async with session.get(url) as resp:
                    body = await resp.json()
                bids = {float(p): float(q) for p, q in body["bids"]}
                asks = {float(p): float(q) for p, q in body["asks"]}
                return body["lastUpdateId"], bids, asks

            url = f"{sim.ws_url}{ROUTES[market]}?streams=btcusdt@depth@100ms/btcusdt@bookTicker"
            async with session.ws_connect(url) as ws:
                server = await server_side(sim, market)
                # our own book from the venue's snapshot and diffs: the tickers must agree with it too
                book_id, bids, asks = await snapshot()
                assert book_id == sim.true_book("BTCUSDT", market)[0]
                shown = top_of(bids, asks)  # what the last ticker (or the start) showed
                received = tickers = silent = 0
                for i in range(STEPS):
                    if i == DROP_AT:
                        sim.drop_next_diff("BTCUSDT", market)
                    await sim.step(market)
                    frames = []
                    while received < server.frames_sent:
                        frames.append(json.loads((await ws.receive()).data))
                        received += 1
                    true_id, true_bids, true_asks = sim.true_book("BTCUSDT", market)
                    true_top = top_of(true_bids, true_asks)
                    diffs = [f["data"] for f in frames if f["stream"] == "btcusdt@depth@100ms"]
                    ticks = [f["data"] for f in frames if f["stream"] == "btcusdt@bookTicker"]
                    assert len(diffs) + len(ticks) == len(frames)
                    if i == DROP_AT:
                        assert diffs == []
                        book_id, bids, asks = await snapshot()  # the server is paused: this is the truth
                    else:
                        (diff,) = diffs
                        assert diff["u"] == true_id
                        assert (diff["pu"] == book_id) if market == USDM else (diff["U"] == book_id + 1)
                        for side, levels in ((bids, diff["b"]), (asks, diff["a"])):
                            for p, q in levels:
                                if float(q) == 0:
                                    side.pop(float(p), None)
                                else:
                                    side[float(p)] = float(q)
                        book_id = diff["u"]
                    assert (bids, asks) == (true_bids, true_asks)
                    if true_top == shown:
                        assert ticks == [], f"step {i}: a bookTicker although the top did not change"
                        silent += 1
                        continue
                    (tick,) = ticks
                    assert list(tick) == KEYS[market]
                    assert tick["u"] == true_id and tick["s"] == "BTCUSDT"
                    if market == USDM:
                        assert tick["e"] == "bookTicker" and tick["T"] <= tick["E"]
                    got = (float(tick["b"]), float(tick["B"]), float(tick["a"]), float(tick["A"]))
                    assert got == true_top == top_of(bids, asks)
                    shown = true_top
                    tickers += 1
                # both cases happen often enough to mean something
                assert tickers >= STEPS // 5 and silent >= STEPS // 20, (tickers, silent)
    finally:
        await sim.stop()
