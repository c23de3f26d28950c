"""The recorder: what the venue runners saw, written as captures (../shared/docs/CAPTURE-FORMAT.md).

One ``Recorder`` is shared by every venue runner of the daemon, so a capture interleaves venues in the
order the event loop saw things, which is the order the adapters were fed. Files are named by their
UTC start time (``20261121T223015.123456Z.capture.jsonl.gz``), so a sorted directory listing is the
replay order, and rotated by size (bytes on disk) or age. A rotated file stands on its own: its header
names the file it continues, and it starts with an ``open`` record marked ``resumed`` for every
connection still open, so it replays alone, and the files in sequence replay as one recording (replay
skips a resumed open of a connection that is already open).

Data reaches the disk at least once a second (a timer on the running event loop) and on ``close``.
Writes are synchronous: a record is a few hundred bytes into a buffered (gzip) file, far cheaper than
handing it to a thread.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from marketfeed.capture import CaptureWriter

log = structlog.get_logger("marketfeed.recorder")

MIB = 1024 * 1024


class Recorder:
    def __init__(
        self,
        dir: str | Path,
        venues: list[str],
        rotate_mb: float | None = 256.0,
        rotate_minutes: float | None = 60.0,
        gzip: bool = True,
        flush_interval: float = 1.0,
        source: str = "marketfeed recorder",
    ) -> None:
        self.dir = Path(dir)
        self.venues = list(venues)
        self.rotate_bytes = int(rotate_mb * MIB) if rotate_mb else None
        self.rotate_seconds = rotate_minutes * 60.0 if rotate_minutes else None
        self.gzip = gzip
        self.flush_interval = flush_interval
        self.source = source
        self.files: list[Path] = []  # every file this recorder started, in order
        self._open_conns: dict[str, tuple[str, str, Any]] = {}  # conn -> (venue, url, plan)
        self._writer: CaptureWriter | None = None
        self._started_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._last_ns = 0

    # -- files ------------------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The file being written."""
        return self._writer.path if self._writer is not None else None

    def _new_path(self) -> Path:
        now_ns = max(time.time_ns(), self._last_ns + 1_000)
        suffix = ".capture.jsonl.gz" if self.gzip else ".capture.jsonl"
        while True:
            stamp = datetime.fromtimestamp(now_ns // 1_000_000_000, UTC).strftime("%Y%m%dT%H%M%S")
            path = self.dir / f"{stamp}.{now_ns // 1000 % 1_000_000:06d}Z{suffix}"
            if not path.exists():
                self._last_ns = now_ns
                return path
            now_ns += 1_000  # same microsecond as an existing file: the next one keeps the order

    def _writer_now(self) -> CaptureWriter:
        writer = self._writer
        if writer is None:
            if self._closed:
                raise RuntimeError("recorder is closed")
            writer = self._start_file(continues=None)
        return writer

    def _start_file(self, continues: str | None) -> CaptureWriter:
        extra: dict[str, Any] = {}
        if continues is not None:
            extra["continues"] = continues
        writer = CaptureWriter(self._new_path(), self.venues, source=self.source, **extra)
        self._writer = writer
        self._started_at = time.monotonic()
        self.files.append(writer.path)
        ts = time.time_ns()
        for conn, (venue, url, plan) in self._open_conns.items():
            writer.open(ts, conn, venue, url, plan, resumed=True)
        self._schedule_flush()
        log.info("capture file started", path=str(writer.path), continues=continues)
        return writer

    def rotate(self) -> Path:
        """Close the current file and start the next one; returns the new file's path."""
        old = self._writer
        if old is None:
            return self._writer_now().path
        old.close()
        log.info("capture file closed", path=str(old.path), records=old.records)
        return self._start_file(continues=old.path.name).path

    def _due(self) -> bool:
        writer = self._writer
        if writer is None:
            return False
        if self.rotate_seconds is not None and time.monotonic() - self._started_at >= self.rotate_seconds:
            return True
        if self.rotate_bytes is not None and writer.disk_bytes >= self.rotate_bytes:
            return True
        return False

    def flush(self) -> None:
        """Flush to disk, and rotate when the file is big or old enough."""
        writer = self._writer
        if writer is None:
            return
        writer.flush()
        if self._due():
            self.rotate()

    def _schedule_flush(self) -> None:
        if self._timer is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no event loop (a synchronous tool): flush on close only
        self._timer = loop.call_later(self.flush_interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        try:
            self.flush()
        except OSError as exc:  # disk full and the like: say so, keep the daemon alive
            log.error("capture flush failed", error=str(exc), path=str(self.path))
        self._schedule_flush()

    def close(self) -> None:
        """Flush and close the current file. Further writes raise RuntimeError."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer is not None:
            self._writer.close()
            log.info("capture file closed", path=str(self._writer.path), records=self._writer.records)
            self._writer = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- records: the CaptureWriter interface -----------------------------------------------------

    def open(self, ts: int, conn: str, venue: str, url: str, plan: Any = None) -> None:
        writer = self._writer_now()
        self._open_conns[conn] = (venue, url, plan)
        writer.open(ts, conn, venue, url, plan)
        if self._timer is None:
            self._schedule_flush()

    def send(self, ts: int, conn: str, data: str) -> None:
        self._writer_now().send(ts, conn, data)

    def recv(self, ts: int, conn: str, data: str | bytes) -> None:
        self._writer_now().recv(ts, conn, data)

    def close_conn(self, ts: int, conn: str, code: int | None, reason: str | None) -> None:
        self._open_conns.pop(conn, None)
        self._writer_now().close_conn(ts, conn, code, reason)

    def rest(self, ts: int, venue: str, url: str, status: int, data: str, error: str | None = None) -> None:
        writer = self._writer_now()
        writer.rest(ts, venue, url, status, data, error)
        if self._timer is None:
            self._schedule_flush()
