"""The stdout and jsonl sinks, with real files and real pipes."""

from __future__ import annotations

import asyncio
import gzip
import os
import threading
from pathlib import Path

import pytest

from marketfeed import events as ev
from marketfeed.config import JsonlSinkConfig, StdoutSinkConfig
from marketfeed.events import Book, Status, Trade
from marketfeed.sinks import make_sink
from marketfeed.sinks.jsonl import JsonlSink, read_jsonl
from marketfeed.sinks.stdout import StdoutSink


def sample(n: int, start: int = 0) -> list[ev.Event]:
    out: list[ev.Event] = []
    for i in range(start, start + n):
        if i % 3 == 0:
            out.append(Trade("binance", "BTC-USDT", 1_723_161_255_088_176_367 + i, None, str(i), 61800.3, 0.006, "sell"))
        elif i % 3 == 1:
            out.append(Book("okx", "BTC-USDT-PERP", i, 5, i, False, [(61800.2, 2.909)], [(61800.3, 0.0)], checksum=-12345))
        else:
            out.append(Status("kraken", None, i, ev.DISCONNECTED, "closed by peer"))
    return out


def decode_lines(data: bytes) -> list[ev.Event]:
    assert data.endswith(b"\n")
    return [ev.decode(line) for line in data.splitlines()]


class Clock:
    def __init__(self, t: float = 1_795_300_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def test_jsonl_writes_every_event_as_one_line(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path / "out" / "events.jsonl")  # the directory is created
    await sink.start()
    events = sample(50)
    await sink.write(events[:20])
    await sink.write(events[20:])
    await sink.close()
    assert sink.files == [tmp_path / "out" / "events.jsonl"]
    data = (tmp_path / "out" / "events.jsonl").read_bytes()
    assert decode_lines(data) == events
    assert data.splitlines()[0] == ev.encode(events[0])


async def test_jsonl_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for part in (sample(5), sample(5, start=5)):
        sink = JsonlSink(path)
        await sink.start()
        await sink.write(part)
        await sink.close()
    assert decode_lines(path.read_bytes()) == sample(10)


async def test_jsonl_gzip_adds_the_suffix_and_appends_readable_members(tmp_path: Path) -> None:
    for part in (sample(7), sample(7, start=7)):
        sink = JsonlSink(tmp_path / "events.jsonl", gzip=True)
        await sink.start()
        await sink.write(part)
        await sink.close()
    path = tmp_path / "events.jsonl.gz"
    assert sink.files == [path] and not (tmp_path / "events.jsonl").exists()
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert decode_lines(gzip.decompress(path.read_bytes())) == sample(14)


async def test_jsonl_flush_makes_data_readable_before_close(tmp_path: Path) -> None:
    for use_gzip in (False, True):
        sink = JsonlSink(tmp_path / f"flush-{use_gzip}.jsonl", gzip=use_gzip)
        await sink.start()
        await sink.write(sample(3))
        await sink.flush()
        raw = sink.files[0].read_bytes()
        if use_gzip:
            # a flushed but unfinished gzip stream: everything written so far decompresses
            raw = gzip.GzipFile(fileobj=__import__("io").BytesIO(raw)).read1(1 << 20)
        assert decode_lines(raw) == sample(3)
        await sink.close()


async def test_jsonl_rotates_by_size(tmp_path: Path) -> None:
    # equal-length lines, batches of 5, a limit of exactly 10 lines: every full file holds 10 lines
    events = [Trade("binance", "BTC-USDT", 1_723_161_255_088_176_367, None, f"{i:06d}", 61800.3, 0.006, "buy") for i in range(95)]
    line = len(ev.encode(events[0])) + 1
    sink = JsonlSink(tmp_path / "events.jsonl", rotate_mb=(10 * line) / (1024 * 1024), clock=Clock())
    await sink.start()
    for i in range(0, 95, 5):
        await sink.write(events[i : i + 5])
    await sink.close()
    assert len(sink.files) == 10
    assert all(p.parent == tmp_path and p.name.startswith("events-20261121T222640Z") and p.name.endswith(".jsonl") for p in sink.files)
    assert len(set(sink.files)) == 10  # the same second: a counter keeps the names apart
    assert [p.stat().st_size // line for p in sink.files] == [10] * 9 + [5]
    assert decode_lines(b"".join(p.read_bytes() for p in sink.files)) == events


async def test_jsonl_rotates_by_time_and_closes_an_idle_file_on_flush(tmp_path: Path) -> None:
    clock = Clock()
    sink = JsonlSink(tmp_path / "events.jsonl.gz", rotate_minutes=1, gzip=True, clock=clock)
    await sink.start()
    await sink.write(sample(4))
    clock.t += 30
    await sink.write(sample(4, start=4))
    assert len(sink.files) == 1
    clock.t += 31
    await sink.flush()  # a minute has passed: the file is finished (gzip trailer) though idle
    first = sink.files[0]
    assert decode_lines(gzip.decompress(first.read_bytes())) == sample(8)
    clock.t += 5
    await sink.write(sample(2, start=8))
    await sink.close()
    assert len(sink.files) == 2
    assert first.name == "events-20261121T222640Z.jsonl.gz"
    assert sink.files[1].name == "events-20261121T222746Z.jsonl.gz"
    assert decode_lines(gzip.decompress(sink.files[1].read_bytes())) == sample(2, start=8)
    assert read_jsonl(sink.files[1]) == gzip.decompress(sink.files[1].read_bytes())


async def test_jsonl_bad_path_fails_at_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    sink = JsonlSink(tmp_path / "file" / "events.jsonl")
    with pytest.raises(OSError):
        await sink.start()


async def test_stdout_sink_writes_lines_to_its_fd() -> None:
    read_fd, write_fd = os.pipe()
    try:
        sink = StdoutSink(write_fd)
        await sink.start()
        await sink.write(sample(10))
        await sink.close()
        os.close(write_fd)
        write_fd = -1
        with os.fdopen(read_fd, "rb") as fh:
            read_fd = -1
            assert decode_lines(fh.read()) == sample(10)
    finally:
        for fd in (read_fd, write_fd):
            if fd >= 0:
                os.close(fd)


async def test_stdout_sink_blocked_by_a_full_pipe_does_not_block_the_event_loop() -> None:
    """A reader that stops reading stalls only the sink's own write, on its worker thread."""
    read_fd, write_fd = os.pipe()
    big = sample(3) * 10_000  # several MB: far more than a pipe buffer
    sink = StdoutSink(write_fd)
    await sink.start()
    write = asyncio.create_task(sink.write(big))
    ticks = 0
    while ticks < 50:  # the loop keeps running while the write is stuck on the full pipe
        await asyncio.sleep(0)
        ticks += 1
    assert not write.done()
    received = bytearray()

    def drain() -> None:
        while chunk := os.read(read_fd, 1 << 16):
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    await write
    await sink.close()
    os.close(write_fd)
    await asyncio.to_thread(reader.join)
    os.close(read_fd)
    assert decode_lines(bytes(received)) == big


def test_make_sink_from_config(tmp_path: Path) -> None:
    assert isinstance(make_sink(StdoutSinkConfig()), StdoutSink)
    sink = make_sink(JsonlSinkConfig(path=str(tmp_path / "e.jsonl"), gzip=True, rotate_mb=1.0, flush_interval=0.0))
    assert isinstance(sink, JsonlSink)
    assert sink.path == tmp_path / "e.jsonl.gz" and sink.rotating and sink.flush_interval == 0.0
