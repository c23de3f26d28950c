"""RFC 3339 timestamps (``2023-02-09T20:32:50.714964855Z``) to integer nanoseconds since the epoch.

Coinbase stamps every envelope (ns precision) and every level and trade (µs), so this runs once per
message on the hot path: the date part's epoch seconds are cached (one new day a day), the time of day
and the fraction are sliced by position, and anything unusual falls back to ``datetime``.
"""

from __future__ import annotations

from calendar import timegm
from datetime import datetime

_day_seconds: dict[str, int] = {}
_second_cache: dict[str, int] = {}  # "YYYY-MM-DDTHH:MM:SS" -> epoch seconds: messages share their second
_SCALE = [10 ** (9 - n) for n in range(10)]  # fraction digits -> multiplier to nanoseconds


def _day(date: str) -> int:
    seconds = _day_seconds.get(date)
    if seconds is None:
        seconds = timegm((int(date[0:4]), int(date[5:7]), int(date[8:10]), 0, 0, 0))
        if len(_day_seconds) > 64:
            _day_seconds.clear()
        _day_seconds[date] = seconds
    return seconds


def _second(head: str) -> int:
    if head[10] != "T" or head[13] != ":" or head[16] != ":":
        raise ValueError(head)
    seconds = _day(head[:10]) + int(head[11:13]) * 3600 + int(head[14:16]) * 60 + int(head[17:19])
    if len(_second_cache) > 4096:
        _second_cache.clear()
    _second_cache[head] = seconds
    return seconds


def parse_time_ns(text: str | None) -> int | None:
    """Nanoseconds since the epoch, or None when ``text`` is missing or not a timestamp."""
    if not text:
        return None
    try:
        if text[-1] == "Z":
            head = text[:19]
            seconds = _second_cache.get(head)
            if seconds is None:
                seconds = _second(head)
            n = len(text)
            if n == 20:
                return seconds * 1_000_000_000
            if 21 < n <= 30 and text[19] == ".":
                frac = text[20:-1]
                if frac.isdigit():
                    return seconds * 1_000_000_000 + int(frac) * _SCALE[n - 21]
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
