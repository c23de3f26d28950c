"""The daemon with a network sink: ``marketfeed run`` against the loopback Binance server writing into
a real redis-server that is stopped and started again while the feed runs. The daemon keeps running,
and once Redis is back every trade the venue made is in its stream (the queue held them). A sink whose
server is unreachable at start stops the start with exit code 1."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from marketfeed.config import ConfigError, parse_config
from marketfeed.shard import shard_of
from marketfeed.simulate.binance import SPOT, BinanceSimulator, SymbolSpec
from tests.sinks.readers import redis_events
from tests.sinks.servers import free_port

SPECS = [SymbolSpec("BTCUSDT", "BTC", "USDT", "0.01", "0.0001", 60000.0, levels=40, mean_lots=50),
         SymbolSpec("ETHUSDT", "ETH", "USDT", "0.01", "0.001", 3000.0, levels=40, mean_lots=50)]


async def until(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for: {what}"
        await asyncio.sleep(0.1)


async def trade_ids(url: str) -> dict[str, list[int]]:
    try:
        streams = await redis_events(url, pattern="marketfeed:trade:*")
    except Exception:
        return {}
    return {key.rsplit(":", 1)[1]: [int(e.trade_id) for e in events] for key, events in streams.items()}


async def test_the_daemon_rides_out_a_redis_restart(tmp_path: Path, redis_server: Any) -> None:
    sim = BinanceSimulator(spot=SPECS, seed=3, interval=0.02, trade_probability=0.8)
    await sim.start()
    books = sim.markets[SPOT].books
    config = tmp_path / "run.toml"
    config.write_text(
        f'[venues.binance]\nsymbols = ["BTC-USDT", "ETH-USDT"]\nws_url = "{sim.ws_url}"\nrest_url = "{sim.rest_url}"\n'
        f'[[sinks]]\ntype = "redis"\nurl = "{redis_server.url}"\nmaxlen = 0\nretry_base = 0.05\nretry_cap = 0.5\nconnect_timeout = 2\n'
    )
    log = open(tmp_path / "daemon.log", "wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketfeed", "run", "--config", str(config), "--log-level", "info",
        stdout=asyncio.subprocess.DEVNULL, stderr=log,
    )
    try:
        async def flowing() -> bool:
            ids = await trade_ids(redis_server.url)
            return len(ids) == 2 and all(len(v) >= 20 for v in ids.values())

        await until(flowing, "trades of both symbols in redis")
        redis_server.stop()
        before = {s: b.trade_id for s, b in books.items()}

        async def venue_moved_on() -> bool:  # the feed goes on while Redis is away
            return all(b.trade_id >= before[s] + 30 for s, b in books.items())

        await until(venue_moved_on, "30 more trades per symbol at the venue during the outage")
        assert proc.returncode is None, (tmp_path / "daemon.log").read_text()
        redis_server.start()
        sim.pause()
        last = {f"{b.spec.base}-USDT": b.trade_id for b in books.values()}

        async def caught_up() -> bool:
            ids = await trade_ids(redis_server.url)
            return len(ids) == 2 and all(max(ids[s]) == last[s] for s in last)

        await until(caught_up, "every trade in redis after the restart")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await proc.wait()
        log.close()
        await sim.stop()
    assert code == 0, (tmp_path / "daemon.log").read_text()
    for symbol, ids in (await trade_ids(redis_server.url)).items():
        # nothing lost: every trade id from the first to the venue's last (at-least-once: a pipeline cut
        # by the stop may have been applied and sent again, so repeats are allowed, gaps are not)
        assert sorted(set(ids)) == list(range(min(ids), last[symbol] + 1)), f"{symbol}: trades missing"
    text = (tmp_path / "daemon.log").read_text()
    assert "sink write failed, retrying" in text and "sink reconnected" in text


def test_an_unreachable_sink_server_stops_the_start(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    config.write_text(
        '[venues.binance]\nsymbols = ["BTC-USDT"]\nws_url = "ws://127.0.0.1:9"\nrest_url = "http://127.0.0.1:9"\n'
        f'[[sinks]]\ntype = "redis"\nurl = "redis://127.0.0.1:{free_port()}/0"\nconnect_timeout = 1\n'
    )
    done = subprocess.run([sys.executable, "-m", "marketfeed", "run", "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "cannot start sinks" in done.stderr


def test_shard_settings_are_checked_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    text = '[venues.binance]\nsymbols = ["BTC-USDT"]\n'
    with pytest.raises(ConfigError, match=r"^c: shard\.index: must be 0\.\.1$"):
        parse_config(text + "[shard]\nindex = 2\ncount = 2\n", "c")
    with pytest.raises(ConfigError, match=r"^c: shard: shard \d+ of 40 gets none of the 1 configured symbols"):
        parse_config(text + "[shard]\nindex = %d\ncount = 40\n" % ((shard_of("binance", "BTC-USDT", 40) + 1) % 40), "c")
    monkeypatch.setenv("MARKETFEED_SHARD", "one/two")
    with pytest.raises(ConfigError, match=r"^c: MARKETFEED_SHARD: 'one/two' is not INDEX/COUNT"):
        parse_config(text, "c")
    monkeypatch.setenv("MARKETFEED_SHARD", "0/1")
    assert parse_config(text + "[shard]\nindex = 1\ncount = 2\n", "c").venues["binance"].symbols == ["BTC-USDT"]  # the environment wins
