"""Fault injection shared by the venue simulators: a reproducible schedule and what every server does
the same way (sending, closing, aborting a transport).

A schedule is a list of faults, each due after a number of data messages the server has sent::

    drop@1500,kill@3000,stall@5000:20s,close:1011@6000,rest429@7000:2s

``KIND@COUNT[:DURATION]``; ``close:CODE`` carries its close code; the duration (``20s``, ``500ms``) is
how long a stall or a rejected subscription lasts, or the ``Retry-After`` of a 429/418. A random
schedule (``random_schedule(seed, ...)``) is the same for the same seed.

Each venue's ``FaultTarget`` applies the kinds that make sense for it and refuses the others with a
``FaultError`` naming the venue and kind (at parse time, so ``marketfeed simulate`` fails before it
serves anything). ``FaultInjector`` watches the target's message count and fires each fault when due,
recording when (``injected``), so a test can measure detection and recovery from that moment.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger("marketfeed.simulate.faults")

KINDS = (
    "drop", "duplicate", "stall", "kill", "close", "malformed", "truncated", "oversized",
    "rest429", "rest418", "rest500", "rest_timeout", "server_shutdown", "bad_checksum", "reject_subscription",
)
OVERSIZED_BYTES = 17 * 1024 * 1024  # above the 16 MiB a client accepts by default
_FAULT_RE = re.compile(r"^(?P<kind>[a-z_0-9]+)(?::(?P<code>\d{4}))?@(?P<at>\d+)(?::(?P<dur>\d+(?:\.\d+)?)(?P<unit>ms|s)?)?$")


class FaultError(ValueError):
    """A schedule that cannot be parsed, or a fault kind the venue cannot apply."""


@dataclass(frozen=True)
class Fault:
    kind: str
    at: int  # fire once the server has sent this many data messages
    duration: float | None = None  # seconds (stall, reject_subscription; Retry-After for rest429/418)
    code: int | None = None  # close:CODE

    def __str__(self) -> str:
        name = f"close:{self.code}" if self.kind == "close" else self.kind
        return f"{name}@{self.at}" + (f":{self.duration:g}s" if self.duration is not None else "")


def parse_schedule(spec: str) -> list[Fault]:
    """``drop@1500,kill@3000,stall@5000:20s`` -> faults sorted by when they are due."""
    faults = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        m = _FAULT_RE.match(item)
        if m is None:
            raise FaultError(f"bad fault {item!r}: expected KIND@COUNT[:DURATION], e.g. stall@5000:20s")
        kind = m["kind"]
        if kind not in KINDS:
            raise FaultError(f"unknown fault kind {kind!r} in {item!r} (one of {', '.join(KINDS)})")
        code = int(m["code"]) if m["code"] else None
        if kind == "close" and code is None:
            raise FaultError(f"{item!r}: close needs a code, e.g. close:1011@2000")
        if kind != "close" and code is not None:
            raise FaultError(f"{item!r}: only close takes a code")
        duration = None
        if m["dur"] is not None:
            duration = float(m["dur"]) / (1000.0 if m["unit"] == "ms" else 1.0)
        faults.append(Fault(kind, int(m["at"]), duration, code))
    return sorted(faults, key=lambda f: f.at)


def random_schedule(seed: int, kinds: tuple[str, ...] | list[str], count: int, every: int = 500) -> list[Fault]:
    """``count`` faults of the given kinds, on average one per ``every`` messages: the same for the same
    seed (and kinds)."""
    rng = random.Random(seed)
    at = 0
    out = []
    for _ in range(count):
        at += max(1, int(rng.expovariate(1 / every)))
        kind = rng.choice(list(kinds))
        duration = round(rng.uniform(1.0, 3.0), 1) if kind in ("stall", "reject_subscription", "rest429", "rest418") else None
        code = rng.choice((1001, 1011, 1012)) if kind == "close" else None
        out.append(Fault(kind, at, duration, code))
    return out


# -- what every server does the same way -------------------------------------------------------------


def abort_transport(request: web.Request) -> bool:
    """Drop the TCP connection under a WebSocket without a close frame. True if there was one."""
    transport = request.transport
    if transport is None:
        return False
    transport.abort()
    return True


async def send_text(ws: web.WebSocketResponse, text: str) -> bool:
    """Send one text frame; False when the peer is gone (its handler notices and cleans up)."""
    try:
        await ws.send_str(text)
        return True
    except (ConnectionError, RuntimeError):  # closing or reset by the peer
        return False


async def close_ws(ws: web.WebSocketResponse, request: web.Request, code: int, reason: str, timeout: float = 2.0) -> None:
    """Close with a close frame; a peer that does not answer within ``timeout`` loses its TCP connection."""
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()), timeout)
    except (TimeoutError, ConnectionError, RuntimeError):  # a peer that does not answer, or is gone
        abort_transport(request)


def kill(conn: Any) -> bool:
    """A server connection (``ws``, ``request``, ``closed``, ``close_reason``) killed: TCP dropped, no close frame."""
    conn.closed = True
    conn.close_reason = "killed"
    return abort_transport(conn.request)


async def send_frame(conn: Any, text: str) -> bool:
    """Send on a server connection, counting ``frames_sent``; a failed send marks it closed."""
    if await send_text(conn.ws, text):
        conn.frames_sent += 1
        return True
    conn.closed = True
    return False


async def close_conn(conn: Any, code: int, reason: str) -> None:
    """Close a server connection with a close frame (see ``close_ws``)."""
    conn.closed = True
    conn.close_reason = reason
    await close_ws(conn.ws, conn.request, code, reason)


# -- per venue -----------------------------------------------------------------------------------------


class FaultTarget:
    """How one venue's server applies faults. ``supported`` lists the kinds it accepts."""

    venue = ""
    supported: frozenset[str] = frozenset()

    def __init__(self, sim: Any) -> None:
        self.sim = sim
        self._later: set[asyncio.Task[None]] = set()

    def check(self, faults: list[Fault]) -> None:
        for f in faults:
            if f.kind not in self.supported:
                raise FaultError(f"{self.venue}: fault {f.kind!r} does not apply to this venue (it accepts: {', '.join(sorted(self.supported))})")

    def sent(self) -> int:
        """Data messages sent so far (the clock a schedule counts in)."""
        return sum(getattr(c, "frames_sent", 0) for c in self._conns_all())

    def _conns_all(self) -> list[Any]:
        return list(self.sim.connections)

    def open_ws(self) -> list[tuple[web.WebSocketResponse, web.Request]]:
        return [(c.ws, c.request) for c in self.sim.open_connections() if not getattr(c, "stalled", False)]

    def after(self, delay: float, fn: Any) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            result = fn()
            if asyncio.iscoroutine(result):
                await result

        task = asyncio.get_running_loop().create_task(run())
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    async def apply(self, fault: Fault) -> None:
        kind = fault.kind
        if kind == "kill":
            self.sim.kill_connections()
        elif kind == "close":
            await asyncio.gather(*(close_ws(ws, req, fault.code or 1011, "fault injected") for ws, req in self.open_ws()))
        elif kind in ("malformed", "truncated", "oversized"):
            text = {"malformed": "{not json", "truncated": self.truncated_frame(), "oversized": "x" * OVERSIZED_BYTES}[kind]
            await asyncio.gather(*(send_text(ws, text) for ws, _ in self.open_ws()))
        else:
            await self.apply_venue(fault)

    def truncated_frame(self) -> str:
        return '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":1'

    async def apply_venue(self, fault: Fault) -> None:  # pragma: no cover - check() refuses first
        raise FaultError(f"{self.venue}: fault {fault.kind!r} does not apply")


