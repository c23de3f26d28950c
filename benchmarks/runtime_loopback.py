"""How many WebSocket frames a second the live runtime carries from a socket to an adapter.

A loopback aiohttp server sends N Binance-sized diff frames as fast as it can; a VenueRunner feeds them
to an adapter that only counts (so this measures the runtime: aiohttp's reader, our receive loop, the
timestamp, the stale bookkeeping and, optionally, the recorder). Run:

    .venv/bin/python benchmarks/runtime_loopback.py [frames]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time

from aiohttp import web

from marketfeed.protocol import Adapter, Connect
from marketfeed.recorder import Recorder
from marketfeed.runtime.venue import VenueRunner

FRAME = (
    '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255319,"s":"BTCUSDT",'
    '"U":5123107852949,"u":5123107852960,"b":[["61800.20000000","2.90900000"],["61800.10000000",'
    '"0.69600000"],["61799.00000000","0.00000000"]],"a":[["61800.30000000","2.51000000"],'
    '["61801.00000000","0.10000000"]]}}'
)


class Counting(Adapter):
    venue = "bench"

    def __init__(self, url: str, total: int, done: asyncio.Event) -> None:
        super().__init__()
        self.url, self.total, self.done, self.n = url, total, done, 0

    def start(self, ts: int) -> None:
        self.commands.append(Connect(self.url))

    def on_frame(self, conn: str, ts: int, data: str | bytes) -> None:
        self.n += 1
        if self.n == self.total:
            self.done.set()


async def run(total: int, record: bool) -> float:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        for _ in range(total):
            await ws.send_str(FRAME)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    done = asyncio.Event()
    adapter = Counting(f"ws://127.0.0.1:{port}/ws", total, done)
    with tempfile.TemporaryDirectory() as tmp:
        recorder = Recorder(tmp, ["bench"]) if record else None
        venue = VenueRunner(adapter, None, lambda events: None, recorder)
        task = asyncio.get_running_loop().create_task(venue.run())
        t0 = time.perf_counter()
        await done.wait()
        elapsed = time.perf_counter() - t0
        await venue.stop()
        await task
        if recorder is not None:
            recorder.close()
    await runner.cleanup()
    return total / elapsed


def main() -> None:
    total = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    try:
        import uvloop

        loops = [("asyncio", asyncio.run), ("uvloop", uvloop.run)]
    except ImportError:
        loops = [("asyncio", asyncio.run)]
    for name, runner in loops:
        for record in (False, True):
            rate = runner(run(total, record))
            print(f"{name:8} recorder={'gzip' if record else 'off ':4}  {rate:>10,.0f} frames/s  ({total:,} frames, sender in the same process)")


if __name__ == "__main__":
    main()
