"""JSON Lines to standard output: one event per line, nothing else (logs go to stderr)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import structlog

from marketfeed.events import Event, encode_lines
from marketfeed.sinks.base import BlockingWorker, Sink


class StdoutSink(Sink):
    """Writes each batch with one ``os.write`` loop on a worker thread: unbuffered, so a consumer
    reading the pipe sees every event as soon as the batch is written, and a consumer that stops
    reading stalls only this sink's queue."""

    name = "stdout"

    def __init__(self, fd: int | None = None, on_reader_gone: Callable[[], None] | None = None) -> None:
        """``on_reader_gone`` is called once when the reader closes the pipe (``marketfeed run | head``):
        the daemon stops then, as a command-line tool whose output nobody reads should."""
        self._fd = fd
        self._worker: BlockingWorker | None = None
        self.on_reader_gone = on_reader_gone
        self.reader_gone = False

    async def start(self) -> None:
        if self._fd is None:
            sys.stdout.flush()  # nothing Python buffered may land after our raw writes
            self._fd = sys.stdout.fileno()
        self._worker = BlockingWorker("marketfeed-stdout")

    async def write(self, events: list[Event]) -> None:
        assert self._worker is not None, "start() first"
        buf = bytearray()
        encode_lines(events, buf)
        try:
            await self._worker.run(_write_all, self._fd, buf)
        except BrokenPipeError:
            if not self.reader_gone:
                self.reader_gone = True
                structlog.get_logger("marketfeed.sinks").warning("stdout was closed by its reader")
                if self.on_reader_gone is not None:
                    self.on_reader_gone()
            raise

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None


def _write_all(fd: int, data: bytearray) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
