"""What the network sinks (redis, nats, postgres, kafka) share: options, encoding, keys, and the
retry loop that rides out a server outage.

Outages: ``write`` sends the batch; when that fails (the server went away, a timeout) the sink drops
its connection, waits with full-jitter backoff and tries the same batch again, until it succeeds or
the daemon shuts down. Meanwhile the bus keeps queueing for this sink up to its ``queue_size`` (that
queue is the sink's buffer) and applies ``on_full`` beyond it, counted as ``dropped`` with
``book_invalid`` for the books that lost data. When the server is back, the next ``write`` takes
everything queued in one batch. The adapters and the other sinks never wait for this one.

A batch that failed after the server had received it may arrive twice (at-least-once). The nats sink
removes such duplicates with JetStream message ids; the others document it.

Counters (``stats``, merged into the bus's counters for this sink): ``retries`` (attempts after a
failure), ``failures`` (failed attempts), ``connects`` (successful connections, the first included),
``given_up`` (batches dropped because the server kept refusing them with an error on a working
connection ``give_up_after`` times: a poison batch must not stop the sink for good).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import msgspec
import structlog

from marketfeed.config import SinkOptions
from marketfeed.events import Book, Event, Status, Top, Trade
from marketfeed.logging import RateLimitedLog
from marketfeed.sinks.base import Sink

log = structlog.get_logger("marketfeed.sinks")

FORMATS = ("json", "msgpack")
TYPE_NAMES: dict[type, str] = {Trade: "trade", Book: "book", Top: "top", Status: "status"}
NO_SYMBOL = "_"  # the symbol part of a key or subject for connection-level statuses


class NetworkSinkOptions(SinkOptions):
    retry_base: float = 0.2  # seconds: full-jitter backoff random(0, min(retry_cap, retry_base * 2**n))
    retry_cap: float = 5.0
    batch_size: int = 5000  # events per request (pipeline, COPY, publish round); the bus batch is split
    connect_timeout: float = 5.0
    # a batch that fails this many times on a connection that was working (the server answered with
    # an error: a wrong key type, a refused message) is given up: dropped and counted, not retried forever
    give_up_after: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.give_up_after < 1:
            raise ValueError("give_up_after: must be at least 1")
        if not (0 < self.retry_base <= self.retry_cap):
            raise ValueError("retry_base: needs 0 < retry_base <= retry_cap")
        if self.batch_size <= 0:
            raise ValueError("batch_size: must be positive")
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout: must be positive")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")


def encoder(fmt: str) -> Any:
    """``encode(event) -> bytes`` for the configured format: EVENTS.md JSON, or the same fields as a
    MessagePack map (``msgspec.msgpack.decode(data, type=marketfeed.events.Event)`` reads it)."""
    check_format(fmt)
    return (msgspec.json.Encoder() if fmt == "json" else msgspec.msgpack.Encoder()).encode


class Names:
    """Per-(type, venue, symbol) names from a template with ``{type}``, ``{venue}``, ``{symbol}``,
    formatted once and cached (the set of names is small; the events are many)."""

    def __init__(self, template: str) -> None:
        try:
            template.format(type="t", venue="v", symbol="s")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"bad template {template!r}: only {{type}}, {{venue}}, {{symbol}} may appear ({exc})") from None
        self.template = template
        self._cache: dict[tuple[type, str, str | None], str] = {}

    def __call__(self, event: Event) -> str:
        key = (type(event), event.venue, event.symbol)
        name = self._cache.get(key)
        if name is None:
            name = self._cache[key] = self.template.format(
                type=TYPE_NAMES[type(event)], venue=event.venue, symbol=event.symbol or NO_SYMBOL
            )
        return name


class NetworkSink(Sink):
    """Subclasses implement ``_connect``, ``_send(events, first)`` and ``_disconnect``; ``first`` is
    the number of events this sink had written before this batch (stable across retries of it)."""

    def __init__(self, options: NetworkSinkOptions) -> None:
        self.options = options
        self.stats = {"retries": 0, "failures": 0, "connects": 0, "given_up": 0}
        self.sent = 0  # events written so far
        self._connected = False
        self._log = RateLimitedLog(log, interval_s=10.0)

    async def start(self) -> None:
        """Connect (and create the schema, stream ...) now: a wrong address or refused credentials
        stop the daemon at start rather than filling a queue."""
        await asyncio.wait_for(self._connect(), self.options.connect_timeout)
        self._connected = True
        self.stats["connects"] += 1

    async def write(self, events: list[Event]) -> None:
        size = self.options.batch_size
        for i in range(0, len(events), size):
            await self._write_retrying(events[i : i + size] if len(events) > size else events)

    async def _write_retrying(self, events: list[Event]) -> None:
        attempt = 0
        refused = 0  # failures on a connection that was up: the batch, not the server, is the problem
        while True:
            sending = False
            try:
                if not self._connected:
                    await asyncio.wait_for(self._connect(), self.options.connect_timeout)
                    self._connected = True
                    self.stats["connects"] += 1
                    log.info("sink reconnected", sink=self.name, attempts=attempt)
                sending = True
                await self._send(events, self.sent)
                self.sent += len(events)
                return
            except (asyncio.CancelledError, KeyboardInterrupt):
                raise
            except Exception as exc:
                self.stats["failures"] += 1
                refused += sending and self._still_up(exc)
                if refused >= self.options.give_up_after:
                    self.stats["given_up"] += 1
                    log.error("sink gave up a batch the server keeps refusing", sink=self.name, error=repr(exc), events=len(events))
                    self.sent += len(events)  # its positions are spent (message ids stay unique)
                    raise  # the bus counts the batch as dropped (and book_invalid for its books)
                self._log.warning(("retry", self.name), time.time_ns(), "sink write failed, retrying",
                                  sink=self.name, error=repr(exc), attempt=attempt)
                await self._drop_connection()
                delay = random.uniform(0, min(self.options.retry_cap, self.options.retry_base * 2**attempt))
                attempt = min(attempt + 1, 30)
                self.stats["retries"] += 1
                await asyncio.sleep(delay)

    def _still_up(self, exc: Exception) -> bool:
        """Whether a failed send left the server reachable (it answered with an error). Connection
        failures and timeouts are outages: retried without limit."""
        return not isinstance(exc, (OSError, TimeoutError, ConnectionError)) and not self._is_disconnect(exc)

    def _is_disconnect(self, exc: Exception) -> bool:
        """The client library's own connection-lost errors (subclasses add theirs)."""
        return False

    async def _drop_connection(self) -> None:
        self._connected = False
        try:
            await asyncio.wait_for(self._disconnect(), 2.0)
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise
        except Exception:
            pass  # the connection is broken already; nothing to save

    async def close(self) -> None:
        await self._drop_connection()

    async def _connect(self) -> None:
        raise NotImplementedError

    async def _send(self, events: list[Event], first: int) -> None:
        raise NotImplementedError

    async def _disconnect(self) -> None:
        raise NotImplementedError
