"""Reading captures: gzip in one or several members, plain text, long lines, truncation."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from marketfeed.capture import CaptureError, CaptureWriter, Recv, read_capture

TS = 1_700_000_000_000_000_000


def write(path: Path, frames: list[str]) -> Path:
    with CaptureWriter(path, ["binance"]) as w:
        w.open(TS, "c1", "binance", "wss://stream.binance.com:9443/stream")
        for i, frame in enumerate(frames):
            w.recv(TS + i, "c1", frame)
    return path


def frames_of(path: Path) -> list[str]:
    _, records = read_capture(path)
    return [r.data for r in records if type(r) is Recv]


def test_concatenated_gzip_members_and_padding_read_as_one_file(tmp_path: Path) -> None:
    """`cat a.gz b.gz` is a valid gzip file; gzip also allows zero padding after a member."""
    first = write(tmp_path / "a.capture.jsonl.gz", [f'{{"n":{i}}}' for i in range(3000)])
    more = b"".join(f'{{"ev":"recv","ts":{TS + i},"conn":"c1","data":"x{i}"}}\n'.encode() for i in range(5000))
    joined = tmp_path / "joined.capture.jsonl.gz"
    joined.write_bytes(first.read_bytes() + gzip.compress(more) + b"\0" * 16 + gzip.compress(b"\n"))
    got = frames_of(joined)
    assert got == [f'{{"n":{i}}}' for i in range(3000)] + [f"x{i}" for i in range(5000)]


def test_lines_longer_than_a_read_block_and_crlf(tmp_path: Path) -> None:
    big = "y" * 700_000  # longer than the reader's 256 KiB blocks
    for name in ("long.capture.jsonl", "long.capture.jsonl.gz"):
        path = write(tmp_path / name, ["a", big, "b"])
        assert frames_of(path) == ["a", big, "b"]
    crlf = tmp_path / "crlf.capture.jsonl"
    crlf.write_bytes(write(tmp_path / "lf.capture.jsonl", ["a", "b"]).read_bytes().replace(b"\n", b"\r\n") + b"\r\n")
    assert frames_of(crlf) == ["a", "b"]


def test_truncated_gzip_gives_every_whole_record_then_names_the_line(tmp_path: Path) -> None:
    frames = [f'{{"n":{i},"pad":"{(i * 7919) % 100003:06d}"}}' for i in range(50_000)]
    path = write(tmp_path / "t.capture.jsonl.gz", frames)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    _, records = read_capture(path)
    got = []
    with pytest.raises(CaptureError, match=r"t\.capture\.jsonl\.gz:\d+: truncated or corrupt"):
        for r in records:
            if type(r) is Recv:
                got.append(r.data)
    assert 0 < len(got) < len(frames) and got == frames[: len(got)]


def test_empty_and_unreadable_files_are_capture_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.capture.jsonl"
    empty.write_bytes(b"")
    with pytest.raises(CaptureError, match="empty file"):
        read_capture(empty)
    bad_gzip = tmp_path / "bad.capture.jsonl.gz"
    bad_gzip.write_bytes(b"\x1f\x8b" + b"\xff" * 64)
    with pytest.raises(CaptureError, match="cannot read"):
        read_capture(bad_gzip)


def test_a_gzip_member_that_gives_no_bytes_in_a_block(tmp_path: Path) -> None:
    """An empty member between two (a block then decompresses to nothing) changes nothing."""
    first = write(tmp_path / "a.capture.jsonl.gz", ["a", "b"])
    joined = tmp_path / "j.capture.jsonl.gz"
    joined.write_bytes(first.read_bytes() + gzip.compress(b"") + gzip.compress(b'{"ev":"recv","ts":1,"conn":"c1","data":"c"}'))
    assert frames_of(joined) == ["a", "b", "c"]


def test_the_read_ahead_thread_ends_with_the_reader(tmp_path: Path) -> None:
    """Gzip is read ahead on a thread: it must end whether the reader finishes, stops early, hits a
    truncated stream or a bad header, and the switch interval it shortens must be restored."""
    import sys
    import threading

    interval = sys.getswitchinterval()

    def readers() -> int:
        return sum(t.name == "capture-read-ahead" for t in threading.enumerate())

    path = write(tmp_path / "r.capture.jsonl.gz", [f'{{"n":{i},"pad":"{i * 7919 % 100003:06d}"}}' for i in range(60_000)])
    assert len(frames_of(path)) == 60_000
    _, records = read_capture(path)
    next(records)
    records.close()  # stops early, with the thread's queue full
    cut = tmp_path / "cut.capture.jsonl.gz"
    cut.write_bytes(path.read_bytes()[:200_000])
    with pytest.raises(CaptureError, match="truncated"):
        frames_of(cut)
    bad = tmp_path / "bad-header.capture.jsonl.gz"
    bad.write_bytes(gzip.compress(b'{"capture": "other", "version": 1}\n' + b"x" * 3_000_000))
    with pytest.raises(CaptureError, match="not a marketfeed capture"):
        read_capture(bad)
    assert readers() == 0 and sys.getswitchinterval() == interval


def test_the_read_ahead_thread_runs_at_a_short_switch_interval(tmp_path: Path) -> None:
    import sys

    from marketfeed import capture

    before = sys.getswitchinterval()
    path = write(tmp_path / "r.capture.jsonl.gz", ["a", "b"])
    _, records = read_capture(path)
    next(records)
    assert sys.getswitchinterval() == min(before, capture._READ_AHEAD_SWITCH_INTERVAL) < 0.005
    records.close()
    assert sys.getswitchinterval() == before
