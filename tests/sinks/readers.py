"""Read back what a sink wrote, from the server, as events (the consumers' view)."""

from __future__ import annotations

import msgspec

from marketfeed.events import Book, Event, Status, Top, Trade

_json = msgspec.json.Decoder(Event)
_msgpack = msgspec.msgpack.Decoder(Event)


def decode(data: bytes, fmt: str = "json") -> Event:
    return (_json if fmt == "json" else _msgpack).decode(data)


async def redis_events(url: str, fmt: str = "json", pattern: str = "marketfeed:*") -> dict[str, list[Event]]:
    """Every stream matching ``pattern``: key -> its events in stream order."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        out: dict[str, list[Event]] = {}
        async for key in client.scan_iter(match=pattern, count=1000):
            entries = await client.xrange(key)
            out[key.decode()] = [decode(fields[b"data"], fmt) for _, fields in entries]
        return out
    finally:
        await client.aclose()


async def nats_events(url: str, fmt: str = "json", stream: str = "MARKETFEED") -> list[tuple[str, Event]]:
    """Every message in the stream, in stream order, as (subject, event)."""
    import nats

    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        total = info.state.messages
        out: list[tuple[str, Event]] = []
        if total == 0:
            return out
        sub = await js.pull_subscribe(f"{info.config.subjects[0]}", stream=stream)
        while len(out) < total:
            for msg in await sub.fetch(min(1000, total - len(out)), timeout=10):
                out.append((msg.subject, decode(msg.data, fmt)))
                await msg.ack()
        await sub.unsubscribe()
        return out
    finally:
        await nc.close()


async def postgres_events(dsn: str, schema: str = "public") -> list[Event]:
    """Every row of the four tables as events (table by table, in insertion order)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        out: list[Event] = []
        for r in await conn.fetch(f"SELECT * FROM {schema}.trades ORDER BY id"):
            out.append(Trade(r["venue"], r["symbol"], r["ts_recv"], r["ts_exchange"], r["trade_id"], r["price"], r["size"], r["side"]))
        for r in await conn.fetch(f"SELECT * FROM {schema}.book_events ORDER BY id"):
            out.append(Book(r["venue"], r["symbol"], r["ts_recv"], r["ts_exchange"], r["seq"], r["snapshot"],
                            list(zip(r["bid_prices"], r["bid_sizes"])), list(zip(r["ask_prices"], r["ask_sizes"])),
                            checksum=r["checksum"]))
        for r in await conn.fetch(f"SELECT * FROM {schema}.tops ORDER BY id"):
            out.append(Top(r["venue"], r["symbol"], r["ts_recv"], r["ts_exchange"], r["seq"],
                           list(zip(r["bid_prices"], r["bid_sizes"])), list(zip(r["ask_prices"], r["ask_sizes"]))))
        for r in await conn.fetch(f"SELECT * FROM {schema}.status_events ORDER BY id"):
            out.append(Status(r["venue"], r["symbol"], r["ts_recv"], r["state"], r["reason"]))
        return out
    finally:
        await conn.close()
