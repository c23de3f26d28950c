"""The sink interface, and a helper that keeps blocking writes off the event loop.

A sink receives batches of events from the bus (``marketfeed.bus``), one batch at a time: the bus never
calls ``write`` again before the previous call returned, so a sink needs no locking of its own. A sink
may be slow; the bus gives each sink its own bounded queue, so a slow sink only ever loses its own
events (counted), never delays the adapters or the other sinks.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from marketfeed.events import Event

T = TypeVar("T")


class Sink:
    """Base class of every sink.

    ``flush_interval``: seconds between the bus's calls to ``flush`` while the sink has unflushed
    data; 0 means the bus flushes after every write.
    """

    name: str = "sink"
    flush_interval: float = 0.0

    async def start(self) -> None:
        """Open files or connections. An exception here stops the daemon from starting."""

    async def write(self, events: list[Event]) -> None:
        """Write one batch, in order. The list is shared with other sinks: never modify it."""
        raise NotImplementedError

    async def flush(self) -> None:
        """Push buffered data to the OS or the server."""

    async def close(self) -> None:
        """Flush and release everything; the sink is not used afterwards."""


class BlockingWorker:
    """Runs blocking calls (file and pipe writes) one at a time on a daemon thread.

    A pipe whose reader stopped reading, or a stalled disk, then blocks only this thread: the event
    loop keeps serving the adapters and the other sinks. The thread is a daemon so that a write that
    will never return cannot keep the process from exiting after a shutdown timeout.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, args, loop, future))
        return await future

    def stop(self) -> None:
        """Let the thread end after the jobs already given to it."""
        self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, loop, future = job
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine, not lost in the thread
                _resolve(loop, future, None, exc)
            else:
                _resolve(loop, future, result, None)


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    def settle() -> None:
        if future.done():  # the awaiting coroutine was cancelled (shutdown timeout)
            return
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass
