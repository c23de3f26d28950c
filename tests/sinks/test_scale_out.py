"""Scale-out: two ``marketfeed run`` processes, shards 0 and 1 of 2 of one symbol list, against the
loopback Binance simulator, both publishing into one NATS JetStream; one consumer reads everything and
gets every trade the venue made while the daemons were connected exactly once (the simulator's trade
ids, contiguous per symbol, up to the simulator's last), each symbol from the one daemon its shard
names, and every book from a snapshot."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec

from marketfeed.events import Book, Event, Trade
from marketfeed.shard import parse_env, shard_of, split
from marketfeed.simulate.binance import SPOT, BinanceSimulator, SymbolSpec

BASES = ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "LTC", "DOT"]
SYMBOLS = [f"{b}-USDT" for b in BASES]


def test_shards_split_every_symbol_exactly_once() -> None:
    symbols = {"binance": [f"S{i}-USDT" for i in range(200)], "okx": [f"S{i}-USDT" for i in range(50)]}
    for count in (1, 2, 3, 7):
        parts = [split(symbols, i, count) for i in range(count)]
        for venue, names in symbols.items():
            got = sorted(s for p in parts for s in p.get(venue, []))
            assert got == sorted(names)  # all of them, none twice
    # similar names spread evenly (a guard against a degenerate hash)
    names = [f"{a}{b}{c}-USDT" for a in "ABCDE" for b in "FGHIJ" for c in "KLMNO"]  # 125 names of one length
    for count in (2, 3, 4):
        sizes = [len(split({"binance": names}, i, count).get("binance", [])) for i in range(count)]
        assert min(sizes) >= 0.7 * len(names) / count, sizes
    assert parse_env("1/4") == (1, 4)
    for bad in ("4/4", "x/2", "1", "-1/2", "0/0"):
        try:
            parse_env(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")


async def read_all(url: str) -> list[tuple[str, Event]]:
    """Every message in the stream: (the publishing daemon's run id from Nats-Msg-Id, event)."""
    import nats

    decoder = msgspec.json.Decoder(Event)
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        total = (await js.stream_info("MARKETFEED")).state.messages
        sub = await js.pull_subscribe("marketfeed.>", stream="MARKETFEED")
        out: list[tuple[str, Event]] = []
        while len(out) < total:
            for msg in await sub.fetch(min(1000, total - len(out)), timeout=10):
                out.append((msg.headers["Nats-Msg-Id"].rsplit("-", 1)[0], decoder.decode(msg.data)))
                await msg.ack()
        return out
    finally:
        await nc.close()


async def test_two_daemons_split_the_symbols_into_one_nats_stream(tmp_path: Path, nats_server: Any) -> None:
    specs = [SymbolSpec(f"{b}USDT", b, "USDT", "0.01", "0.001", 100.0 * (i + 1), levels=40, mean_lots=50) for i, b in enumerate(BASES)]
    sim = BinanceSimulator(spot=specs, seed=7, interval=0.02, trade_probability=0.8)
    await sim.start()
    shards = [split({"binance": SYMBOLS}, i, 2)["binance"] for i in range(2)]
    assert all(shards), "both shards serve symbols"
    procs = []
    try:
        for index in range(2):
            config = tmp_path / f"shard{index}.toml"
            config.write_text(
                f'[venues.binance]\nsymbols = {SYMBOLS!r}\nws_url = "{sim.ws_url}"\nrest_url = "{sim.rest_url}"\n'.replace("'", '"')
                + f'[[sinks]]\ntype = "nats"\nservers = ["{nats_server.url}"]\n'
                + f"[shard]\nindex = {index}\ncount = 2\n"
            )
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "marketfeed", "run", "--config", str(config), "--log-level", "warning",
                stdout=asyncio.subprocess.DEVNULL, stderr=open(tmp_path / f"shard{index}.log", "wb"),
            ))

        async def count() -> int:
            import nats

            nc = await nats.connect(nats_server.url)
            try:
                return (await nc.jetstream().stream_info("MARKETFEED")).state.messages
            except Exception:
                return 0
            finally:
                await nc.close()

        # let trades flow on every symbol for a while, then freeze the venue
        seen = [0]

        async def enough() -> bool:
            seen[0] = await count()
            return seen[0] > 3000

        deadline = asyncio.get_running_loop().time() + 60
        while not await enough():
            assert all(p.returncode is None for p in procs), (tmp_path / "shard0.log").read_text() + (tmp_path / "shard1.log").read_text()
            assert asyncio.get_running_loop().time() < deadline, f"only {seen[0]} messages in 60 s"
            await asyncio.sleep(0.1)
        sim.pause()
        last = {f"{s.base}-USDT": sim.markets[SPOT].books[s.symbol].trade_id for s in specs}

        events: list[tuple[str, Event]] = []

        async def caught_up() -> bool:
            events[:] = await read_all(nats_server.url)
            top = defaultdict(int)
            for _, e in events:
                if type(e) is Trade:
                    top[e.symbol] = max(top[e.symbol], int(e.trade_id))
            return all(top[s] == last[s] for s in SYMBOLS)

        deadline = asyncio.get_running_loop().time() + 30
        while not await caught_up():
            assert asyncio.get_running_loop().time() < deadline, "the consumer never saw the venue's last trades"
            await asyncio.sleep(0.2)
    finally:
        for p in procs:
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        codes = [await p.wait() for p in procs]
        await sim.stop()
    assert codes == [0, 0]

    trades: dict[str, list[int]] = defaultdict(list)
    runs: dict[str, set[str]] = defaultdict(set)
    snapshots: set[str] = set()
    for run, e in events:
        if type(e) is Trade:
            trades[e.symbol].append(int(e.trade_id))
            runs[e.symbol].add(run)
        elif type(e) is Book:
            runs[e.symbol].add(run)
            if e.snapshot:
                snapshots.add(e.symbol)
    assert sorted(trades) == sorted(SYMBOLS) and snapshots == set(SYMBOLS)
    for symbol, ids in trades.items():
        # none doubled, none missing from the first trade after connecting to the venue's last
        assert len(ids) == len(set(ids)), f"{symbol}: doubled trades"
        assert sorted(ids) == list(range(min(ids), last[symbol] + 1)), f"{symbol}: missing trades"
        assert ids == sorted(ids), f"{symbol}: out of order"
    # each symbol came from exactly one daemon, and the two daemons are the two shards
    assert all(len(r) == 1 for r in runs.values())
    by_run: dict[str, set[str]] = defaultdict(set)
    for symbol, r in runs.items():
        by_run[next(iter(r))].add(symbol)
    assert sorted(map(sorted, by_run.values())) == sorted(map(sorted, shards))
    for index, names in enumerate(shards):
        assert all(shard_of("binance", s, 2) == index for s in names)
