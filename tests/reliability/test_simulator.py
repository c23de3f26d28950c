"""The simulator itself: the fault schedule grammar, venues refusing faults that do not apply, the
schedule firing by message count, `marketfeed simulate` as a process, and a Binance server driven by a
real recording whose books our daemon rebuilds exactly."""

from __future__ import annotations

import asyncio
import sys

import pytest

from marketfeed.simulate.faults import (
    Fault,
    FaultError,
    FaultInjector,
    parse_schedule,
    random_schedule,
)
from marketfeed.simulate.serve import (
    TARGETS,
    make_server,
    parse_venue_faults,
    start_venues,
    stop_venues,
)
from tests.helpers import REPO, shared_capture
from tests.integration.live import LiveVenue, wait_until

pytestmark = pytest.mark.timeout(60)


def test_schedule_grammar() -> None:
    faults = parse_schedule("kill@3000, drop@1500,stall@5000:20s,close:1011@6000,rest429@7000:500ms")
    assert faults == [
        Fault("drop", 1500), Fault("kill", 3000), Fault("stall", 5000, 20.0),
        Fault("close", 6000, None, 1011), Fault("rest429", 7000, 0.5),
    ]
    assert [str(f) for f in faults][-2:] == ["close:1011@6000", "rest429@7000:0.5s"]
    for bad in ("drop", "drop@x", "explode@10", "close@10", "drop:1000@10", "stall@10:5h"):
        with pytest.raises(FaultError):
            parse_schedule(bad)


def test_random_schedule_is_reproducible() -> None:
    kinds = sorted(TARGETS["kraken"].supported)
    a = random_schedule(5, kinds, 30)
    assert a == random_schedule(5, kinds, 30)
    assert a != random_schedule(6, kinds, 30)
    assert {f.kind for f in a} <= set(kinds)
    assert [f.at for f in a] == sorted(f.at for f in a)


def test_venues_refuse_faults_that_do_not_apply() -> None:
    with pytest.raises(FaultError, match="coinbase: fault 'bad_checksum' does not apply"):
        parse_venue_faults(["bad_checksum@10"], ["kraken", "coinbase"]) and FaultInjector(make_server("coinbase")[1], [Fault("bad_checksum", 10)])
    for venue, kind in (("kraken", "server_shutdown"), ("okx", "rest429"), ("binance", "bad_checksum")):
        with pytest.raises(FaultError):
            FaultInjector(make_server(venue)[1], [Fault(kind, 1)])
    schedules = parse_venue_faults(["kraken=bad_checksum@10", "drop@5"], ["kraken", "okx"])
    assert schedules == {"kraken": [Fault("bad_checksum", 10), Fault("drop", 5)], "okx": [Fault("drop", 5)]}


async def test_schedule_fires_by_message_count() -> None:
    served = await start_venues(["kraken"], faults={"kraken": parse_schedule("bad_checksum@40,kill@80")})
    s = served[0]
    try:
        async with LiveVenue("kraken", s.symbols, s.ws_url, s.rest_url, depth=25) as live:
            assert s.injector is not None
            await wait_until(lambda: s.injector.done, "both faults fired", 20.0)
            fired = s.injector.injected
            assert [str(i.fault) for i in fired] == ["bad_checksum@40", "kill@80"]
            assert fired[0].at_sent >= 40 and fired[1].at_sent >= 80
            await wait_until(lambda: live.statuses("book_invalid") and live.statuses("disconnected"), "both detected")
            await wait_until(lambda: all(live.valid(x) for x in s.symbols), "books valid again")
            assert live.books.violations == []
    finally:
        await stop_venues(served)


async def test_simulate_cli_serves_and_refuses() -> None:
    bad = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketfeed", "simulate", "--venue", "okx", "--faults", "server_shutdown@10",
        stderr=asyncio.subprocess.PIPE, cwd=REPO)
    _, err = await bad.communicate()
    assert bad.returncode == 2 and b"okx: fault 'server_shutdown' does not apply" in err
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketfeed", "simulate", "--venue", "binance", "--venue", "coinbase", "--log-level", "warning",
        stdout=asyncio.subprocess.PIPE, cwd=REPO)
    try:
        assert proc.stdout is not None
        text = b""
        while text.count(b"rest_url") < 2:
            text += await asyncio.wait_for(proc.stdout.readline(), 20)
        lines = text.decode().splitlines()
        urls = {l.split(" = ")[1].strip('"') for l in lines if l.startswith("ws_url")}
        assert len(urls) == 2  # one port per venue
        binance_ws = next(l for l in lines if l.startswith("ws_url")).split(" = ")[1].strip('"')
        async with LiveVenue("binance", ["BTC-USDT"], binance_ws, binance_ws.replace("ws://", "http://")) as live:
            await wait_until(lambda: live.valid("BTC-USDT"), "a book from the simulate process")
    finally:
        proc.terminate()
        await proc.wait()


async def test_binance_books_from_a_real_recording() -> None:
    """The server replays the recording's book step by step; our daemon's consumer book equals the
    true book, and the book at the start is the recording's first book."""
    capture = shared_capture("binance/spot-btcusdt-20240808.capture.jsonl.gz")
    from marketfeed.simulate.replayed import load_capture

    recorded = load_capture([capture])["BTC-USDT"]
    sim, target, symbols = make_server("binance", capture=[str(capture)], interval=0.01)
    assert symbols == ["BTC-USDT"]
    _, bids, asks = sim.true_book("BTCUSDT")
    assert bids == recorded.bids and asks == recorded.asks
    await sim.start()
    try:
        async with LiveVenue("binance", symbols, sim.ws_url, sim.rest_url) as live:
            await wait_until(lambda: live.valid("BTC-USDT"), "synced")
            await FaultInjector(target, []).fire(Fault("drop", 0))
            await wait_until(lambda: live.statuses("book_invalid"), "the gap is seen")
            await wait_until(lambda: live.valid("BTC-USDT") and sim.markets["spot"].books["BTCUSDT"].position > 100, "resynced, 100 steps on")
            sim.pause()
            update_id, bids, asks = sim.true_book("BTCUSDT")
            await wait_until(lambda: live.seq.get("BTC-USDT") == update_id, "at the true update id")
            book = live.books.books[("binance", "BTC-USDT")]
            # the recorded book is deeper than a 1000-level snapshot: levels beyond the snapshot that no
            # diff touched since are not the consumer's to know, so compare the top 500 of each side
            top_bids = sorted(bids.items(), reverse=True)[:500]
            top_asks = sorted(asks.items())[:500]
            bb, ba = book.top(500)
            assert [tuple(x) for x in bb] == top_bids and [tuple(x) for x in ba] == top_asks
            assert live.books.violations == []
    finally:
        await sim.stop()


def test_recording_loops_back_to_its_first_book() -> None:
    capture = shared_capture("binance/spot-btcusdt-20240808.capture.jsonl.gz")
    from marketfeed.simulate.binance import SPOT, BinanceSimulator

    sim = BinanceSimulator.from_capture([capture], SPOT)
    book = sim.markets[SPOT].books["BTCUSDT"]
    first = (dict(book.bids), dict(book.asks))
    for _ in range(len(book.steps)):
        book.evolve()
    assert (book.bids, book.asks) == first
    assert book.best_bid() < book.best_ask()