COMMON = frozenset({"drop", "stall", "kill", "close", "malformed", "truncated", "oversized"})


class BinanceTarget(FaultTarget):
    supported = COMMON | {"duplicate", "rest429", "rest418", "rest500", "rest_timeout", "server_shutdown"}

    def __init__(self, sim: Any, market: str) -> None:
        super().__init__(sim)
        self.market = market
        self.venue = "binance" if market == "spot" else "binance-usdm"

    def _conns_all(self) -> list[Any]:
        return [c for c in self.sim.connections if c.market == self.market]

    def open_ws(self) -> list[tuple[web.WebSocketResponse, web.Request]]:
        return [(c.ws, c.request) for c in self.sim.open_connections(self.market) if not c.stalled]

    def truncated_frame(self) -> str:
        return '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":17000000'

    def _resync_all(self) -> None:
        # a REST fault only shows when the client asks for a snapshot: a gap in every book makes it ask
        for symbol in self.sim.markets[self.market].books:
            self.sim.drop_next_diff(symbol, self.market)

    async def apply_venue(self, fault: Fault) -> None:
        sim, market, kind = self.sim, self.market, fault.kind
        symbols = list(sim.markets[market].books)
        if kind == "drop":
            for s in symbols:
                sim.drop_next_diff(s, market)
        elif kind == "duplicate":
            for s in symbols:
                sim.duplicate_next_diff(s, market)
        elif kind == "stall":
            sim.stall(market)
            self.after(fault.duration or 10.0, sim.unstall)
        elif kind in ("rest429", "rest418", "rest500"):
            status = int(kind[4:])
            retry = (fault.duration or 1.0) if status in (429, 418) else None
            sim.fail_depth(status, count=len(symbols), retry_after=retry, market=market)
            self._resync_all()
        elif kind == "rest_timeout":
            sim.slow_depth(fault.duration or 30.0, count=len(symbols), market=market)
            self._resync_all()
        elif kind == "server_shutdown":
            await sim.server_shutdown(market, close_after=fault.duration if fault.duration is not None else 2.0)


