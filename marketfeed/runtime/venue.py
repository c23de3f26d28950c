"""The live runtime of one venue: the only place where marketfeed touches the network.

``VenueRunner`` drives one pure adapter (marketfeed/protocol.py) with real I/O: it opens the
WebSockets the adapter asks for (one task per connection, reconnecting with jittered backoff), reads
frames, carries out sends (paced per connection), REST fetches (through the venue's weight budget) and
disconnects, ticks the adapter once a second, and hands every event batch to ``publish``.

Everything the adapter is fed is recorded first (when a recorder is given), in the same synchronous
step, so the capture holds the adapter's inputs in exactly the order it saw them and replaying it gives
exactly the live events.

Failure policy: a venue's misbehaviour (close, silence, 5xx, 429) is logged, counted and handed to the
adapter, which turns it into status events. An exception raised by the adapter or by ``publish`` is a
bug: it is logged with its traceback and counted, and the runner carries on with the next input.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog
from aiohttp import WSMsgType

from marketfeed.config import VenueConfig
from marketfeed.events import Event
from marketfeed.logging import RateLimitedLog
from marketfeed.protocol import Adapter, Connect, Disconnect, Fetch, Send
from marketfeed.runtime.backoff import ReconnectBackoff
from marketfeed.runtime.budget import WeightBudget

log = structlog.get_logger("marketfeed.runtime")

MAX_MSG_SIZE = 16 * 1024 * 1024  # unless the adapter says otherwise (max_frame_bytes)
DEFAULT_REST_WEIGHT_PER_MINUTE = 1200  # a conservative share when neither config nor adapter says
FETCH_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0  # how long a close waits for the peer's close frame before dropping the TCP
TICK_INTERVAL = 1.0
RETRY_AFTER_DEFAULT = 60.0  # a 429/418 without a usable Retry-After header

# conn ids are unique in the process (and so in every recording it writes), across venues and runners
_conn_numbers = itertools.count(1)

CONNECTING = "connecting"
OPEN = "open"
CLOSED = "closed"


class _Link:
    """One ``Connect`` command: a url/plan kept connected, under a new conn id after every reconnect,
    until the adapter disconnects it with ``final`` or the runner stops."""

    __slots__ = (
        "url", "plan", "replaces", "backoff", "task", "conn", "state", "ws", "end", "final",
        "reconnects", "opened_at", "last_frame", "frames", "sends", "sender", "watchdog",
    )

    def __init__(self, url: str, plan: Any, replaces: str | None, backoff: ReconnectBackoff) -> None:
        self.url = url
        self.plan = plan
        self.replaces = replaces
        self.backoff = backoff
        self.task: asyncio.Task[None] | None = None
        self.conn: str | None = None
        self.state = CONNECTING
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.end: tuple[int | None, str] | None = None  # set when we end the connection ourselves
        self.final = False
        self.reconnects = 0
        self.opened_at = 0.0
        self.last_frame = 0.0
        self.frames = 0
        self.sends: deque[str] = deque()
        self.sender: asyncio.Task[None] | None = None
        self.watchdog: asyncio.Task[None] | None = None


class VenueRunner:
    """Runs one venue's adapter against the network.

    ``publish`` is called with each non-empty list of events, synchronously, in order. ``recorder``
    (marketfeed.recorder.Recorder or a CaptureWriter) gets every input the adapter is fed.
    ``session``: an aiohttp ClientSession to use (the runner then does not close it); by default the
    runner owns one session for the venue.
    """

    def __init__(
        self,
        adapter: Adapter,
        venue_config: VenueConfig | None,
        publish: Callable[[list[Event]], Any],
        recorder: Any = None,
        session: aiohttp.ClientSession | None = None,
        *,
        close_timeout: float = CLOSE_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        fetch_timeout: float = FETCH_TIMEOUT,
        tick_interval: float = TICK_INTERVAL,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.adapter = adapter
        self.venue = adapter.venue
        self.config = venue_config
        self.publish = publish
        self.recorder = recorder
        self._session = session
        self._own_session = session is None
        self.close_timeout = close_timeout
        self.connect_timeout = connect_timeout
        self.fetch_timeout = fetch_timeout
        self.tick_interval = tick_interval
        self._rand = rand

        # the adapter's runtime hints: class or instance attributes, all optional
        stale = venue_config.stale_after if venue_config is not None else None
        self.stale_after: float | None = stale if stale is not None else getattr(adapter, "default_stale_after", None)
        rate = getattr(adapter, "max_sends_per_second", None)
        self.send_interval = 1.0 / rate if rate else 0.0
        self.ws_heartbeat: float | None = getattr(adapter, "ws_heartbeat", None)
        self.max_frame_bytes: int = getattr(adapter, "max_frame_bytes", None) or MAX_MSG_SIZE
        # the venue's connect-rate rules (EXCHANGES.md 8): a floor on the delay once the first fast
        # retries are spent, and at most N connection attempts in any window of W seconds, shared by
        # every connection of the venue
        self.fast_attempts: int | None = getattr(adapter, "reconnect_fast_attempts", None)
        self.min_reconnect_interval: float = getattr(adapter, "reconnect_min_interval", 0.0) or 0.0
        self.connect_budget: tuple[int, float] | None = getattr(adapter, "connect_budget", None)
        self._attempts: deque[float] = deque()
        per_minute = venue_config.snapshot_weight_per_minute if venue_config is not None else None
        if per_minute is None:
            per_minute = getattr(adapter, "rest_weight_per_minute", None) or DEFAULT_REST_WEIGHT_PER_MINUTE
        # the burst is a sixth of the minute's weight: a mass resync starts at once with a few
        # symbols, then proceeds at the refill rate instead of spending the whole minute in one go
        self.budget = WeightBudget(per_minute, capacity=max(per_minute / 6.0, 1.0))
        self._backoff_config = venue_config.backoff if venue_config is not None else None

        self.links: list[_Link] = []
        self._by_conn: dict[str, _Link] = {}
        self._fetches: set[asyncio.Task[None]] = set()
        self._closers: set[asyncio.Task[None]] = set()
        self._tick_task: asyncio.Task[None] | None = None
        self._ctx: contextvars.Context | None = None
        self._stop_requested = asyncio.Event()
        self._done = asyncio.Event()
        self._started = False
        self._running = False
        self._stopping = False
        self._ratelog = RateLimitedLog(log, interval_s=10.0)

        # simple state for metrics and tests
        self.counters: Counter[str] = Counter()
        self.rest_requests = 0
        self.rest_weight = 0
        self.reconnects = 0

    # -- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the adapter and carry out its commands until ``stop()``; then shut down in order."""
        if self._started:
            raise RuntimeError("VenueRunner.run() may be called once")
        self._started = True
        if self._stop_requested.is_set():
            return  # stopped before it ran: nothing to start, nothing to close
        self._running = True
        with structlog.contextvars.bound_contextvars(venue=self.venue):
            try:
                if self._session is None:
                    self._session = aiohttp.ClientSession()
                # tasks we start get this context: the venue bound, no stray conn of whoever started them
                self._ctx = contextvars.copy_context()
                log.info("venue starting", stale_after=self.stale_after, rest_weight_per_minute=self.budget.per_minute)
                self._call(self.adapter.start, time.time_ns())
                self._tick_task = self._spawn(self._tick_loop())
                await self._stop_requested.wait()
            finally:
                await self._shutdown()
                self._running = False

    async def stop(self) -> None:
        """Stop intake, close every connection (code 1000, "shutdown"), let the adapter see the closes
        (its disconnect events are published), cancel pending fetches; returns when all is done."""
        self._stop_requested.set()
        if self._running:
            await self._done.wait()
        elif not self._done.is_set():
            await self._shutdown()

    async def _shutdown(self) -> None:
        if self._stopping:
            await self._done.wait()
            return
        self._stopping = True
        if self._tick_task is not None:
            self._tick_task.cancel()
        for task in list(self._fetches):
            task.cancel()
        tasks = []
        for link in self.links:
            if link.task is None or link.task.done():
                continue
            tasks.append(link.task)
            if link.state == OPEN and link.ws is not None:
                self._end(link, 1000, "shutdown")
            else:
                link.task.cancel()  # connecting or waiting to reconnect: nothing opened to close
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.close_timeout + 1.0)
            for task in pending:
                task.cancel()
        leftovers = [t for t in (*self._fetches, *self._closers) if not t.done()]
        if leftovers:
            _, pending = await asyncio.wait(leftovers, timeout=self.close_timeout + 1.0)
            for task in pending:
                task.cancel()
        if self._tick_task is not None:
            await asyncio.gather(self._tick_task, return_exceptions=True)
        if self._own_session and self._session is not None:
            await self._session.close()
        log.info("venue stopped", reconnects=self.reconnects, rest_requests=self.rest_requests)
        self._done.set()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        ctx = self._ctx.copy() if self._ctx is not None else None
        task = asyncio.get_running_loop().create_task(coro, context=ctx)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # every task catches what it expects: this is a bug, say so loudly
            self.counters["runtime_errors"] += 1
            log.error("runtime task failed (a bug)", task=task.get_coro().__qualname__, exc_info=exc)

    # -- state for metrics ------------------------------------------------------------------------

    def connections(self) -> list[dict[str, Any]]:
        """One entry per connection the adapter asked for: its current conn id, url, state
        (connecting/open/closed) and how often it reconnected."""
        return [
            {"conn": k.conn, "url": k.url, "state": k.state, "reconnects": k.reconnects, "frames": k.frames}
            for k in self.links
        ]

    # -- adapter calls ----------------------------------------------------------------------------

    def _call(self, method: Callable[..., None], *args: Any) -> None:
        """Feed the adapter one input, publish what it produced, carry out what it asked for."""
        adapter = self.adapter
        try:
            method(*args)
        except Exception:
            self.counters["adapter_errors"] += 1
            log.exception("adapter raised (a bug); input skipped", input=method.__name__)
        if adapter.events:
            events = adapter.take_events()
            try:
                self.publish(events)
            except Exception:
                self.counters["publish_errors"] += 1
                log.exception("publish raised (a bug); events lost", events=len(events))
        if adapter.commands:
            for command in adapter.take_commands():
                try:
                    self._execute(command)
                except Exception:
                    self.counters["command_errors"] += 1
                    log.exception("command failed (a bug)", command=repr(command))

    def _execute(self, command: Any) -> None:
        kind = type(command)
        if kind is Send:
            self._send(command)
        elif kind is Fetch:
            if self._stopping:
                return
            task = self._spawn(self._fetch(command))
            self._fetches.add(task)
            task.add_done_callback(self._fetches.discard)
        elif kind is Connect:
            if self._stopping:
                return
            self._connect(command)
        elif kind is Disconnect:
            self._disconnect(command)
        else:
            self.counters["unknown_commands"] += 1
            log.error("unknown command from adapter", command=repr(command))

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            self._call(self.adapter.on_tick, time.time_ns())

    # -- connections ------------------------------------------------------------------------------

    def _new_backoff(self) -> ReconnectBackoff:
        b = self._backoff_config
        if b is None:
            return ReconnectBackoff(rand=self._rand)
        return ReconnectBackoff(b.base, b.cap, b.reset_after, rand=self._rand)

    def _connect(self, command: Connect) -> None:
        link = _Link(command.url, command.plan, command.replaces, self._new_backoff())
        # forget links that ended for good (replaced connections), so a long run does not accumulate them
        self.links = [k for k in self.links if k.task is None or not k.task.done()]
        self.links.append(link)
        link.task = self._spawn(self._link_loop(link))

    def _disconnect(self, command: Disconnect) -> None:
        link = self._by_conn.get(command.conn)
        if link is None:
            self.counters["disconnect_unknown_conn"] += 1
            log.warning("disconnect for an unknown connection ignored", conn=command.conn)
            return
        if command.final:
            link.final = True
        if link.conn == command.conn and link.state == OPEN:
            self._end(link, 1000, command.reason)
        elif command.final and link.task is not None and link.state != OPEN:
            # it already ended and waits to reconnect: the adapter no longer wants it
            link.task.cancel()

    def _end(self, link: _Link, code: int | None, reason: str, close_code: int = 1000) -> None:
        """End the open connection of ``link`` ourselves: its receive loop sees the close at once and
        reports ``code``/``reason``; the close handshake finishes in the background."""
        ws = link.ws
        if ws is None or link.end is not None:
            return
        link.end = (code, reason)
        message = reason.encode()[:123]  # a close frame's reason is at most 123 bytes
        closer = self._spawn(self._close_ws(ws, close_code, message))
        self._closers.add(closer)
        closer.add_done_callback(self._closers.discard)

    async def _close_ws(self, ws: aiohttp.ClientWebSocketResponse, code: int, message: bytes) -> None:
        try:
            await ws.close(code=code, message=message)
        except Exception as exc:  # the socket is already gone: nothing left to close
            log.debug("close failed", error=repr(exc))

    async def _link_loop(self, link: _Link) -> None:
        try:
            while not self._stopping and not link.final:
                conn = f"{self.venue}-{next(_conn_numbers)}"
                if link.conn is not None:
                    self._by_conn.pop(link.conn, None)
                link.conn = conn
                self._by_conn[conn] = link
                with structlog.contextvars.bound_contextvars(conn=conn):
                    try:
                        healthy_for = await self._connection(link, conn)
                    except asyncio.CancelledError:
                        raise
                    except Exception:  # a bug: keep the link alive, it reconnects with backoff
                        self.counters["runtime_errors"] += 1
                        log.exception("connection task failed (a bug)")
                        healthy_for = 0.0
                if self._stopping or link.final:
                    break
                delay = link.backoff.next_delay(healthy_for)
                if self.fast_attempts is not None and link.backoff.attempt > self.fast_attempts:
                    delay = max(delay, self.min_reconnect_interval)
                link.reconnects += 1
                self.reconnects += 1
                log.info("reconnect scheduled", conn=conn, delay=round(delay, 3), attempt=link.backoff.attempt, url=link.url)
                await asyncio.sleep(delay)
        finally:
            link.state = CLOSED
            if link.conn is not None and link.final:
                self._by_conn.pop(link.conn, None)

    async def _connection(self, link: _Link, conn: str) -> float:
        """One connection attempt and, if it opens, its whole life. Returns how long it delivered data."""
        link.state = CONNECTING
        link.end = None
        session = self._session
        assert session is not None
        await self._connect_slot()
        try:
            async with asyncio.timeout(self.connect_timeout):
                ws = await session.ws_connect(
                    link.url,
                    autoping=True,  # answers the venue's pings (Binance: every 20 s, pong within 1 min)
                    heartbeat=self.ws_heartbeat,
                    max_msg_size=self.max_frame_bytes,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self.close_timeout),
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters["connect_failures"] += 1
            log.warning("connect failed", url=link.url, error=f"{type(exc).__name__}: {exc}")
            return 0.0
        if self._stopping:
            await self._close_ws(ws, 1000, b"shutdown")
            return 0.0

        link.ws = ws
        link.state = OPEN
        link.opened_at = link.last_frame = time.monotonic()
        ts = time.time_ns()
        if self.recorder is not None:
            self._record(self.recorder.open, ts, conn, self.venue, link.url, link.plan)
        log.info("connected", url=link.url, replaces=link.replaces)
        self._call(self.adapter.on_open, conn, ts, link.url, link.plan)
        if self.stale_after is not None:
            link.watchdog = self._spawn(self._watch_stale(link, conn, self.stale_after))

        code: int | None = None
        reason: str
        try:
            code, reason = await self._receive_loop(link, conn, ws)
        except asyncio.CancelledError:
            # cancelled while open (stop timed out): still tell the adapter the connection is gone
            self._closed(link, conn, ws, None, "cancelled")
            raise
        except Exception as exc:  # a bug in the runtime: end this connection cleanly, reconnect
            self.counters["runtime_errors"] += 1
            log.exception("receive loop failed (a bug)")
            code, reason = None, f"error: {type(exc).__name__}: {exc}"
        self._closed(link, conn, ws, code, reason)
        return link.last_frame - link.opened_at

    async def _connect_slot(self) -> None:
        """Wait until one more connection attempt fits the venue's budget, then count it."""
        if self.connect_budget is None:
            return
        limit, window = self.connect_budget
        attempts = self._attempts
        while True:
            now = time.monotonic()
            while attempts and attempts[0] <= now - window:
                attempts.popleft()
            if len(attempts) < limit:
                attempts.append(now)
                return
            wait = attempts[0] + window - now
            self.counters["connect_budget_waits"] += 1
            log.warning("connection attempts at the venue's limit: waiting", limit=limit, window=window, wait=round(wait, 3))
            await asyncio.sleep(wait)

    async def _receive_loop(self, link: _Link, conn: str, ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
        receive = ws.receive
        recorder = self.recorder
        record = recorder.recv if recorder is not None else None
        on_frame = self.adapter.on_frame
        call = self._call
        time_ns = time.time_ns
        monotonic = time.monotonic
        TEXT, BINARY = WSMsgType.TEXT, WSMsgType.BINARY
        while True:
            try:
                msg = await receive()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # aiohttp reports most ends as messages; anything else ends it too
                if link.end is not None:
                    return link.end
                return ws.close_code, f"error: {type(exc).__name__}: {exc}"
            kind = msg.type
            if kind is TEXT or kind is BINARY:
                ts = time_ns()
                link.last_frame = monotonic()
                link.frames += 1
                data = msg.data
                if record is not None:
                    try:
                        record(ts, conn, data)
                    except Exception as exc:
                        self._record_failed(exc, ts)
                call(on_frame, conn, ts, data)
                continue
            if link.end is not None:  # we ended it (stale, adapter's Disconnect, shutdown)
                return link.end
            if kind is WSMsgType.CLOSE:  # the venue closed it with a close frame
                return msg.data, (msg.extra or "closed by server")
            if kind is WSMsgType.ERROR:
                return ws.close_code, f"error: {msg.data!r}"
            # CLOSED / CLOSING: the TCP connection went away without a close frame
            exc = ws.exception()
            return ws.close_code, "connection lost" + (f": {exc!r}" if exc is not None else "")

    def _closed(self, link: _Link, conn: str, ws: aiohttp.ClientWebSocketResponse, code: int | None, reason: str) -> None:
        if code is not None:
            code = int(code)  # aiohttp hands out WSCloseCode members for some ends
        link.state = CLOSED
        link.ws = None
        for task in (link.watchdog, link.sender):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        link.watchdog = link.sender = None
        if link.sends:
            self.counters["sends_dropped_on_close"] += len(link.sends)
            link.sends.clear()
        if not ws.closed and link.end is None:
            # ended by an error with the socket still up: release it in the background
            closer = self._spawn(self._close_ws(ws, 1000, b""))
            self._closers.add(closer)
            closer.add_done_callback(self._closers.discard)
        ts = time.time_ns()
        if self.recorder is not None:
            self._record(self.recorder.close_conn, ts, conn, code, reason)
        log.info(
            "disconnected",
            code=code,
            reason=reason,
            frames=link.frames,
            up_for=round(time.monotonic() - link.opened_at, 3),
        )
        self._call(self.adapter.on_close, conn, ts, code, reason)

    async def _watch_stale(self, link: _Link, conn: str, stale_after: float) -> None:
        monotonic = time.monotonic
        while True:
            now = monotonic()
            due = link.last_frame + stale_after
            if now >= due:
                break
            await asyncio.sleep(due - now)
        if link.conn != conn or link.state != OPEN:
            return
        link.watchdog = None  # this task is ending by itself; _closed must not cancel it mid-close
        self.counters["stale"] += 1
        reason = f"stale: no data for {float(stale_after)} s"
        log.warning("stale", stale_after=stale_after)
        # code None: no close code was exchanged with the venue, we gave up on a silent socket
        self._end(link, None, reason)

    # -- recording --------------------------------------------------------------------------------

    def _record(self, method: Callable[..., None], *args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:
            self._record_failed(exc, time.time_ns())

    def _record_failed(self, exc: Exception, ts: int) -> None:
        """A recording that cannot be written (disk full, closed recorder) must not stop the feed."""
        self.counters["record_errors"] += 1
        self._ratelog.error("record_error", ts, "recording failed", error=f"{type(exc).__name__}: {exc}")

    # -- sends ------------------------------------------------------------------------------------

    def _send(self, command: Send) -> None:
        link = self._by_conn.get(command.conn)
        if link is None or link.conn != command.conn or link.state != OPEN:
            self.counters["sends_dropped_no_connection"] += 1
            if not self._stopping:
                log.warning("send on a connection that is not open dropped", conn=command.conn)
            return
        link.sends.append(command.data)
        if link.sender is None:
            link.sender = self._spawn(self._sender(link, command.conn))

    async def _sender(self, link: _Link, conn: str) -> None:
        """Sends the queued frames of one connection in order, at most one per ``send_interval``."""
        interval = self.send_interval
        next_at = 0.0
        ws = link.ws
        try:
            while link.sends and ws is not None:
                wait = next_at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if link.conn != conn or link.state != OPEN:
                    return
                data = link.sends.popleft()
                try:
                    await ws.send_str(data)
                except Exception as exc:  # the connection is ending; its close path follows
                    self.counters["send_errors"] += 1
                    log.warning("send failed", error=f"{type(exc).__name__}: {exc}")
                    return
                ts = time.time_ns()
                next_at = time.monotonic() + interval
                self.counters["sends"] += 1
                if self.recorder is not None:
                    self._record(self.recorder.send, ts, conn, data)
        finally:
            if link.sender is asyncio.current_task():
                link.sender = None

    # -- REST -------------------------------------------------------------------------------------

    async def _fetch(self, command: Fetch) -> None:
        if command.delay > 0:
            # a little jitter so that retries issued together do not hit the venue together
            await asyncio.sleep(command.delay + self._rand() * min(0.25, command.delay * 0.1))
        await self.budget.acquire(command.weight)
        self.rest_requests += 1
        self.rest_weight += command.weight
        session = self._session
        assert session is not None
        status, body, error, retry_after = 0, "", None, None
        try:
            async with session.get(command.url, timeout=aiohttp.ClientTimeout(total=self.fetch_timeout)) as resp:
                raw = await resp.read()
                status = resp.status
                body = raw.decode("utf-8", "replace")
                retry_after = resp.headers.get("Retry-After")
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            error = "timeout"
        except Exception as exc:
            error = type(exc).__name__
        ts = time.time_ns()
        if self._stopping:
            return
        if status in (429, 418):
            pause = _parse_retry_after(retry_after)
            self.budget.pause_until(time.monotonic() + pause)
            self.counters[f"rest_{status}"] += 1
            log.warning("rest rate limited: pausing the venue's requests", status=status, retry_after=pause, url=command.url)
        elif status == 0 or status >= 500:
            self.counters["rest_errors"] += 1
            self._ratelog.warning(("rest", status), ts, "rest request failed", status=status, error=error, url=command.url)
        elif status >= 400:
            self.counters["rest_errors"] += 1
            self._ratelog.warning(("rest", status), ts, "rest request refused", status=status, url=command.url, body=body[:200])
        if self.recorder is not None:
            self._record(self.recorder.rest, ts, self.venue, command.url, status, body, error)
        self._call(self.adapter.on_rest, ts, command.url, status, body)


def _parse_retry_after(value: str | None) -> float:
    if value is not None:
        try:
            seconds = float(value)
        except ValueError:
            pass
        else:
            if seconds >= 0:
                return seconds
    return RETRY_AFTER_DEFAULT
