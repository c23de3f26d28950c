"""JSON Lines files: optional rotation by size and/or time, optional gzip.

Without rotation the sink appends to exactly ``path`` (a restart never truncates earlier output;
appending to a gzip file adds a gzip member, which every gzip reader concatenates). With rotation,
each file is named after the UTC time it was opened, beside ``path``:
``events.jsonl`` -> ``events-20261121T223000Z.jsonl`` (``-1``, ``-2`` ... added if that name exists).
With ``gzip`` the name ends in ``.gz`` (added if ``path`` lacks it). ``rotate_mb`` counts the bytes of
JSON written (before compression), so the limit means the same with and without gzip.

Writes go through a 1 MiB buffer on a worker thread; the bus calls ``flush`` every
``flush_interval`` seconds while there is unflushed data (0: after every batch), and the time limit is
checked on every write and flush, so an idle file is still closed on time.
"""

from __future__ import annotations

import gzip as gzip_module
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from marketfeed.events import Event, encode_lines
from marketfeed.sinks.base import BlockingWorker, Sink

BUFFER_SIZE = 1 << 20


class JsonlSink(Sink):
    def __init__(
        self,
        path: str | Path,
        rotate_mb: float | None = None,
        rotate_minutes: float | None = None,
        gzip: bool = False,
        flush_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        path = Path(path).expanduser()
        if gzip and path.suffix != ".gz":
            path = path.with_name(path.name + ".gz")
        self.path = path
        self.name = f"jsonl:{path}"
        self.flush_interval = flush_interval
        self._rotate_bytes = int(rotate_mb * 1024 * 1024) if rotate_mb else None
        self._rotate_seconds = rotate_minutes * 60.0 if rotate_minutes else None
        self._gzip = gzip
        self._clock = clock
        self._worker: BlockingWorker | None = None
        self._raw: BinaryIO | None = None
        self._fh: BinaryIO | None = None
        self._opened_at = 0.0
        self._size = 0
        self.files: list[Path] = []  # every file this sink has written, in order

    @property
    def rotating(self) -> bool:
        return self._rotate_bytes is not None or self._rotate_seconds is not None

    async def start(self) -> None:
        self._worker = BlockingWorker(f"marketfeed-{self.name}")
        # open the first file now so that a bad path stops the daemon at start, not at the first event
        await self._worker.run(self._open)

    async def write(self, events: list[Event]) -> None:
        assert self._worker is not None, "start() first"
        buf = bytearray()
        encode_lines(events, buf)
        await self._worker.run(self._write, buf)

    async def flush(self) -> None:
        if self._worker is not None:
            await self._worker.run(self._flush)

    async def close(self) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            await worker.run(self._close_file)
            worker.stop()

    # -- on the worker thread ---------------------------------------------------------------------

    def _next_path(self) -> Path:
        if not self.rotating:
            return self.path
        name = self.path.name
        suffix = ".jsonl.gz" if name.endswith(".jsonl.gz") else ".jsonl" if name.endswith(".jsonl") else ""
        if not suffix and name.endswith(".gz"):
            suffix = ".gz"
        stem = name[: len(name) - len(suffix)] if suffix else name
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        candidate = self.path.with_name(f"{stem}-{stamp}{suffix}")
        n = 0
        while candidate.exists() or candidate in self.files:
            n += 1
            candidate = self.path.with_name(f"{stem}-{stamp}-{n}{suffix}")
        return candidate

    def _open(self) -> None:
        path = self._next_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        raw: BinaryIO = open(path, "ab", buffering=BUFFER_SIZE)
        self._raw = raw
        self._fh = gzip_module.GzipFile(fileobj=raw, mode="wb", compresslevel=5) if self._gzip else raw  # type: ignore[assignment]
        self._opened_at = self._clock()
        self._size = 0
        self.files.append(path)

    def _time_is_up(self) -> bool:
        return self._rotate_seconds is not None and self._clock() - self._opened_at >= self._rotate_seconds

    def _write(self, data: bytearray) -> None:
        if self._fh is not None and self._time_is_up():
            self._close_file()
        if self._fh is None:
            self._open()
        assert self._fh is not None
        self._fh.write(data)
        self._size += len(data)
        if self._rotate_bytes is not None and self._size >= self._rotate_bytes:
            # close now, open the next file with the next batch: no empty files
            self._close_file()

    def _flush(self) -> None:
        if self._fh is None:
            return
        if self._time_is_up():
            self._close_file()
            return
        self._fh.flush()
        if self._raw is not self._fh:
            assert self._raw is not None
            self._raw.flush()

    def _close_file(self) -> None:
        fh, raw = self._fh, self._raw
        self._fh = self._raw = None
        if fh is not None:
            fh.close()  # a GzipFile writes its trailer here, but leaves the file object open
        if raw is not None and raw is not fh:
            raw.close()


def read_jsonl(path: str | Path) -> bytes:
    """The text of a sink file, gzip or not (for tests and tools)."""
    data = Path(path).read_bytes()
    if data[:2] == b"\x1f\x8b":
        return gzip_module.decompress(data)
    return data


__all__ = ["JsonlSink", "read_jsonl"]
