"""RedisSource and NatsSource read back what ``marketfeed replay --config`` put into real Redis and
NATS servers: the same events as ``replay --out`` writes, books equal to a consumer's books built
from those JSON Lines, and a server restart in the middle of reading loses and repeats nothing."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from marketfeed import events as ev
from marketfeed.client import BookKeeping
from marketfeed.events import Book, Status
from marketfeed.sources import NatsSource, RedisSource, parse_channel
from tests.helpers import ConsumerBooks

ROOT = Path(__file__).resolve().parents[2]
CAPTURE = ROOT / "fixtures" / "binance-spot-sim.capture.jsonl.gz"


def marketfeed(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "marketfeed", *args], check=False, capture_output=True, text=True, timeout=300)


def load(tmp_path: Path, sink: str) -> list[ev.Event]:
    """Replay the fixture into the sink; return the events ``replay --out`` writes with the same config."""
    config = tmp_path / "replay.toml"
    config.write_text('[venues.binance]\nsymbols = ["BTC-USDT"]\n' + sink)
    done = marketfeed("replay", str(CAPTURE), "--config", str(config), "--log-level", "warning")
    assert done.returncode == 0, done.stderr
    out = tmp_path / "events.jsonl"
    done = marketfeed("replay", str(CAPTURE), "--config", str(config), "--out", str(out), "--log-level", "warning")
    assert done.returncode == 0, done.stderr
    want = [ev.decode(line) for line in out.read_bytes().splitlines()]
    assert sum(type(e) is Book for e in want) > 100 and any(type(e) is Status for e in want)
    return want


async def read(source: Any, n: int, restart: Any = None, at: int = 0) -> list[ev.Event]:
    got: list[ev.Event] = []
    async with source:
        while len(got) < n:
            got.append(await source.next_event(timeout=60))
            if restart is not None and len(got) == at:
                await asyncio.to_thread(restart)
    return got


def books_of(events: list[ev.Event]) -> dict[tuple[str, str], tuple[bool, list, list]]:
    """Books as ConsumerBooks (tests/helpers, independent of the client code) builds them."""
    consumer = ConsumerBooks()
    for e in events:
        if type(e) is Status and e.state == ev.BOOK_INVALID and e.symbol is not None:
            consumer.valid[(e.venue, e.symbol)] = False
        else:
            consumer.apply(e)
    assert not consumer.violations
    return {k: shown(consumer.valid.get(k, False), b) for k, b in consumer.books.items()}


def shown(valid: bool, book: Any) -> tuple[bool, list, list]:
    """What a bot may use: the levels of a valid book, nothing of an invalid one."""
    if not valid:
        return (False, [], [])
    bids, asks = book.top(10**6)
    return (True, list(bids), list(asks))


def client_books(c: BookKeeping) -> dict[tuple[str, str], tuple[bool, list, list]]:
    return {k: shown(c.valid.get(k, False), b) for k, b in c.books.items()}


def test_channels_are_checked() -> None:
    assert parse_channel("book:binance:*") == ("book", "binance", "*")
    for bad in ("book:binance", "quote:binance:X", "book::X"):
        with pytest.raises(ValueError):
            parse_channel(bad)


def restarter(server: Any) -> Any:
    def restart() -> None:
        server.stop()
        server.start()
    return restart


def test_redis_source_reads_the_replay_in_order_across_a_restart(tmp_path: Path, redis_server: Any) -> None:
    want = load(tmp_path, f'[[sinks]]\ntype = "redis"\nurl = "{redis_server.url}"\nmaxlen = 0\nformat = "msgpack"\n')
    # a symbol's book and status events: two Redis streams, merged back into the daemon's order
    wanted = [e for e in want if type(e) in (Book, Status) and e.venue == "binance" and e.symbol == "BTC-USDT"]
    source = RedisSource(redis_server.url, ["book:binance:BTC-USDT", "status:binance:*"], format="msgpack",
                         batch=37, queue_size=5, backoff_base=0.05)
    wanted_all = [e for e in want if type(e) in (Book, Status) and e.venue == "binance"]
    got = asyncio.run(read(source, len(wanted_all), restarter(redis_server), at=len(wanted_all) // 2))
    assert source.connects >= 2  # it did reconnect
    # nothing lost, nothing twice; each stream in its order
    def per_stream(events: list[ev.Event]) -> dict[tuple, list[ev.Event]]:
        out: dict[tuple, list[ev.Event]] = {}
        for e in events:
            out.setdefault((type(e), e.venue, e.symbol), []).append(e)
        return out
    assert len(got) == len(wanted_all) and per_stream(got) == per_stream(wanted_all)
    # what a book depends on (its events and its book_invalid statuses) merged in the daemon's order;
    # other statuses with the same ts_recv as a book event may come before or after it
    def book_rules(events: list[ev.Event]) -> list[ev.Event]:
        return [e for e in events if type(e) is Book or (type(e) is Status and e.state == ev.BOOK_INVALID)]
    assert book_rules([e for e in got if e.symbol == "BTC-USDT"]) == book_rules(wanted)
    assert client_books(source) == books_of(want) and source.ignored_diffs == 0
    assert source.book("binance", "BTC-USDT") is not None or not books_of(want)[("binance", "BTC-USDT")][0]

    # resume from a position: a new source given the first one's position has nothing left to read,
    # one given no position reads the same streams again from their start
    async def resume() -> tuple[list[ev.Event], bool]:
        later = RedisSource(redis_server.url, source.channels, format="msgpack", start=dict(source.position), block=0.1)
        async with later:
            try:
                await later.next_event(timeout=1.0)
                nothing_left = False
            except TimeoutError:
                nothing_left = True
        again = RedisSource(redis_server.url, source.channels, format="msgpack")
        return await read(again, 3), nothing_left
    first, nothing_left = asyncio.run(resume())
    assert nothing_left and first == got[:3]


def test_nats_source_reads_the_replay_in_order_across_a_restart(tmp_path: Path, nats_server: Any) -> None:
    want = load(tmp_path, f'[[sinks]]\ntype = "nats"\nservers = ["{nats_server.url}"]\n')
    source = NatsSource(nats_server.url, ["*:binance:*"], batch=41, queue_size=5, backoff_base=0.05)
    got = asyncio.run(read(source, len(want), restarter(nats_server), at=len(want) // 2))
    assert source.connects >= 2
    assert got == want
    assert client_books(source) == books_of(want) and source.ignored_diffs == 0
    assert source.position == len(want)

    # by type: only the book stream of the symbol, from a sequence
    books = [e for e in want if type(e) is Book]
    only = NatsSource(nats_server.url, ["book:binance:BTC-USDT"], start=source.position // 2)
    half = [e for i, e in enumerate(want, 1) if i >= source.position // 2 and type(e) is Book]
    assert asyncio.run(read(only, len(half))) == half and half and len(half) < len(books)


def test_redis_and_nats_sources_from_now_get_only_new_events(tmp_path: Path, redis_server: Any, nats_server: Any) -> None:
    want = load(tmp_path, f'[[sinks]]\ntype = "redis"\nurl = "{redis_server.url}"\n'
                          f'[[sinks]]\ntype = "nats"\nservers = ["{nats_server.url}"]\n')
    fresh = want[-1]  # sent again after the sources started: the only event they may see

    async def tail() -> tuple[ev.Event, ev.Event]:
        import nats
        import redis.asyncio as aioredis

        redis_feed = RedisSource(redis_server.url, ["*:*:*"], start="$")
        nats_feed = NatsSource(nats_server.url, ["*:*:*"], start="new")
        async with redis_feed, nats_feed:
            await redis_feed.connected.wait()
            await nats_feed.connected.wait()
            client = aioredis.from_url(redis_server.url)
            await client.xadd(f"marketfeed:status:{fresh.venue}:{fresh.symbol or '_'}", {"data": ev.encode(fresh)})
            await client.aclose()
            nc = await nats.connect(nats_server.url)
            await nc.jetstream().publish(f"marketfeed.status.{fresh.venue}.{fresh.symbol or '_'}", ev.encode(fresh))
            await nc.close()
            return await redis_feed.next_event(timeout=30), await nats_feed.next_event(timeout=30)

    assert type(fresh) is Status
    assert asyncio.run(tail()) == (fresh, fresh)


def test_redis_source_says_book_invalid_when_the_stream_was_trimmed_past_its_position(tmp_path: Path, redis_server: Any) -> None:
    want = load(tmp_path, f'[[sinks]]\ntype = "redis"\nurl = "{redis_server.url}"\nmaxlen = 0\n')
    key = "marketfeed:book:binance:BTC-USDT"
    books = [e for e in want if type(e) is Book]

    async def run() -> tuple[list[ev.Event], list[ev.Event], int]:
        import redis.asyncio as aioredis

        first = RedisSource(redis_server.url, ["book:binance:BTC-USDT"])
        head = await read(first, 10)  # a bot that read 10 book events and went away
        client = aioredis.from_url(redis_server.url)
        await client.xtrim(key, maxlen=len(books) - 20, approximate=False)  # meanwhile 10 more are lost
        await client.aclose()
        later = RedisSource(redis_server.url, ["book:binance:BTC-USDT"], start=dict(first.position))
        rest = await read(later, 21)
        return head, rest, later.lost_streams

    head, rest, lost = asyncio.run(run())
    assert head == books[:10] and lost == 1
    gap = rest[0]
    assert type(gap) is Status and gap.state == ev.BOOK_INVALID and gap.symbol == "BTC-USDT"
    assert rest[1:] == books[20:40]  # then what Redis kept, from the first entry after the hole
