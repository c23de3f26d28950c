"""``marketfeed replay CAPTURE --config FILE`` loads every configured sink with the same events: the
project's own Binance fixture capture replayed into Redis, NATS and PostgreSQL at once, each compared
with the JSON Lines that ``replay --out`` writes for the same capture."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

from marketfeed import events as ev
from marketfeed.events import Book, Status, Top, Trade
from tests.sinks.readers import nats_events, postgres_events, redis_events

ROOT = Path(__file__).resolve().parents[2]
CAPTURE = ROOT / "fixtures" / "binance-spot-sim.capture.jsonl.gz"


def marketfeed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "marketfeed", *args], capture_output=True, text=True, timeout=300)


def test_replay_loads_redis_nats_and_postgres_with_the_same_events(
    tmp_path: Path, redis_server: Any, nats_server: Any, postgres_server: Any
) -> None:
    reference = tmp_path / "events.jsonl"
    done = marketfeed("replay", str(CAPTURE), "--out", str(reference), "--log-level", "warning")
    assert done.returncode == 0, done.stderr
    want = [ev.decode(line) for line in reference.read_bytes().splitlines()]
    assert sum(type(e) is Trade for e in want) > 100 and sum(type(e) is Book for e in want) > 100

    config = tmp_path / "replay.toml"
    config.write_text(
        '[venues.binance]\nsymbols = ["BTC-USDT"]\n'  # the symbol the fixture recorded
        f'[[sinks]]\ntype = "redis"\nurl = "{redis_server.url}"\nmaxlen = 0\nqueue_size = 1000\n'
        f'[[sinks]]\ntype = "nats"\nservers = ["{nats_server.url}"]\nformat = "msgpack"\nqueue_size = 1000\n'
        f'[[sinks]]\ntype = "postgres"\ndsn = "{postgres_server.dsn}"\nqueue_size = 1000\n'
    )
    done = marketfeed("replay", str(CAPTURE), "--config", str(config), "--log-level", "warning")
    assert done.returncode == 0, done.stderr
    # a queue far smaller than the capture: the replay waited for the sinks instead of dropping

    # with the config's symbols the replay follows the same books as without one
    redo = tmp_path / "config.jsonl"
    assert marketfeed("replay", str(CAPTURE), "--config", str(config), "--out", str(redo)).returncode == 0
    assert [ev.decode(line) for line in redo.read_bytes().splitlines()] == want

    streams = asyncio.run(redis_events(redis_server.url))
    per_key: dict[str, list[ev.Event]] = {}
    names = {Trade: "trade", Book: "book", Top: "top", Status: "status"}
    for e in want:
        per_key.setdefault(f"marketfeed:{names[type(e)]}:{e.venue}:{e.symbol or '_'}", []).append(e)
    assert streams == per_key

    got = [e for _, e in asyncio.run(nats_events(nats_server.url, "msgpack"))]
    assert len(got) == len(want)
    assert got == want

    tables = asyncio.run(postgres_events(postgres_server.dsn))
    assert tables == [e for t in (Trade, Book, Top, Status) for e in want if type(e) is t]


def test_replay_without_out_needs_a_config(tmp_path: Path) -> None:
    done = marketfeed("replay", str(CAPTURE))
    assert done.returncode == 2 and "--config" in done.stderr
