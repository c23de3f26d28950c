"""The loopback Binance server itself: its true book is a sound oracle (the diffs it sends rebuild it
exactly, it is never crossed, it keeps a realistic shape), and it answers the protocol as EXCHANGES.md
1.x/2.x documents, errors included."""

from __future__ import annotations

import asyncio
import json
import random

import aiohttp
import pytest

from marketfeed.simulate.binance import USDM, BinanceSimulator, SymbolSpec, TrueBook

pytestmark = pytest.mark.timeout(60)


def test_true_book_diffs_rebuild_it_and_it_is_never_crossed() -> None:
    spec = SymbolSpec("BTCUSDT", "BTC", "USDT", "0.10", "0.001", 60000.0, mean_lots=200)
    book = TrueBook(spec, random.Random(5), USDM, 1000)
    last, bids, asks = book.snapshot(5000)
    mine_b = {p: q for p, q in bids}
    mine_a = {p: q for p, q in asks}
    changed = []
    mids = []
    for _ in range(3000):
        pu, first, u, bc, ac = book.evolve()
        assert pu == last and first == last + 1 and u >= first
        last = u
        changed.append(len(bc) + len(ac))
        for side, changes in ((mine_b, book.levels_text(bc, True)), (mine_a, book.levels_text(ac, False))):
            for p, q in changes:
                if float(q) == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        assert book.best_bid() < book.best_ask()
        mids.append((book.best_bid() + book.best_ask()) / 2)
    _, bids, asks = book.snapshot(5000)
    assert mine_b == dict(map(tuple, bids)) and mine_a == dict(map(tuple, asks))
    assert 14 <= sum(changed) / len(changed) <= 22  # about 18 levels per diff
    assert 125 <= len(book.bids) <= 400 and 125 <= len(book.asks) <= 400
    assert max(mids) - min(mids) > 1  # the inside moves
    # USD-M prints the tick's places ("0.10": two), sizes the step's (three)
    assert all(len(p.split(".")[1]) == 2 and len(q.split(".")[1]) == 3 for p, q in bids + asks)


@pytest.fixture
async def sim():
    server = BinanceSimulator(seed=2, interval=0.02, ping_interval=5.0)
    await server.start()
    yield server
    await server.stop()


async def test_protocol_replies_and_errors(sim: BinanceSimulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(sim.ws_url + "/ws") as ws:

            async def ask(text: str) -> dict:
                await asyncio.sleep(0.25)  # pace: Binance drops a client above 5 messages a second
                await ws.send_str(text)
                while True:
                    reply = json.loads((await ws.receive()).data)
                    if "e" not in reply:  # skip stream data
                        return reply

            assert await ask('{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}') == {"result": None, "id": 1}
            assert await ask('{"method":"LIST_SUBSCRIPTIONS","id":"abc"}') == {"result": ["btcusdt@trade"], "id": "abc"}
            assert (await ask("{not json"))["code"] == 3
            assert (await ask('{"method":"NOPE","id":2}')) == {"code": 2, "msg": "Invalid request: unknown method 'NOPE'", "id": 2}
            assert (await ask('{"method":"SUBSCRIBE","params":["BTCUSDT@trade"],"id":3}'))["code"] == 2
            assert await ask('{"method":"GET_PROPERTY","params":["combined"],"id":4}') == {"result": False, "id": 4}
            assert (await ask('{"method":"SET_PROPERTY","params":["combined","yes"],"id":5}'))["code"] == 1
            assert (await ask('{"method":"SET_PROPERTY","params":["colour",true],"id":6}'))["code"] == 0
            # a raw /ws stream sends bare events
            while True:
                event = json.loads((await ws.receive()).data)
                if "e" in event:
                    assert event["e"] == "trade" and event["s"] == "BTCUSDT"
                    break
    assert sim.rate_limit_disconnects == 0


async def test_rest_answers_and_errors(sim: BinanceSimulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(sim.rest_url + "/api/v3/depth?symbol=BTCUSDT&limit=10") as r:
            body = await r.json()
            assert r.status == 200 and len(body["bids"]) == 10 and "X-MBX-USED-WEIGHT-1M" in r.headers
            assert float(body["bids"][0][0]) < float(body["asks"][0][0])
        async with session.get(sim.rest_url + "/api/v3/depth?symbol=NOPE") as r:
            assert r.status == 400 and (await r.json())["code"] == -1121
        async with session.get(sim.rest_url + '/api/v3/exchangeInfo?symbols=["BTCUSDT"]') as r:
            assert [s["symbol"] for s in (await r.json())["symbols"]] == ["BTCUSDT"]
        async with session.get(sim.rest_url + "/fapi/v1/exchangeInfo") as r:
            info = await r.json()
            assert {s["contractType"] for s in info["symbols"]} == {"PERPETUAL"}
        async with session.get(sim.rest_url + "/fapi/v1/depth?symbol=BTCUSDT&limit=7") as r:
            body = await r.json()
            assert len(body["bids"]) == 10 and {"E", "T", "lastUpdateId"} <= body.keys()  # 7 -> the next valid limit
        sim.fail_depth(418, retry_after=120)
        async with session.get(sim.rest_url + "/api/v3/depth?symbol=BTCUSDT") as r:
            assert r.status == 418 and r.headers["Retry-After"] == "120"
    assert [(h.path, h.weight) for h in sim.rest_log] == [
        ("/api/v3/depth", 5), ("/api/v3/depth", 5), ("/api/v3/exchangeInfo", 20),
        ("/fapi/v1/exchangeInfo", 1), ("/fapi/v1/depth", 2), ("/api/v3/depth", 5),
    ]


async def test_usdm_routes_carry_only_their_streams(sim: BinanceSimulator) -> None:
    async with aiohttp.ClientSession() as session:
        public = await session.ws_connect(sim.ws_url + "/public/stream?streams=btcusdt@depth/btcusdt@aggTrade")
        market = await session.ws_connect(sim.ws_url + "/market/stream?streams=btcusdt@depth/btcusdt@aggTrade")
        seen: dict[str, set[str]] = {"public": set(), "market": set()}

        async def read(name: str, ws: aiohttp.ClientWebSocketResponse) -> None:
            while True:
                seen[name].add(json.loads((await ws.receive()).data)["stream"])

        tasks = [asyncio.ensure_future(read("public", public)), asyncio.ensure_future(read("market", market))]
        deadline = asyncio.get_running_loop().time() + 10
        while not (seen["public"] and seen["market"]) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        # let a few more intervals pass, then look at what each route carried
        n = sim.diffs_sent
        while sim.diffs_sent < n + 20 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for t in tasks:
            t.cancel()
        await public.close()
        await market.close()
    assert seen["public"] == {"btcusdt@depth"}
    assert seen["market"] == {"btcusdt@aggTrade"}
