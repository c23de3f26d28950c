"""The loopback Coinbase server speaks the protocol of EXCHANGES.md 4.1, seen from a raw client: the
shapes the adapter relies on are the server's, not the adapter's, doing."""

from __future__ import annotations

import json
import time

import aiohttp
import pytest

from marketfeed.simulate.coinbase import PRODUCTS_PATH, CoinbaseSimulator

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def sim():
    server = CoinbaseSimulator(seed=3, interval=0.01, heartbeat_interval=0.05, trade_probability=0.5)
    await server.start()
    yield server
    await server.stop()


async def receive_until(ws, done, timeout: float = 10.0) -> list[dict]:
    frames: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(frames):
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"timed out; got {len(frames)} frames")
        msg = await ws.receive(timeout=left)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frames.append(json.loads(msg.data))
    return frames


async def test_products_endpoint(sim: CoinbaseSimulator) -> None:
    async with aiohttp.ClientSession() as session, session.get(sim.rest_url + PRODUCTS_PATH) as resp:
        body = await resp.json()
    kinds = {p["product_id"]: p["product_type"] for p in body["products"]}
    assert kinds["BTC-USD"] == "SPOT" and "FUTURE" in kinds.values()
    assert body["num_products"] == len(body["products"])


async def test_sequence_counts_across_channels_and_book_replays_to_truth(sim: CoinbaseSimulator) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url) as ws:
        for channel in ("heartbeats", "level2", "market_trades"):
            await ws.send_str(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channel": channel}))
        frames = await receive_until(ws, lambda fs: {f.get("channel") for f in fs} >= {"heartbeats", "l2_data", "market_trades"}
                                     and sum(f.get("channel") == "l2_data" for f in fs) > 20)
        sim.pause()  # a market step queues all its frames without awaiting: the truth is now fixed
        bids, asks = sim.true_book("BTC-USD")
        book: dict[str, dict[float, float]] = {"bid": {}, "offer": {}}
        seen_snapshot = False

        def apply(frame: dict) -> None:
            nonlocal seen_snapshot
            if frame.get("channel") != "l2_data":
                return
            for event in frame["events"]:
                if event["type"] == "snapshot":
                    seen_snapshot = True
                    book["bid"].clear()
                    book["offer"].clear()
                for u in event["updates"]:
                    side = book[u["side"]]
                    if float(u["new_quantity"]):
                        side[float(u["price_level"])] = float(u["new_quantity"])
                    else:
                        side.pop(float(u["price_level"]), None)

        for f in frames:
            apply(f)
        deadline = time.monotonic() + 10
        while (book["bid"], book["offer"]) != (bids, asks):
            assert time.monotonic() < deadline, "the client book never reached the true book"
            frames.append(json.loads((await ws.receive(timeout=10)).data))
            apply(frames[-1])
        sim.resume()
    assert seen_snapshot
    numbers = [f["sequence_num"] for f in frames if "sequence_num" in f]
    assert numbers == list(range(len(numbers)))  # one counter per connection, every channel
    assert [f["events"][0]["subscriptions"] for f in frames if f.get("channel") == "subscriptions"][-1] == {
        "heartbeats": ["heartbeats"], "level2": ["BTC-USD"], "market_trades": ["BTC-USD"]}


async def test_subscribe_rules(sim: CoinbaseSimulator) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url) as ws:
        await ws.send_str(json.dumps({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2", "heartbeats"]}))
        await ws.send_str(json.dumps({"type": "subscribe", "product_ids": ["NOPE-USD"], "channel": "level2"}))
        errors = await receive_until(ws, lambda fs: len(fs) == 2)
    assert [e["type"] for e in errors] == ["error", "error"]
    assert "one channel per message" in errors[0]["reason"] and "NOPE-USD" in errors[1]["reason"]
    assert all(not c.subscriptions for c in sim.connections)


async def test_faults_seen_on_the_wire(sim: CoinbaseSimulator) -> None:
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url) as ws:
        await ws.send_str(json.dumps({"type": "subscribe", "product_ids": ["ETH-USD"], "channel": "level2"}))
        frames = await receive_until(ws, lambda fs: any(f.get("channel") == "l2_data" for f in fs))
        sim.drop_next_update()
        frames += await receive_until(ws, lambda fs: sum(f.get("channel") == "l2_data" for f in fs) >= 3)
        numbers = [f["sequence_num"] for f in frames]
        assert any(b - a == 2 for a, b in zip(numbers, numbers[1:])), numbers  # one number skipped
        sim.duplicate_next_update()
        frames = await receive_until(ws, lambda fs: len(fs) >= 3)
        numbers = [f["sequence_num"] for f in frames]
        assert any(a == b for a, b in zip(numbers, numbers[1:])), numbers
