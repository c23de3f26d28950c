"""The runtime's own rules, over real sockets, with a small scripted adapter (an Adapter subclass
written for the test, driving the real VenueRunner) against the loopback Binance server or a tiny
aiohttp app: send pacing, reconnect after a disconnect, final disconnects, failed connects retried,
REST errors delivered as status 0, adapter bugs contained, conn ids unique, stop at any moment."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from marketfeed.capture import Rest, read_capture
from marketfeed.config import Backoff, VenueConfig
from marketfeed.events import Event, Status
from marketfeed.protocol import Adapter, Connect, Disconnect, Fetch, Send
from marketfeed.recorder import Recorder
from marketfeed.runtime.venue import VenueRunner
from marketfeed.simulate.binance import BinanceSimulator
from tests.integration.live import wait_until

pytestmark = pytest.mark.timeout(60)


class Scripted(Adapter):
    """Connects to ``url`` on start and lets the test script the rest through hooks."""

    venue = "test"

    def __init__(self, url: str, **hooks: Callable[..., None]) -> None:
        super().__init__()
        self.url = url
        self.hooks = hooks
        self.opens: list[tuple[str, Any]] = []
        self.frames: list[tuple[str, str | bytes]] = []
        self.closes: list[tuple[str, int | None, str | None]] = []
        self.rests: list[tuple[str, int, str]] = []
        self.ticks = 0

    def start(self, ts: int) -> None:
        self.commands.append(Connect(self.url, {"n": 1}))

    def on_open(self, conn: str, ts: int, url: str, plan: Any = None) -> None:
        self.opens.append((conn, plan))
        self.events.append(Status(self.venue, None, ts, "connected", url))
        if "open" in self.hooks:
            self.hooks["open"](self, conn)

    def on_frame(self, conn: str, ts: int, data: str | bytes) -> None:
        self.frames.append((conn, data))
        if "frame" in self.hooks:
            self.hooks["frame"](self, conn, data)

    def on_close(self, conn: str, ts: int, code: int | None, reason: str | None) -> None:
        self.closes.append((conn, code, reason))
        self.events.append(Status(self.venue, None, ts, "disconnected", reason))

    def on_rest(self, ts: int, url: str, status: int, body: str) -> None:
        self.rests.append((url, status, body))

    def on_tick(self, ts: int) -> None:
        self.ticks += 1


def config(**kw: Any) -> VenueConfig:
    settings: dict[str, Any] = {"backoff": Backoff(base=0.02, cap=0.05, reset_after=5.0), "stale_after": 5.0}
    settings.update(kw)
    return VenueConfig(symbols=["BTC-USDT"], **settings)


class Running:
    def __init__(self, adapter: Adapter, cfg: VenueConfig | None = None, recorder: Any = None, **kw: Any) -> None:
        self.events: list[Event] = []
        self.runner = VenueRunner(adapter, cfg or config(), self.events.extend, recorder, close_timeout=0.5, **kw)

    async def __aenter__(self) -> VenueRunner:
        self.task = asyncio.get_running_loop().create_task(self.runner.run())
        return self.runner

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.stop()
        await self.task


@pytest.fixture
async def sim():
    server = BinanceSimulator(seed=3, interval=0.05, ping_interval=5.0)
    await server.start()
    yield server
    await server.stop()


def list_requests(n: int) -> Callable[[Scripted, str], None]:
    def on_open(adapter: Scripted, conn: str) -> None:
        for i in range(n):
            adapter.commands.append(Send(conn, f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}'))

    return on_open


async def test_sends_are_paced_under_the_venues_incoming_limit(sim: BinanceSimulator) -> None:
    adapter = Scripted(sim.ws_url + "/stream", open=list_requests(12))
    adapter.max_sends_per_second = 4  # Binance spot allows 5 incoming messages a second
    async with Running(adapter) as runner:
        await wait_until(lambda: len(adapter.frames) == 12, "12 replies")
        assert runner.counters["sends"] == 12
    assert [f'{{"method":"LIST_SUBSCRIPTIONS","id":{i}}}' for i in range(12)] == sim.connections[0].received
    assert sim.rate_limit_disconnects == 0
    assert len(sim.connections) == 1


async def test_without_pacing_the_same_burst_gets_disconnected(sim: BinanceSimulator) -> None:
    # the control for the test above: the server's limit is real, so the pacing is what saved us
    adapter = Scripted(sim.ws_url + "/stream", open=list_requests(12))
    async with Running(adapter):
        await wait_until(lambda: sim.rate_limit_disconnects >= 1, "a rate-limit disconnect")
        await wait_until(lambda: len(adapter.closes) >= 1, "the close seen by the adapter")


async def test_disconnect_reconnects_unless_final(sim: BinanceSimulator, tmp_path) -> None:
    def on_open(adapter: Scripted, conn: str) -> None:
        final = len(adapter.opens) == 2
        adapter.commands.append(Disconnect(conn, "final" if final else "again", final=final))

    adapter = Scripted(sim.ws_url + "/stream", open=on_open)
    recorder = Recorder(tmp_path, ["test"], gzip=False)
    async with Running(adapter, recorder=recorder) as runner:
        await wait_until(lambda: len(adapter.closes) == 2, "two closes")
        await wait_until(lambda: runner.connections()[0]["state"] == "closed", "the link ends")
        assert runner.reconnects == 1
    recorder.close()
    (c1, p1), (c2, p2) = adapter.opens
    assert c1 != c2 and p1 == p2 == {"n": 1}  # a new conn id, the same plan
    assert adapter.closes == [(c1, 1000, "again"), (c2, 1000, "final")]
    assert len(sim.connections) == 2
    _, it = read_capture(recorder.files[0])
    recs = list(it)
    kinds = [(type(r).__name__, getattr(r, "conn", None)) for r in recs]
    assert kinds == [("Open", c1), ("Close", c1), ("Open", c2), ("Close", c2)]
    assert recs[0].plan == {"n": 1}


async def test_failed_connects_are_retried_with_backoff() -> None:
    attempts = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            return web.Response(status=503)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hello")
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner_ = web.AppRunner(app, shutdown_timeout=1.0)
    await runner_.setup()
    site = web.TCPSite(runner_, "127.0.0.1", 0)
    await site.start()
    port = runner_.addresses[0][1]
    try:
        adapter = Scripted(f"ws://127.0.0.1:{port}/ws")
        async with Running(adapter) as runner:
            await wait_until(lambda: adapter.frames, "the greeting after two refusals")
            assert runner.counters["connect_failures"] == 2
            assert runner.reconnects == 2
            assert len(adapter.opens) == 1  # failed attempts never reach the adapter
        assert adapter.frames[0][1] == "hello"
    finally:
        await runner_.cleanup()


async def refusing_server(times: list[float]) -> web.AppRunner:
    """An HTTP server that refuses every WebSocket upgrade (503), noting when each attempt came."""

    async def handler(request: web.Request) -> web.StreamResponse:
        times.append(time.monotonic())
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner_ = web.AppRunner(app, shutdown_timeout=1.0)
    await runner_.setup()
    await web.TCPSite(runner_, "127.0.0.1", 0).start()
    return runner_


async def test_connection_attempts_stay_within_the_venues_connect_budget() -> None:
    times: list[float] = []
    server = await refusing_server(times)
    try:
        adapter = Scripted(f"ws://127.0.0.1:{server.addresses[0][1]}/ws")
        adapter.connect_budget = (3, 0.5)  # at most 3 attempts in any 0.5 s, whatever the backoff says
        async with Running(adapter) as runner:
            await wait_until(lambda: len(times) >= 8, "eight refused attempts")
        assert runner.counters["connect_budget_waits"] > 0
        # the server saw no four attempts within one window (a little slack for scheduling)
        assert all(times[i + 3] - times[i] >= 0.45 for i in range(len(times) - 3)), times
    finally:
        await server.cleanup()


async def test_after_the_fast_retries_reconnects_wait_the_venues_minimum() -> None:
    times: list[float] = []
    server = await refusing_server(times)
    try:
        adapter = Scripted(f"ws://127.0.0.1:{server.addresses[0][1]}/ws")
        adapter.reconnect_fast_attempts = 2
        adapter.reconnect_min_interval = 0.3
        async with Running(adapter):
            await wait_until(lambda: len(times) >= 6, "six refused attempts")
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(g >= 0.28 for g in gaps[2:]), gaps  # the first two retries follow the backoff alone
    finally:
        await server.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_rest_failure_is_delivered_as_status_zero_and_recorded(tmp_path) -> None:
    port = free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}/api/v3/depth?symbol=BTCUSDT"

    class Fetching(Scripted):
        def start(self, ts: int) -> None:
            self.commands.append(Fetch(url, weight=5))

    adapter = Fetching("unused")
    recorder = Recorder(tmp_path, ["test"])
    async with Running(adapter, recorder=recorder) as runner:
        await wait_until(lambda: adapter.rests, "the REST answer")
        assert runner.rest_requests == 1 and runner.rest_weight == 5
    recorder.close()
    assert adapter.rests == [(url, 0, "")]
    _, recs = read_capture(recorder.files[0])
    [rest] = recs
    assert isinstance(rest, Rest) and rest.status == 0 and rest.error == "ClientConnectorError"


async def test_adapter_exceptions_are_contained(sim: BinanceSimulator) -> None:
    def frame(adapter: Scripted, conn: str, data: str | bytes) -> None:
        if len(adapter.frames) % 2:
            raise RuntimeError("adapter bug")
        adapter.events.append(Status("test", None, 0, "error", "even frame"))

    adapter = Scripted(sim.ws_url + "/stream", open=list_requests(4), frame=frame)
    adapter.max_sends_per_second = 4
    async with Running(adapter) as running:
        await wait_until(lambda: len(adapter.frames) == 4, "every reply, bug or not")
        assert running.counters["adapter_errors"] == 2
        assert running.reconnects == 0


async def test_conn_ids_are_unique_across_runners(sim: BinanceSimulator) -> None:
    a = Scripted(sim.ws_url + "/stream")
    b = Scripted(sim.ws_url + "/stream")
    async with Running(a), Running(b):
        await wait_until(lambda: a.opens and b.opens, "both open")
    assert a.opens[0][0] != b.opens[0][0]
    assert a.opens[0][0].startswith("test-")


async def test_stop_while_waiting_to_reconnect_returns_promptly() -> None:
    port = free_port()
    adapter = Scripted(f"ws://127.0.0.1:{port}/ws")
    cfg = config(backoff=Backoff(base=30.0, cap=60.0))
    running = Running(adapter, cfg, rand=lambda: 1.0)  # the next attempt would be 30 s away
    async with running as runner:
        await wait_until(lambda: runner.counters["connect_failures"] == 1, "one failed connect")
    assert running.task.done()
    assert adapter.opens == [] and adapter.closes == []


async def test_stop_before_run_and_ticks(sim: BinanceSimulator) -> None:
    adapter = Scripted(sim.ws_url + "/stream")
    runner = VenueRunner(adapter, config(), lambda events: None, tick_interval=0.02)
    task = asyncio.get_running_loop().create_task(runner.run())
    await wait_until(lambda: adapter.ticks >= 3, "three ticks")
    await runner.stop()
    await task
    assert adapter.closes and adapter.closes[-1][2] == "shutdown"

    idle = VenueRunner(Scripted("ws://unused"), config(), lambda events: None)
    await idle.stop()  # never ran: nothing to close, returns at once


async def test_a_failing_recorder_does_not_stop_the_feed(sim: BinanceSimulator, tmp_path) -> None:
    adapter = Scripted(sim.ws_url + "/stream", open=list_requests(4))
    adapter.max_sends_per_second = 4
    recorder = Recorder(tmp_path, ["test"])
    async with Running(adapter, recorder=recorder) as runner:
        await wait_until(lambda: len(adapter.frames) >= 1, "a first reply")
        recorder.close()  # every later write raises, as a full disk would
        await wait_until(lambda: len(adapter.frames) == 4, "every reply")
        assert runner.counters["record_errors"] >= 3
        assert runner.reconnects == 0
    assert runner.counters["runtime_errors"] == 0
