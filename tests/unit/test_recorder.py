"""The recorder: capture files that marketfeed.capture reads, rotated by size and by age, each file
replayable on its own (resumed opens) and the sequence replayable as one recording."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import time
import zlib
from pathlib import Path

import pytest

from marketfeed.capture import Close, Open, Recv, Rest, Send, read_capture
from marketfeed.recorder import Recorder


def records(path: Path) -> tuple[object, list[object]]:
    header, it = read_capture(path)
    return header, list(it)


def test_a_single_file_is_a_valid_capture(tmp_path: Path) -> None:
    with Recorder(tmp_path, ["binance"], rotate_mb=None, rotate_minutes=None) as rec:
        rec.rest(1, "binance", "http://x/api/v3/exchangeInfo", 200, "{}")
        rec.open(2, "binance-1", "binance", "ws://x/stream", {"streams": ["btcusdt@trade"]})
        rec.send(3, "binance-1", '{"method":"SUBSCRIBE"}')
        rec.recv(4, "binance-1", '{"result":null,"id":1}')
        rec.recv(5, "binance-1", b"\x00\x01binary")
        rec.close_conn(6, "binance-1", 1000, "shutdown")
        rec.rest(7, "binance", "http://x/api/v3/depth?symbol=BTCUSDT", 0, "", error="timeout")
    [path] = rec.files
    assert path.name.endswith(".capture.jsonl.gz")
    header, recs = records(path)
    assert header.venues == ["binance"]
    assert [type(r) for r in recs] == [Rest, Open, Send, Recv, Recv, Close, Rest]
    assert recs[1].plan == {"streams": ["btcusdt@trade"]}
    assert recs[4].payload() == b"\x00\x01binary"
    assert recs[5].reason == "shutdown" and recs[5].code == 1000
    assert recs[6].status == 0 and recs[6].error == "timeout"


def test_plain_jsonl_when_gzip_is_off(tmp_path: Path) -> None:
    with Recorder(tmp_path, ["okx"], gzip=False) as rec:
        rec.rest(1, "okx", "http://x", 200, "{}")
    [path] = rec.files
    assert path.name.endswith(".capture.jsonl")
    assert path.read_bytes()[:1] == b"{"


def test_rotation_by_size_continues_and_resumes_open_connections(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, ["binance"], rotate_mb=2 / 1024, rotate_minutes=None, gzip=False)  # 2 KiB
    rec.open(1, "c1", "binance", "ws://x/stream", {"streams": ["a"]})
    rec.open(2, "c2", "binance", "ws://x/stream", None)
    rec.close_conn(3, "c2", 1006, "connection lost")
    frame = '{"stream":"btcusdt@trade","data":{"p":"1.0"}}' * 10
    ts = 4
    for _ in range(30):
        rec.recv(ts, "c1", frame)
        ts += 1
        rec.flush()  # the periodic flush is where rotation is decided
    rec.close()
    assert len(rec.files) >= 3
    assert sorted(tmp_path.iterdir()) == rec.files  # names sort in recording order
    previous = None
    seen_frames = 0
    for i, path in enumerate(rec.files):
        header, recs = records(path)
        first_line = json.loads(path.read_text().splitlines()[0])
        if i == 0:
            assert "continues" not in first_line
        else:
            assert first_line["continues"] == previous.name
            opens = [r for r in recs if isinstance(r, Open)]
            # c1 is still open: every later file starts by re-opening it; c2 closed in the first file
            assert [(o.conn, o.resumed, o.url, o.plan) for o in opens] == [("c1", True, "ws://x/stream", {"streams": ["a"]})]
            assert recs[0] is opens[0]
        seen_frames += sum(isinstance(r, Recv) for r in recs)
        previous = path
    assert seen_frames == 30


async def test_rotation_by_age_and_periodic_flush(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, ["kraken"], rotate_mb=None, rotate_minutes=0.1 / 60, flush_interval=0.02)
    rec.open(time.time_ns(), "k1", "kraken", "wss://x", None)
    deadline = time.monotonic() + 10
    while len(rec.files) < 3:
        assert time.monotonic() < deadline, "no rotation by age within 10 s"
        rec.recv(time.time_ns(), "k1", '{"event":"heartbeat"}')
        await asyncio.sleep(0.01)
    # data of the current file is on disk before close: a gzip sync flush decompresses up to it
    current = rec.path
    deadline = time.monotonic() + 10
    while True:
        data = current.read_bytes()
        try:
            text = gzip.GzipFile(fileobj=io.BytesIO(data)).read()
        except EOFError:  # no trailer yet (the file is open): read what is there
            text = zlib.decompressobj(31).decompress(data)
        if text.count(b"\n") >= 2:  # the header and the resumed open at least
            break
        assert time.monotonic() < deadline, "nothing flushed within 10 s"
        await asyncio.sleep(0.01)
    rec.close()
    for path in rec.files:
        header, recs = records(path)
        assert header.venues == ["kraken"]
        assert isinstance(recs[0], Open) and recs[0].conn == "k1"


def test_writing_after_close_is_an_error(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, ["binance"])
    rec.close()
    with pytest.raises(RuntimeError):
        rec.recv(1, "c", "x")
