"""RFC 3339 timestamps (``2023-02-09T20:32:50.714964855Z``) to integer nanoseconds since the epoch.

Coinbase stamps every envelope (ns precision) and every level and trade (µs), so this runs once per
message on the hot path: the date part's epoch seconds are cached (one new day a day), the time of day
and the fraction are sliced by position, and anything unusual falls back to ``datetime``.
"""

from __future__ import annotations

from calendar import timegm
from datetime import datetime

_day_seconds: dict[str, int] = {}


def _day(date: str) -> int:
    seconds = _day_seconds.get(date)
    if seconds is None:
        seconds = timegm((int(date[0:4]), int(date[5:7]), int(date[8:10]), 0, 0, 0))
        if len(_day_seconds) > 64:
            _day_seconds.clear()
        _day_seconds[date] = seconds
    return seconds


def parse_time_ns(text: str | None) -> int | None:
    """Nanoseconds since the epoch, or None when ``text`` is missing or not a timestamp."""
    if not text:
        return None
    try:
        if text[-1] == "Z" and text[10] == "T" and text[13] == ":" and text[16] == ":":
            seconds = _day(text[:10]) + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
            if len(text) > 21 and text[19] == ".":
                frac = text[20:-1]
                return seconds * 1_000_000_000 + int((frac + "000000000")[:9])
            if len(text) == 20:
                return seconds * 1_000_000_000
        return _parse_slow(text)
    except (ValueError, IndexError):
        return None


def _parse_slow(text: str) -> int | None:
    """Offsets other than Z, or odd shapes: let datetime parse it (µs precision at most)."""
    head, dot, rest = text.partition(".")
    nanos = 0
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, tail = rest[:digits], rest[digits:]
        nanos = int((frac + "000000000")[:9]) if frac else 0
        text = head + tail
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return int(dt.timestamp()) * 1_000_000_000 + nanos
