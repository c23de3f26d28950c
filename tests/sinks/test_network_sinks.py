"""The redis, nats and postgres sinks against real servers on loopback: what a consumer reads back is
exactly what the bus was given, in JSON and MessagePack, and an outage (the real server stopped and
started again mid-stream) loses nothing within the sink's queue bound and counts the drops beyond it."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest

from marketfeed import events as ev
from marketfeed.bus import Bus
from marketfeed.events import Book, Event, Status, Top, Trade
from marketfeed.sinks.nats import NatsSink, NatsSinkConfig
from marketfeed.sinks.postgres import PostgresSink, PostgresSinkConfig
from marketfeed.sinks.redis import RedisSink, RedisSinkConfig
from tests.integration.live import wait_until
from tests.sinks.readers import nats_events, postgres_events, redis_events


def mixed(n: int) -> list[Event]:
    """Every event type, several venues and symbols, a venue-wide status, empty and long sides."""
    out: list[Event] = []
    for i in range(n):
        sym = ("BTC-USDT", "ETH-USDT", "SOL-USDT-PERP")[i % 3]
        venue = ("binance", "okx")[i % 2]
        k = i % 5
        if k == 0:
            out.append(Trade(venue, sym, 1_795_000_000_000_000_000 + i, 1_795_000_000_000_000_000 + i - 7, f"t{i}", 61800.25 + i, 0.001 * (i + 1), ("buy", "sell", None)[i % 3]))
        elif k == 1:
            out.append(Book(venue, sym, 1_795_000_000_000_000_000 + i, None, i, i % 10 == 1,
                            [(61800.1 - j, 1.5 + j) for j in range(i % 7)], [(61800.3, 0.0)], checksum=-123456 if i % 2 else None))
        elif k == 2:
            out.append(Top(venue, sym, 1_795_000_000_000_000_000 + i, 12345, i, [(100.5, 2.0)], [(100.75, 3.0), (101.0, 1.0)]))
        elif k == 3:
            out.append(Status(venue, None, 1_795_000_000_000_000_000 + i, ev.DISCONNECTED, "closed by peer"))
        else:
            out.append(Status(venue, sym, 1_795_000_000_000_000_000 + i, ev.BOOK_INVALID, None))
    return out


def trades(n: int, start: int = 0) -> list[Event]:
    return [Trade("binance", ("BTC-USDT", "ETH-USDT")[i % 2], 1_795_000_000_000_000_000 + i, None, str(i), 100.0 + i, 1.0, "buy")
            for i in range(start, start + n)]


def by_stream(events: list[Event], name: Any) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = {}
    for e in events:
        out.setdefault(name(e), []).append(e)
    return out


def redis_key(e: Event) -> str:
    return f"marketfeed:{e.type if hasattr(e, 'type') else type(e).__name__.lower()}:{e.venue}:{e.symbol or '_'}"


TYPE = {Trade: "trade", Book: "book", Top: "top", Status: "status"}


async def deliver(sink: Any, events: list[Event], batch: int = 37) -> Bus:
    bus = Bus()
    bus.add_sink(sink, 100_000, "drop_oldest")
    await bus.start()
    for i in range(0, len(events), batch):
        bus.publish(events[i : i + batch])
    assert await bus.close()
    return bus


# --- contents ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_redis_streams_hold_every_event_in_order_per_key(redis_server: Any, fmt: str) -> None:
    events = mixed(500)
    sink = RedisSink(RedisSinkConfig(url=redis_server.url, format=fmt, batch_size=100))
    bus = await deliver(sink, events)
    assert bus.counters()[sink.name]["written"] == 500
    got = await redis_events(redis_server.url, fmt)
    want = by_stream(events, lambda e: f"marketfeed:{TYPE[type(e)]}:{e.venue}:{e.symbol or '_'}")
    assert got == want


async def test_redis_key_template_and_approximate_maxlen(redis_server: Any) -> None:
    events = trades(3000)
    sink = RedisSink(RedisSinkConfig(url=redis_server.url, key="md.{venue}.{symbol}", maxlen=500))
    await deliver(sink, events, batch=100)
    got = await redis_events(redis_server.url, pattern="md.*")
    assert set(got) == {"md.binance.BTC-USDT", "md.binance.ETH-USDT"}
    for key, stream in got.items():
        want = [e for e in events if f"md.binance.{e.symbol}" == key]
        # approximate trimming keeps at least maxlen, the newest ones, and far fewer than all
        assert 500 <= len(stream) < len(want)
        assert stream == want[-len(stream):]


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_nats_jetstream_holds_every_event_on_its_subject(nats_server: Any, fmt: str) -> None:
    events = mixed(500)
    sink = NatsSink(NatsSinkConfig(servers=[nats_server.url], format=fmt, batch_size=100))
    await deliver(sink, events)
    got = await nats_events(nats_server.url, fmt)
    assert [e for _, e in got] == events
    assert [s for s, _ in got] == [f"marketfeed.{TYPE[type(e)]}.{e.venue}.{e.symbol or '_'}" for e in events]


async def test_nats_refuses_an_existing_stream_that_misses_our_subjects(nats_server: Any) -> None:
    import nats

    nc = await nats.connect(nats_server.url)
    await nc.jetstream().add_stream(name="MARKETFEED", subjects=["other.>"])
    await nc.close()
    sink = NatsSink(NatsSinkConfig(servers=[nats_server.url]))
    with pytest.raises(RuntimeError, match="captures"):
        await sink.start()
    await sink.close()


async def test_postgres_tables_hold_every_event(postgres_server: Any) -> None:
    events = mixed(500)
    sink = PostgresSink(PostgresSinkConfig(dsn=postgres_server.dsn, batch_size=100))
    await deliver(sink, events)
    got = await postgres_events(postgres_server.dsn)
    want = [e for t in (Trade, Book, Top, Status) for e in events if type(e) is t]
    assert got == want


# --- outages -------------------------------------------------------------------------------------

QUEUE = 2000


async def outage(server: Any, sink: Any, read: Any) -> None:
    """Up: 300 events. Down: 500 more (within the queue bound), then up: all 800 arrive. Down again:
    one batch in flight + 3000 more into a 2000-event queue: 1000 dropped and counted, the rest arrive
    after the restart. The bus's publish never waited throughout."""
    bus = Bus()
    channel = bus.add_sink(sink, QUEUE, "drop_oldest")
    await bus.start()
    sent = trades(300)
    for i in range(0, 300, 10):
        bus.publish(sent[i : i + 10])
    await wait_until(lambda: channel.written == 300, "300 written while the server is up")

    server.stop()
    more = trades(500, 300)
    for i in range(0, 500, 10):
        bus.publish(more[i : i + 10])
        await asyncio.sleep(0.002)  # the writer runs between batches: it fails and retries meanwhile
    await wait_until(lambda: sink.stats["failures"] > 0, "a failed write while the server is down")
    assert channel.dropped == 0 and channel.written < 800
    server.start()
    await wait_until(lambda: channel.written == 800, "everything written after the server returned", timeout=30)
    sent += more

    server.stop()
    first = trades(10, 800)
    bus.publish(first)
    await wait_until(lambda: channel.depth == 0 and sink.stats["failures"] > 1, "the writer holding a batch it cannot send")
    rest = trades(3000, 810)
    for i in range(0, 3000, 10):
        bus.publish(rest[i : i + 10])
    assert channel.depth == QUEUE and channel.dropped == 3000 - QUEUE
    server.start()
    await wait_until(lambda: channel.written == 800 + 10 + QUEUE, "the queued events written after the restart", timeout=30)
    assert await bus.close()
    sent += first + rest[-QUEUE:]
    counters = bus.counters()[sink.name]
    assert counters["dropped"] == 3000 - QUEUE and counters["retries"] >= 2 and counters["connects"] >= 3

    got = await read(server)
    ids = Counter(e.trade_id for e in got)
    missing = [e.trade_id for e in sent if e.trade_id not in ids]
    assert not missing, f"{len(missing)} events lost within the queue bound, e.g. {missing[:5]}"
    assert set(ids) == {e.trade_id for e in sent}  # nothing that was dropped appears
    return ids  # type: ignore[return-value]


