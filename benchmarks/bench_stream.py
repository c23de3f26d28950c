"""WebSocket stream fan-out (``make bench``): many clients on one busy book channel, on loopback.

One process runs the stream server (marketfeed.stream.server) fed by a DerivedFeed, exactly as in
the daemon; ``--procs`` other processes hold the clients (raw aiohttp WebSocket connections, each
subscribed to ``book:binance:BTC-USDT``). The server publishes book diffs at ``--rate`` per second,
each stamped with ``ts_recv = time.time_ns()`` just before ``publish``; every client records
``time.time_ns()`` on receipt minus ``ts_recv``: the latency the stream adds from publication to
the client (server queueing, encoding once, the per-client writes, the kernel, the client's read).

Printed: deliveries per second, latency p50/p99/max, and events lost (should be 0: send queues are
large enough here; a slow client would be re-snapshotted). This machine has 2 cores shared by the
server and the client processes, so the client side competes with the server for CPU.

    python benchmarks/bench_stream.py [--clients 500] [--rate 200] [--seconds 10] [--procs 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import time

import aiohttp
import msgspec

LEVELS = 18  # changed levels per diff, like Binance's BTCUSDT


def run_loop(coro):  # type: ignore[no-untyped-def]
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# --- server process -------------------------------------------------------------------------------


async def serve(args: argparse.Namespace, port_q: mp.Queue, go: mp.Event, done_q: mp.Queue) -> None:  # type: ignore[type-arg]
    from marketfeed.config import Config, VenueConfig
    from marketfeed.events import Book, Trade
    from marketfeed.options import ServerConfig
    from marketfeed.stream.server import StreamServer
    from marketfeed.top import DerivedFeed

    config = Config(
        venues={"binance": VenueConfig(symbols=["BTC-USDT"])}, sinks=[],
        server=ServerConfig(port=0, send_queue=100_000, idle_timeout=3600, heartbeat=60, rate_limit=1000, rate_burst=1000),
    )
    feed = DerivedFeed(config)
    server = StreamServer(config, feed.books)
    feed.outputs.append(server.publish)
    await server.start()
    bids = [(60000.0 - i * 0.1, 1.0) for i in range(1000)]
    asks = [(60000.1 + i * 0.1, 1.0) for i in range(1000)]
    seq = 1
    feed.publish([Book("binance", "BTC-USDT", time.time_ns(), None, seq, True, bids, asks)])
    port_q.put(server.port)
    key = ("book", "binance", "BTC-USDT")
    while len(server.routes.get(key, ())) < args.clients:
        await asyncio.sleep(0.05)
    go.set()
    await asyncio.sleep(0.5)  # let the snapshots drain
    interval = 1.0 / args.rate
    n = int(args.rate * args.seconds)
    loop = asyncio.get_running_loop()
    start = loop.time()
    cpu0 = time.process_time()  # the server process's CPU time: publish and the writes it leads to
    for i in range(n):
        seq += 1
        base = 60000.0 - (i % 50) * 0.1
        diff_bids = [(round(base - j * 0.1, 1), float(1 + (i + j) % 7)) for j in range(LEVELS // 2)]
        diff_asks = [(round(base + 0.1 + j * 0.1, 1), float(1 + (i + j) % 5)) for j in range(LEVELS // 2)]
        feed.publish([Book("binance", "BTC-USDT", time.time_ns(), None, seq, False, diff_bids, diff_asks)])
        delay = start + (i + 1) * interval - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
    await asyncio.sleep(0.2)  # the last writes
    busy = time.process_time() - cpu0
    elapsed = loop.time() - start
    await asyncio.sleep(1.0)
    feed.publish([Trade("binance", "BTC-USDT", time.time_ns(), None, "end", 1.0, 1.0, None)])
    done_q.put({"published": n, "publish_seconds": elapsed, "busy": busy, "counters": dict(server.counters)})
    await asyncio.sleep(3.0)
    await server.stop()


def server_main(args: argparse.Namespace, port_q: mp.Queue, go: mp.Event, done_q: mp.Queue) -> None:  # type: ignore[type-arg]
    run_loop(serve(args, port_q, go, done_q))


# --- client processes -----------------------------------------------------------------------------


class Msg(msgspec.Struct):
    type: str
    ts_recv: int = 0
    snapshot: bool = False
    trade_id: str = ""


async def clients(url: str, count: int, go: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    decode = msgspec.json.Decoder(Msg).decode
    latencies: list[int] = []
    received = [0]

    async def one(session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(url, heartbeat=None, max_msg_size=0) as ws:
            await ws.send_str('{"op":"subscribe","channels":["book:binance:BTC-USDT","trade:binance:BTC-USDT"],"id":1}')
            async for msg in ws:
                now = time.time_ns()
                m = decode(msg.data)
                if m.type == "book" and not m.snapshot:
                    latencies.append(now - m.ts_recv)
                    received[0] += 1
                elif m.type == "trade" and m.trade_id == "end":
                    return

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = []
        for _ in range(count):
            tasks.append(asyncio.create_task(one(session)))
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
    out.put(latencies)


def client_main(url: str, count: int, go: mp.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    run_loop(clients(url, count, go, out))


def pct(sorted_values: list[int], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description="stream fan-out latency")
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--rate", type=float, default=100.0, help="book diffs per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    port_q, done_q, out = ctx.Queue(), ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    server = ctx.Process(target=server_main, args=(args, port_q, go, done_q))
    server.start()
    port = port_q.get(timeout=30)
    url = f"ws://127.0.0.1:{port}/v1/stream"
    per = [args.clients // args.procs + (1 if i < args.clients % args.procs else 0) for i in range(args.procs)]
    procs = [ctx.Process(target=client_main, args=(url, n, go, out)) for n in per]
    for p in procs:
        p.start()
    summary = done_q.get(timeout=args.seconds * 10 + 120)
    latencies: list[int] = []
    for _ in procs:
        latencies.extend(out.get(timeout=120))
    for p in (*procs, server):
        p.join(timeout=10)
    latencies.sort()
    expected = summary["published"] * args.clients
    print(f"stream fan-out: {args.clients} clients on one book channel, {args.rate:g} diffs/s for {args.seconds:g} s "
          f"({os.cpu_count()} cores, {args.procs} client processes)")
    print(f"  delivered {len(latencies):,} of {expected:,} ({len(latencies) / summary['publish_seconds']:,.0f} messages/s to clients)")
    if latencies:
        print(f"  added latency publish -> client: p50 {pct(latencies, 0.50):.2f} ms  p99 {pct(latencies, 0.99):.2f} ms  "
              f"max {latencies[-1] / 1e6:.2f} ms")
    per_event = summary["busy"] / summary["published"]
    print(f"  server CPU: {per_event * 1e3:.2f} ms per event to {args.clients} clients "
          f"({per_event / args.clients * 1e6:.1f} us per delivery; {summary['busy'] / summary['publish_seconds']:.0%} of a core), "
          f"publishing took {summary['publish_seconds']:.1f} s")
    print(f"  server counters: {summary['counters']}")


if __name__ == "__main__":
    main()
