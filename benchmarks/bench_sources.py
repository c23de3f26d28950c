"""How fast a bot reads the daemon's events back from Redis Streams and NATS JetStream
(marketfeed.sources, with books kept): N book diffs over a snapshot, in a local redis-server and
nats-server started from tests/sinks/servers.py. Prints events/s.

    python benchmarks/bench_sources.py [--events 200000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marketfeed import events as ev
from marketfeed.sources import NatsSource, RedisSource
from tests.sinks.servers import Nats, Redis


def make_events(n: int) -> list[ev.Event]:
    bids = [(100.0 - i * 0.01, 1.0) for i in range(50)]
    asks = [(100.01 + i * 0.01, 1.0) for i in range(50)]
    out: list[ev.Event] = [ev.Book("binance", "BTC-USDT", 1, 1, 0, True, bids, asks)]
    for i in range(1, n):
        out.append(ev.Book("binance", "BTC-USDT", 1 + i, 1 + i, i, False, [(100.0 - (i % 50) * 0.01, float(i % 7))], []))
    return out


async def drain(source: RedisSource | NatsSource, n: int) -> float:
    start = time.perf_counter()
    async with source:
        for _ in range(n):
            await source.next_event(timeout=60)
    assert source.book("binance", "BTC-USDT") is not None
    return n / (time.perf_counter() - start)


async def load_redis(url: str, events: list[ev.Event]) -> None:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    for i in range(0, len(events), 5000):
        pipe = client.pipeline(transaction=False)
        for e in events[i:i + 5000]:
            pipe.xadd("marketfeed:book:binance:BTC-USDT", {"data": ev.encode(e)})
        await pipe.execute()
    await client.aclose()


async def load_nats(url: str, events: list[ev.Event]) -> None:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="MARKETFEED", subjects=["marketfeed.>"])
    for i in range(0, len(events), 5000):
        futures = [await js.publish_async("marketfeed.book.binance.BTC-USDT", ev.encode(e)) for e in events[i:i + 5000]]
        await asyncio.gather(*futures)
    await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    n = parser.parse_args().events
    events = make_events(n)
    for kind, load, source in (
        (Redis, load_redis, lambda s: RedisSource(s.url, ["book:binance:*"])),
        (Nats, load_nats, lambda s: NatsSource(s.url, ["book:binance:*"])),
    ):
        server = kind()
        try:
            server.start()
            asyncio.run(load(server.url, events))
            rate = asyncio.run(drain(source(server), n))
            print(f"{kind.__name__:5} source: {rate:,.0f} events/s ({n} book events, books kept)")
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