def quick_retries() -> dict[str, float]:
    return {"retry_base": 0.05, "retry_cap": 0.3, "connect_timeout": 2.0}


async def test_redis_outage(redis_server: Any) -> None:
    async def read(server: Any) -> list[Event]:
        return [e for stream in (await redis_events(server.url)).values() for e in stream]

    await outage(redis_server, RedisSink(RedisSinkConfig(url=redis_server.url, **quick_retries())), read)


async def test_nats_outage_and_no_duplicates(nats_server: Any) -> None:
    async def read(server: Any) -> list[Event]:
        return [e for _, e in await nats_events(server.url)]

    sink = NatsSink(NatsSinkConfig(servers=[nats_server.url], ack_timeout=2.0, **quick_retries()))
    ids = await outage(nats_server, sink, read)
    # a batch sent again after the outage carries the same message ids: JetStream stored it once
    assert max(ids.values()) == 1


async def test_postgres_outage(postgres_server: Any) -> None:
    async def read(server: Any) -> list[Event]:
        return await postgres_events(server.dsn)

    await outage(postgres_server, PostgresSink(PostgresSinkConfig(dsn=postgres_server.dsn, **quick_retries())), read)


async def test_a_batch_the_server_keeps_refusing_is_given_up_and_the_sink_goes_on(redis_server: Any) -> None:
    """A stream key that is not a stream (WRONGTYPE) refuses every XADD: after give_up_after refusals
    on a working connection the batch is dropped and counted, and the next batches are written."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_server.url)
    await client.set("marketfeed:trade:binance:ETH-USDT", "not a stream")
    await client.aclose()
    sink = RedisSink(RedisSinkConfig(url=redis_server.url, give_up_after=3, **quick_retries()))
    bus = Bus()
    channel = bus.add_sink(sink, QUEUE, "drop_oldest")
    await bus.start()
    poison = trades(10)  # BTC-USDT and ETH-USDT alternate: the ETH-USDT commands fail
    bus.publish(poison)
    await wait_until(lambda: channel.errors == 1, "the poison batch given up")
    good = [Trade("binance", "BTC-USDT", 1, None, f"g{i}", 1.0, 1.0, "buy") for i in range(5)]
    bus.publish(good)
    assert await bus.close()
    counters = bus.counters()[sink.name]
    assert counters["given_up"] == 1 and counters["failures"] == 3 and counters["dropped"] == 10 and counters["written"] == 5
    streams = await redis_events(redis_server.url, pattern="marketfeed:trade:binance:BTC-USDT")
    # the pipeline ran its other commands (at-least-once), then the good batch followed
    assert streams["marketfeed:trade:binance:BTC-USDT"][-5:] == good
