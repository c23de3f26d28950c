"""The compiled capture-line reader (marketfeed/_capture.c) against msgspec's record decoder.

It reads plain recv lines itself and hands every other line to msgspec: for any line, ``read_record``
must give exactly what msgspec gives (the same record, or a DecodeError), and whatever it reads
itself must be what msgspec reads."""

from __future__ import annotations

import gzip
import json
import random
from itertools import islice
from pathlib import Path

import msgspec
import pytest

from marketfeed import capture
from marketfeed.capture import Recv
from tests.unit.fuzzing import mutated

_capture = pytest.importorskip("marketfeed._capture", reason="the C extension is not built here")
_capture.configure(Recv, capture._record_decoder.decode)  # as marketfeed.capture does where built

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "captures"


def msgspec_record(line: bytes) -> object:
    try:
        return capture._record_decoder.decode(line)
    except msgspec.DecodeError:
        return None


def check_line(line: bytes) -> bool:
    """read_record gives msgspec's answer; True if the C reader read the line itself."""
    expected = msgspec_record(line)
    plain = _capture.plain_recv(line)
    if expected is None:
        assert plain is None, line
        with pytest.raises(msgspec.DecodeError):
            _capture.read_record(line)
        return False
    got = _capture.read_record(line)
    assert type(got) is type(expected) and got == expected, (line, got, expected)
    if plain is not None:
        assert type(plain) is Recv and plain == expected
    return plain is not None


def recv_line(data: str, conn: str = "c1", ts: int = 1723161253937185767) -> bytes:
    return json.dumps({"ev": "recv", "ts": ts, "conn": conn, "data": data}, separators=(",", ":")).encode() + b"\n"


FRAME = '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1,"s":"BTCUSDT","U":1,"u":2,"b":[["1.0","2.0"]],"a":[]}}'


def test_a_recv_line_is_read_here_and_equals_msgspecs() -> None:
    assert check_line(recv_line(FRAME))
    assert check_line(recv_line(""))  # an empty frame
    assert check_line(recv_line("tab\t newline\n cr\r slash/ backslash\\ quote\" bell\b ff\f"))
    assert check_line(b'{"ts":5,"conn":"c2","ev":"recv","data":"x\\/y"}')  # another key order, \/
    assert check_line(b' { "ev" : "recv" , "ts" : -5 , "conn" : "c1" , "data" : "x" } \r\n')
    assert check_line(b'{"ev":"recv","ts":1,"conn":"c1","data":"a\x7fb"}')  # DEL needs no escape in JSON
    long = "".join(chr(32 + i % 95) for i in range(1000))  # every printable byte, runs of every length
    assert check_line(recv_line(long)) and check_line(recv_line(long.replace("5", "\n")))


def test_connection_names_are_reused_only_when_equal() -> None:
    a = _capture.plain_recv(recv_line("x", conn="c1"))
    b = _capture.plain_recv(recv_line("x", conn="c2"))
    c = _capture.plain_recv(recv_line("x", conn="c2"))
    assert (a.conn, b.conn, c.conn) == ("c1", "c2", "c2")


NOT_PLAIN = [
    recv_line("caf\u00e9"),  # \u escape (json.dumps writes non-ASCII so)
    json.dumps({"ev": "recv", "ts": 1, "conn": "c1", "data": "café"}, ensure_ascii=False).encode(),  # UTF-8
    b'{"ev":"recv","ts":1,"conn":"c\\u0031","data":"x"}',
    b'{"ev":"recv","ts":1,"conn":"c1","b64":"eA=="}',  # binary frame
    b'{"ev":"recv","ts":1,"conn":"c1","data":"x","extra":1}',  # unknown key: msgspec ignores it
    b'{"ev":"recv","ts":1,"conn":"c1","data":null}',
    b'{"ev":"send","ts":1,"conn":"c1","data":"x"}',
    b'{"ev":"open","ts":1,"conn":"c1","venue":"binance","url":"wss://x"}',
    b'{"ev":"recv","ts":1.5,"conn":"c1","data":"x"}',
    b'{"ev":"recv","ts":"1","conn":"c1","data":"x"}',
    b'{"ev":"recv","ts":99999999999999999999,"conn":"c1","data":"x"}',  # beyond 64 bits: msgspec reads it
    b'{"ev":"recv","ts":1,"conn":"c1","data":"x","data":"y"}',  # twice
    b'{"ev":"recv","ts":1,"ts":2,"conn":"c1","data":"x"}',
    b'{"ev":"recv","ts":1,"conn":"c1"}',  # missing data
    b'{"ts":1,"conn":"c1","data":"x"}',  # missing ev
    b'{"ev":"recv","ts":1,"conn":"c1","data":"a\\qb"}',  # a bad escape
    b'{"ev":"recv","ts":1,"conn":"c1","data":"a\x01b"}',  # a raw control character
    b'{"ev":"recv","ts":1,"conn":"c1","data":"x"',  # truncated
    b'{"ev":"recv","ts":1,"conn":"c1","data":"x"} x',
    b"",
    b"\n",
    b"[]",
]


@pytest.mark.parametrize("line", NOT_PLAIN, ids=range(len(NOT_PLAIN)))
def test_other_lines_get_msgspecs_answer(line: bytes) -> None:
    assert not check_line(line)


def test_fuzzed_lines_get_msgspecs_answer() -> None:
    rng = random.Random(3)
    alphabet = '{}[]",:\\/.-0123456789ebnrtuvsx \x01\x7f\xc3'
    read_here = 0
    for _ in range(20_000):
        line = mutated(rng, recv_line(FRAME if rng.random() < 0.5 else 'a"b\\c\n').decode(), alphabet)
        read_here += check_line(line.encode())
    assert read_here > 1000


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/captures is absent (real recordings of every venue)")
def test_every_line_of_the_real_recordings_reads_as_msgspec_reads_it() -> None:
    files = sorted(SHARED.glob("*/*.capture.jsonl.gz"))
    assert files
    read_here = 0
    for path in files:
        with gzip.open(path, "rb") as fh:
            for line in islice(fh, 1, 3000):  # the header is not a record
                read_here += check_line(line)
    assert read_here > 5000


def test_capture_module_uses_the_reader_where_built() -> None:
    if capture.ACCELERATED:
        assert capture._read_record is _capture.read_record
