"""The normalised events: the output contract of ../shared/docs/EVENTS.md.

msgspec Structs tagged by ``type``. Fields are only ever added (with a default), never renamed.
"""

from __future__ import annotations

import os

import msgspec

Level = tuple[float, float]  # (price, size): a JSON array [price, size]; size 0 removes the level in a diff


class Trade(msgspec.Struct, tag_field="type", tag="trade", gc=False):
    venue: str
    symbol: str
    ts_recv: int
    ts_exchange: int | None
    trade_id: str
    price: float
    size: float
    side: str | None  # taker side: "buy", "sell", or None where the venue does not say


class Book(msgspec.Struct, tag_field="type", tag="book", gc=False):
    venue: str
    symbol: str
    ts_recv: int
    ts_exchange: int | None
    seq: int | None
    snapshot: bool
    bids: list[Level]  # best first
    asks: list[Level]  # best first
    checksum: int | None = None


class Top(msgspec.Struct, tag_field="type", tag="top", gc=False):
    venue: str
    symbol: str
    ts_recv: int
    ts_exchange: int | None
    seq: int | None
    bids: list[Level]
    asks: list[Level]


class Status(msgspec.Struct, tag_field="type", tag="status", gc=False):
    venue: str
    symbol: str | None  # None on a connection-level status
    ts_recv: int
    state: str
    reason: str | None = None


# Status states (EVENTS.md)
CONNECTED = "connected"
DISCONNECTED = "disconnected"
SUBSCRIBED = "subscribed"
BOOK_INVALID = "book_invalid"
STALE = "stale"
ERROR = "error"

Event = Trade | Book | Top | Status

_encoder = msgspec.json.Encoder()
_encode_lines = _encoder.encode_lines
_decoder = msgspec.json.Decoder(Event)


def encode(event: Event) -> bytes:
    """One event as compact JSON (no trailing newline)."""
    return _encoder.encode(event)


def _encode_lines_py(events: list[Event], buffer: bytearray) -> None:
    buffer += _encode_lines(events)


# encode_lines(events, buffer): append events as JSON Lines to ``buffer``, the hot path of every text
# sink. Where built, marketfeed/_events.c writes Book, Trade and Top events of short decimals itself,
# byte for byte as msgspec would, and hands msgspec every other event; else msgspec writes them all.
try:
    from marketfeed import _events
except ImportError:
    _events = None
ACCELERATED = _events is not None and not os.environ.get("MARKETFEED_PURE_PYTHON")
if ACCELERATED:
    _events.configure(Book, Trade, Top, _encoder.encode)
    encode_lines = _events.encode_lines
else:
    encode_lines = _encode_lines_py


def decode(data: bytes | str) -> Event:
    return _decoder.decode(data)
