"""JSON Lines to standard output: one event per line, nothing else (logs go to stderr)."""

from __future__ import annotations

import os
import sys

from marketfeed.events import Event, encode_lines
from marketfeed.sinks.base import BlockingWorker, Sink


class StdoutSink(Sink):
    """Writes each batch with one ``os.write`` loop on a worker thread: unbuffered, so a consumer
    reading the pipe sees every event as soon as the batch is written, and a consumer that stops
    reading stalls only this sink's queue."""

    name = "stdout"

    def __init__(self, fd: int | None = None) -> None:
        self._fd = fd
        self._worker: BlockingWorker | None = None

    async def start(self) -> None:
        if self._fd is None:
            sys.stdout.flush()  # nothing Python buffered may land after our raw writes
            self._fd = sys.stdout.fileno()
        self._worker = BlockingWorker("marketfeed-stdout")

    async def write(self, events: list[Event]) -> None:
        assert self._worker is not None, "start() first"
        buf = bytearray()
        encode_lines(events, buf)
        await self._worker.run(_write_all, self._fd, buf)

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None


def _write_all(fd: int, data: bytearray) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]
