"""The capture format, version 1 (../shared/docs/CAPTURE-FORMAT.md): reading and writing.

A capture is JSON Lines, plain or gzip (decided by the magic bytes, not the name): a header line, then
one record per line in non-decreasing ``ts`` order. Readers ignore unknown keys. This writer adds one
optional key of its own to ``open`` records, ``plan`` (what the adapter meant the connection to carry),
which older readers ignore and which lets replay hand the adapter the same plan as the live run.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import queue
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"


class CaptureError(Exception):
    """A capture that cannot be read: the message names the file and, where known, the line."""


class Header(msgspec.Struct):
    capture: str
    version: int
    venues: list[str] = []
    source: str | None = None
    note: str | None = None


class Open(msgspec.Struct, tag_field="ev", tag="open", omit_defaults=True):
    ts: int
    conn: str
    venue: str
    url: str
    plan: Any = None
    # our extension: this open repeats, at the top of a rotated file, a connection opened in an
    # earlier file, so the file replays on its own; replay of the files in sequence skips it
    resumed: bool = False


class Send(msgspec.Struct, tag_field="ev", tag="send", omit_defaults=True):
    ts: int
    conn: str
    data: str


class Recv(msgspec.Struct, tag_field="ev", tag="recv", omit_defaults=True):
    ts: int
    conn: str
    data: str | None = None
    b64: str | None = None  # a binary frame, base64

    def payload(self) -> str | bytes:
        if self.data is not None:
            return self.data
        import base64

        return base64.b64decode(self.b64 or "")


class Close(msgspec.Struct, tag_field="ev", tag="close", omit_defaults=True):
    ts: int
    conn: str
    code: int | None = None
    reason: str | None = None


class Rest(msgspec.Struct, tag_field="ev", tag="rest", omit_defaults=True):
    ts: int
    venue: str
    url: str
    status: int
    data: str
    error: str | None = None  # our extension: why there was no HTTP answer (status 0)


Record = Open | Send | Recv | Close | Rest

_header_decoder = msgspec.json.Decoder(Header)
_record_decoder = msgspec.json.Decoder(Record)

# A plain recv line is read by the C reader (marketfeed/_capture.c) where it is built; every other
# line, and every line without it (or with MARKETFEED_PURE_PYTHON=1), by msgspec.
try:
    from marketfeed import _capture
except ImportError:
    _capture = None
ACCELERATED = _capture is not None and not os.environ.get("MARKETFEED_PURE_PYTHON")
if ACCELERATED:
    _capture.configure(Recv, _record_decoder.decode)
    _read_record = _capture.read_record
else:
    _read_record = _record_decoder.decode
_encoder = msgspec.json.Encoder()
_SPILL = 256 * 1024  # bytes of records a CaptureWriter collects before writing them to the file


_READ = 256 * 1024  # bytes read (and, for gzip, decompressed) at a time
_LINES_AT_ONCE = 64 * 1024  # bytes of lines split off a read at a time
_READ_AHEAD_SWITCH_INTERVAL = 0.001  # s: how long the read-ahead thread waits at most for the GIL


def _gzip_chunks(fh: io.BufferedReader) -> Iterator[bytes]:
    """The decompressed bytes of a gzip file (one member, or several as concatenated files are), a
    large piece at a time. A stream that ends early raises EOFError, as GzipFile does."""
    inflater = None
    while chunk := fh.read(_READ):
        pieces = []
        while chunk:
            if inflater is None or inflater.eof:
                if inflater is not None:
                    chunk = chunk.lstrip(b"\0")  # padding between members, as gzip allows
                    if not chunk:
                        break
                inflater = zlib.decompressobj(wbits=31)
            pieces.append(inflater.decompress(chunk))
            chunk = inflater.unused_data if inflater.eof else b""
        yield b"".join(pieces)
    if inflater is None or not inflater.eof:
        raise EOFError("compressed file ended before the end-of-stream marker was reached")


def _read_ahead(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """``chunks`` produced by a thread a few pieces ahead: zlib and file reads release the GIL, so
    decompression runs on the other core while the caller replays (a tenth of a replay's work).
    An exception in the thread is raised here, in order; closing this generator stops the thread."""
    ahead: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()

    def offer(item: tuple) -> bool:
        """Queue ``item`` unless the reader has gone; True if queued."""
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not offer((chunk, None)):
                    return
            offer((None, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which raises it
            offer((None, exc))

    # The thread takes the GIL several times per piece (zlib allocates its output a block at a time).
    # At the default 5 ms switch interval a busy caller keeps it waiting that long each time, until
    # the caller runs dry and waits for it in turn: 1 ms keeps the two overlapping (a 200,000-diff
    # replay: 1.9-2.2 s instead of 2.3-2.7 s).
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_interval, _READ_AHEAD_SWITCH_INTERVAL))
    thread = threading.Thread(target=produce, name="capture-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            chunk, exc = ahead.get()
            if exc is not None:
                raise exc
            if chunk is None:
                return
            yield chunk
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(switch_interval)


def _line_blocks(fh: io.BufferedReader) -> Iterator[list[bytes]]:
    """The lines of a capture file, a block at a time. Gzip is decompressed in large pieces, ahead of
    the caller on another thread: less than half the cost of reading it line by line through
    ``gzip.GzipFile``, and mostly off the caller's core."""
    chunks = _read_ahead(_gzip_chunks(fh)) if fh.peek(2)[:2] == GZIP_MAGIC else iter(lambda: fh.read(_READ), b"")
    tail = b""
    try:
        for chunk in chunks:
            # BytesIO finds the newlines with memchr; bytes.split looks at every byte in Python 3.11.
            # Lines are cut a few dozen kilobytes at a time, so they are still in the CPU's cache when
            # decoded. The tail joins the first line only: joining it to the chunk would copy it all.
            block = io.BytesIO(chunk)
            while lines := block.readlines(_LINES_AT_ONCE):
                if tail:
                    lines[0] = tail + lines[0]
                tail = lines.pop() if not lines[-1].endswith(b"\n") else b""
                if lines:
                    yield lines
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    if tail:
        yield [tail]


def read_capture(path: str | Path) -> tuple[Header, Iterator[Record]]:
    """Open a capture: return its header and an iterator over its records.

    Raises CaptureError naming the file (and line) for an empty file, a header that is not a
    marketfeed capture, an unknown version, a malformed record or a truncated gzip stream.
    """
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read: {exc}") from None
    blocks = _line_blocks(fh)
    try:
        lines = next(blocks, [])
    except (OSError, EOFError, zlib.error) as exc:
        fh.close()
        raise CaptureError(f"{path}: cannot read: {exc}") from None
    first = lines[0] if lines else b""
    try:
        if not first.strip():
            raise CaptureError(f"{path}:1: empty file, expected a capture header")
        try:
            header = _header_decoder.decode(first)
        except msgspec.DecodeError as exc:
            raise CaptureError(f"{path}:1: not a capture header ({exc})") from None
        if header.capture != "marketfeed":
            raise CaptureError(f"{path}:1: not a marketfeed capture (capture={header.capture!r})")
        if header.version != VERSION:
            raise CaptureError(
                f"{path}:1: capture version {header.version} is not supported (this reader knows {VERSION})"
            )
    except CaptureError:
        blocks.close()  # stops the read-ahead thread before the file closes
        fh.close()
        raise
    return header, _records(path, fh, lines[1:], blocks)


def _records(path: Path, fh: io.BufferedReader, lines: list[bytes], blocks: Iterator[list[bytes]]) -> Iterator[Record]:
    decode = _read_record
    lineno = 1
    try:
        with fh, contextlib.closing(blocks):  # the read-ahead thread stops before the file closes
            while True:
                for line in lines:
                    lineno += 1
                    try:
                        record = decode(line)
                    except msgspec.DecodeError as exc:
                        if not line.strip():
                            continue  # a blank line (looked at only here: most lines are records)
                        raise CaptureError(f"{path}:{lineno}: bad record: {exc}") from None
                    yield record
                lines = next(blocks, None)
                if lines is None:
                    return
    except (OSError, EOFError, zlib.error) as exc:
        # a gzip stream that ends early raises EOFError; corrupt data raises zlib.error
        raise CaptureError(f"{path}:{lineno + 1}: truncated or corrupt: {exc}") from None


class CaptureWriter:
    """Writes one capture file. Not thread-safe; call ``close`` (or use as a context manager)."""

    def __init__(
        self,
        path: str | Path,
        venues: list[str],
        source: str = "marketfeed",
        note: str | None = None,
        **header_extra: Any,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        raw = open(self.path, "wb")
        self._fh: io.BufferedIOBase = (
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=5)  # type: ignore[assignment]
            if self.path.name.endswith(".gz")
            else raw
        )
        self._raw = raw
        self._buf = bytearray()
        self.bytes_written = 0
        self.records = 0
        header: dict[str, Any] = {"capture": "marketfeed", "version": VERSION, "venues": venues}
        header["source"] = source
        if note is not None:
            header["note"] = note
        header.update(header_extra)
        self._write(header)

    def _write(self, obj: Any) -> None:
        # records collect in one buffer that goes to the file in large pieces: a write per record
        # costs a zlib call each (GzipFile does not buffer before Python 3.12), which halved the
        # frames per second the live runtime could record
        buf = self._buf
        before = len(buf)
        _encoder.encode_into(obj, buf, -1)
        buf.extend(b"\n")
        self.bytes_written += len(buf) - before
        self.records += 1
        if len(buf) >= _SPILL:
            self._spill()

    def _spill(self) -> None:
        if self._buf:
            self._fh.write(self._buf)
            self._buf.clear()

    def open(
        self, ts: int, conn: str, venue: str, url: str, plan: Any = None, resumed: bool = False
    ) -> None:
        self._write(Open(ts, conn, venue, url, plan, resumed))

    def send(self, ts: int, conn: str, data: str) -> None:
        self._write(Send(ts, conn, data))

    def recv(self, ts: int, conn: str, data: str | bytes) -> None:
        if isinstance(data, str):
            self._write(Recv(ts, conn, data=data))
        else:
            import base64

            self._write(Recv(ts, conn, b64=base64.b64encode(data).decode("ascii")))

    def close_conn(self, ts: int, conn: str, code: int | None, reason: str | None) -> None:
        self._write(Close(ts, conn, code, reason))

    def rest(self, ts: int, venue: str, url: str, status: int, data: str, error: str | None = None) -> None:
        self._write(Rest(ts, venue, url, status, data, error))

    def flush(self) -> None:
        """Push buffered records to the operating system (a gzip stream is sync-flushed, so what is on
        disk decompresses up to the last whole record)."""
        self._spill()
        self._fh.flush()
        if self._raw is not self._fh:
            self._raw.flush()

    @property
    def disk_bytes(self) -> int:
        """Bytes in the file so far (compressed for gzip): up to 256 KiB of records, and whatever zlib
        holds, reach it only at the next spill or ``flush``."""
        return self._raw.tell()

    def close(self) -> None:
        self._spill()
        self._fh.close()
        if self._raw is not self._fh:
            self._raw.close()

    def __enter__(self) -> CaptureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
