"""Fan-out from the adapters to the sinks: one bounded queue and one writer task per sink.

``Bus.publish(events)`` is a plain call that never waits: it appends the batch to every sink's queue
and returns. Each sink's task takes everything queued, in order, as one batch and awaits the sink's
``write``. A slow or stuck sink therefore fills only its own queue.

What happens when a sink's queue is full (``queue_size`` events) is the sink's ``on_full`` policy:

- ``drop_oldest`` (default): the oldest queued batches are dropped to make room; the sink falls
  behind by at most ``queue_size`` events and then loses the oldest data.
- ``drop_newest``: the incoming batch is dropped; what is queued is kept.

- ``block``: a producer that can wait (``await Bus.publish_wait``: replay into sinks, backfills)
  waits until this sink has room, so nothing is lost. The live adapters never wait (their sockets would
  back up and the venues would disconnect us): for their plain ``publish`` a full ``block`` queue keeps
  what is queued and drops the incoming batch, as ``drop_newest``, counted.

Nothing a sink does may stall the adapters. Dropping is never silent to a consumer that keeps books:
when book data for a (venue, symbol) is dropped, the sink gets a ``book_invalid`` status for it and
no further diffs of that book until a snapshot comes through, exactly as after a venue gap
(EVENTS.md). A failed ``write`` is treated the same way. Every sink has counters: ``queued`` (events
accepted), ``written``, ``dropped`` (overflow, failed writes, and diffs held back until the next
snapshot), ``errors`` (failed writes or flushes) and ``depth`` (events waiting now).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from itertools import chain

import structlog

from marketfeed.config import ON_FULL
from marketfeed.events import BOOK_INVALID, Book, Event, Status
from marketfeed.logging import RateLimitedLog, redact
from marketfeed.sinks.base import Sink

DEFAULT_QUEUE_SIZE = 100_000

log = structlog.get_logger("marketfeed.bus")


class SinkChannel:
    """One sink, its bounded queue and its writer task."""

    def __init__(self, sink: Sink, queue_size: int = DEFAULT_QUEUE_SIZE, on_full: str = "drop_oldest") -> None:
        if queue_size <= 0:
            raise ValueError("queue_size must be positive")
        if on_full not in ON_FULL:
            raise ValueError(f"on_full must be one of {', '.join(ON_FULL)}")
        self.sink = sink
        self.name = redact(sink.name)  # logs and metric labels: no password from a sink URL
        self.queue_size = queue_size
        self.on_full = on_full
        self._batches: deque[list[Event]] = deque()
        self.depth = 0  # events in the queue
        self.queued = 0
        self.written = 0
        self.dropped = 0
        self.errors = 0
        # books whose data this sink lost: announce book_invalid, then hold diffs until a snapshot
        self._announce: dict[tuple[str, str], int] = {}  # (venue, symbol) -> ts_recv for the status
        self._invalid: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()  # set when the writer took the queue (block policy waits for it)
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._log = RateLimitedLog(log, interval_s=10.0)

    def counters(self) -> dict[str, int]:
        return {
            "queued": self.queued,
            "written": self.written,
            "dropped": self.dropped,
            "errors": self.errors,
            "depth": self.depth,
            **getattr(self.sink, "stats", {}),  # a sink's own counters (retries, reconnects, ...)
        }

    # -- producer side (the adapters, through Bus.publish) ------------------------------------------

    def offer(self, events: list[Event]) -> None:
        n = len(events)
        if not n:
            return
        if self._closing:
            self._lose(events, "closed")
            return
        if self.depth + n > self.queue_size and self.depth:  # an empty queue takes any one batch
            if self.on_full != "drop_oldest":  # drop_newest, and block for a producer that cannot wait
                self._lose(events, "queue full")
                return
            # drop_oldest; a single batch larger than the whole queue is still accepted on its own
            while self._batches and self.depth + n > self.queue_size:
                old = self._batches.popleft()
                self.depth -= len(old)
                self._lose(old, "queue full")
        self._batches.append(events)
        self.depth += n
        self.queued += n
        self._wake.set()

    async def offer_wait(self, events: list[Event]) -> None:
        """``offer`` that first waits for room when the policy is ``block`` (a producer that may wait)."""
        if self.on_full == "block":
            while not self._closing and self.depth and self.depth + len(events) > self.queue_size:
                self._room.clear()
                await self._room.wait()
        self.offer(events)

    def _lose(self, events: list[Event], why: str) -> None:
        self.dropped += len(events)
        for e in events:
            t = type(e)
            if t is Book or (t is Status and e.state == BOOK_INVALID and e.symbol is not None):  # type: ignore[union-attr]
                key = (e.venue, e.symbol)
                self._invalid.add(key)  # type: ignore[arg-type]
                self._announce[key] = e.ts_recv  # type: ignore[index]
        self._log.warning(
            ("dropped", self.name), time.time_ns(), "sink dropped events", sink=self.name, why=why,
            count=len(events), dropped_total=self.dropped,
        )

    # -- consumer side ------------------------------------------------------------------------------

    def _take(self) -> list[Event]:
        batches = self._batches
        events = batches.popleft() if len(batches) == 1 else list(chain.from_iterable(batches))
        batches.clear()
        self.depth = 0
        self._room.set()
        if self._announce or self._invalid:
            events = self._guard_books(events)
        return events

    def _guard_books(self, events: list[Event]) -> list[Event]:
        """Put the book_invalid statuses for lost book data first, and hold back diffs of those books
        until their next snapshot, so a consumer never applies a diff to a book with a hole in it."""
        out: list[Event] = [
            Status(venue, symbol, ts, BOOK_INVALID, f"sink {self.name} dropped events (queue full or write failed)")
            for (venue, symbol), ts in self._announce.items()
        ]
        self._announce.clear()
        invalid = self._invalid
        held = 0
        for e in events:
            if type(e) is Book and invalid:
                key = (e.venue, e.symbol)
                if key in invalid:
                    if not e.snapshot:  # type: ignore[union-attr]
                        held += 1
                        continue
                    invalid.discard(key)
            out.append(e)
        self.dropped += held
        return out

    async def run(self) -> None:
        """The writer task: write what is queued, flush on the sink's interval, until closed and empty."""
        sink = self.sink
        interval = sink.flush_interval
        loop = asyncio.get_running_loop()
        dirty = False
        last_flush = loop.time()
        while True:
            if not self._batches:
                if self._closing:
                    return
                self._wake.clear()
                if dirty:
                    timeout = max(0.0, last_flush + interval - loop.time())
                    try:
                        await asyncio.wait_for(self._wake.wait(), timeout)
                    except TimeoutError:
                        await self._flush()
                        dirty, last_flush = False, loop.time()
                else:
                    await self._wake.wait()
                continue
            events = self._take()
            if not events:
                continue
            try:
                await sink.write(events)
            except Exception as exc:
                self.errors += 1
                self._lose(events, f"write failed: {exc!r}")
                continue
            self.written += len(events)
            dirty = True
            if loop.time() - last_flush >= interval:
                await self._flush()
                dirty, last_flush = False, loop.time()

    async def _flush(self) -> None:
        try:
            await self.sink.flush()
        except Exception as exc:
            self.errors += 1
            self._log.error(("flush", self.name), time.time_ns(), "sink flush failed", sink=self.name, error=repr(exc))

    async def close(self) -> None:
        """Stop accepting events, write what is queued, flush and close the sink."""
        self._closing = True
        self._wake.set()
        self._room.set()
        if self._task is not None:
            await self._task
        await self._flush()
        await self.sink.close()