class KrakenTarget(FaultTarget):
    venue = "kraken"
    supported = COMMON | {"bad_checksum", "reject_subscription"}

    async def apply_venue(self, fault: Fault) -> None:
        sim, kind = self.sim, fault.kind
        if kind == "drop":
            for v2 in sim.books:
                sim.drop_next_update(v2)
        elif kind == "bad_checksum":
            for v2 in sim.books:
                sim.corrupt_next_checksum(v2)
        elif kind == "stall":
            # stalled connections stay silent until the client gives up on them; new ones are served
            sim.stall()
        elif kind == "reject_subscription":
            for v2 in sim.books:
                sim.reject(v2)
            sim.kill_connections()  # the client reconnects and resubscribes: refused
            self.after(fault.duration or 2.0, lambda: sim.rejected.clear())


class CoinbaseTarget(FaultTarget):
    venue = "coinbase"
    supported = COMMON | {"duplicate", "reject_subscription"}

    def truncated_frame(self) -> str:
        return '{"channel":"l2_data","client_id":"","timestamp":"2026-11-21T00:00:00Z","sequence_num":'

    async def apply(self, fault: Fault) -> None:
        if fault.kind == "malformed":
            self.sim.send_malformed()  # in the server's own stream: it takes a sequence number
            return
        await super().apply(fault)

    async def apply_venue(self, fault: Fault) -> None:
        sim, kind = self.sim, fault.kind
        if kind == "drop":
            sim.drop_next_update()
        elif kind == "duplicate":
            sim.duplicate_next_update()
        elif kind == "stall":
            sim.stall()
            self.after(fault.duration or 10.0, sim.unstall)
        elif kind == "reject_subscription":
            sim.reject_next_subscription("level2")
            sim.kill_connections()


class OkxTarget(FaultTarget):
    venue = "okx"
    supported = COMMON | {"bad_checksum", "reject_subscription"}

    def _conns_all(self) -> list[Any]:
        return list(self.sim.conns) + list(getattr(self.sim, "closed_conns", []))

    def sent(self) -> int:
        return self.sim.frames_sent

    def truncated_frame(self) -> str:
        return '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[["1'

    async def apply_venue(self, fault: Fault) -> None:
        sim, kind = self.sim, fault.kind
        if kind == "drop":
            for inst in sim.books:
                sim.drop_next_update(inst)
        elif kind == "bad_checksum":
            for inst in sim.books:
                sim.corrupt_next_checksum(inst)
        elif kind == "stall":
            sim.stall()
        elif kind == "reject_subscription":
            for inst in sim.books:
                sim.reject(inst)
            sim.kill_connections()
            self.after(fault.duration or 2.0, lambda: sim._rejected.clear())


@dataclass
class Injected:
    fault: Fault
    at_sent: int
    at: float  # time.monotonic() when applied


@dataclass
class FaultInjector:
    """Fires ``schedule`` against ``target`` as the server's message count passes each fault's ``at``."""

    target: FaultTarget
    schedule: list[Fault]
    poll: float = 0.005
    injected: list[Injected] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.target.check(self.schedule)
        self._pending = sorted(self.schedule, key=lambda f: f.at)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for t in list(self.target._later):
            t.cancel()

    @property
    def done(self) -> bool:
        return not self._pending

    async def fire(self, fault: Fault) -> Injected:
        """Apply one fault now (tests call this directly; the schedule calls it when due)."""
        self.target.check([fault])
        sent = self.target.sent()
        record = Injected(fault, sent, time.monotonic())
        await self.target.apply(fault)
        self.injected.append(record)
        log.info("fault injected", venue=self.target.venue, fault=str(fault), sent=sent)
        return record

    async def run(self) -> None:
        while self._pending:
            sent = self.target.sent()
            while self._pending and self._pending[0].at <= sent:
                await self.fire(self._pending.pop(0))
            await asyncio.sleep(self.poll)


class RefusingListener:
    """A venue that refuses every connection: each TCP connection is answered ``503 Service
    Unavailable`` and closed. ``attempts`` holds the time.monotonic() of each one (a reconnect storm's
    oracle)."""

    def __init__(self) -> None:
        self.attempts: list[float] = []
        self._server: asyncio.AbstractServer | None = None
        self.host = "127.0.0.1"
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(self._refuse, host, port, reuse_address=True)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts.append(time.monotonic())
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2.0)
            writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a client that gave up first: refused all the same
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"