class Bus:
    def __init__(self) -> None:
        self.channels: list[SinkChannel] = []
        self._started = False

    def add_sink(self, sink: Sink, queue_size: int = DEFAULT_QUEUE_SIZE, on_full: str = "drop_oldest") -> SinkChannel:
        if self._started:
            raise RuntimeError("add sinks before start()")
        channel = SinkChannel(sink, queue_size, on_full)
        self.channels.append(channel)
        return channel

    async def start(self) -> None:
        """Start every sink (an exception stops here: the daemon does not start half its sinks),
        then the writer tasks."""
        started: list[SinkChannel] = []
        try:
            for channel in self.channels:
                await channel.sink.start()
                started.append(channel)
        except BaseException:
            for channel in started:
                try:
                    await channel.sink.close()
                except Exception:
                    pass
            raise
        for channel in self.channels:
            channel._task = asyncio.create_task(channel.run(), name=f"sink {channel.name}")
        self._started = True

    def publish(self, events: list[Event]) -> None:
        """Hand a batch to every sink. Never waits. The list is shared: do not modify it afterwards."""
        for channel in self.channels:
            channel.offer(events)

    async def publish_wait(self, events: list[Event]) -> None:
        """``publish`` for a producer that may wait: sinks with the ``block`` policy get every event,
        the others behave as with ``publish``."""
        for channel in self.channels:
            await channel.offer_wait(events)

    async def close(self, timeout: float = 10.0) -> bool:
        """Drain every queue and flush and close every sink, all within ``timeout`` seconds.

        Returns False if a sink did not finish in time; its unwritten events count as dropped.
        """
        if not self._started:
            return True
        tasks = {asyncio.create_task(channel.close(), name=f"close {channel.name}"): channel for channel in self.channels}
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        ok = not pending
        for task in done:
            channel = tasks[task]
            if task.exception() is not None:
                ok = False
                channel.errors += 1
                log.error("sink close failed", sink=channel.name, error=repr(task.exception()))
        for task in pending:
            channel = tasks[task]
            task.cancel()
            if channel._task is not None:
                channel._task.cancel()
            channel.dropped += channel.depth
            channel.depth = 0
            log.error("sink did not drain in time", sink=channel.name, timeout=timeout, **channel.counters())
        if pending:
            await asyncio.wait(pending, timeout=1.0)
        self._started = False
        return ok

    def counters(self) -> dict[str, dict[str, int]]:
        return {channel.name: channel.counters() for channel in self.channels}
