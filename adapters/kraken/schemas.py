"""Kraken WebSocket wire messages as msgspec Structs (field names as on the wire), one decoder each,
built once.

v2 channel messages (``{"channel": ..., "type": ..., "data": [...]}``) decode through one tagged union
on ``channel``; method responses (``subscribe``/``unsubscribe`` acks, ``pong``) have no ``channel`` and
decode as ``MethodResponse``. v1 frames (arrays, and ``{"event": ...}`` objects) are decoded generically:
v1 is only replayed from older archives, never subscribed live.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import msgspec

# --- v2 channel messages --------------------------------------------------------------------------


class BookLevel(msgspec.Struct, gc=False):
    price: float
    qty: float


class BookData(msgspec.Struct, gc=False):
    symbol: str
    bids: list[BookLevel] = []
    asks: list[BookLevel] = []
    checksum: int | None = None
    timestamp: str | None = None


class BookMessage(msgspec.Struct, tag_field="channel", tag="book", gc=False):
    type: str  # "snapshot" or "update"
    data: list[BookData]


class TradeData(msgspec.Struct, gc=False):
    symbol: str
    side: str
    price: float
    qty: float
    trade_id: int
    timestamp: str | None = None
    ord_type: str | None = None


class TradeMessage(msgspec.Struct, tag_field="channel", tag="trade", gc=False):
    type: str
    data: list[TradeData]


class HeartbeatMessage(msgspec.Struct, tag_field="channel", tag="heartbeat", gc=False):
    pass


class StatusData(msgspec.Struct):
    system: str | None = None
    api_version: str | None = None
    connection_id: int | None = None
    version: str | None = None


class StatusMessage(msgspec.Struct, tag_field="channel", tag="status"):
    type: str | None = None
    data: list[StatusData] = []


class InstrumentPair(msgspec.Struct):
    symbol: str
    base: str
    quote: str
    price_precision: int
    qty_precision: int
    status: str | None = None


class InstrumentData(msgspec.Struct):
    pairs: list[InstrumentPair] = []


class InstrumentMessage(msgspec.Struct, tag_field="channel", tag="instrument"):
    type: str | None = None
    data: InstrumentData = msgspec.field(default_factory=InstrumentData)


ChannelMessage = BookMessage | TradeMessage | HeartbeatMessage | StatusMessage | InstrumentMessage

channel_decoder = msgspec.json.Decoder(ChannelMessage)


# --- v2 method responses --------------------------------------------------------------------------


class SubscribeResult(msgspec.Struct):
    channel: str | None = None
    symbol: str | None = None
    depth: int | None = None
    snapshot: bool | None = None


class MethodResponse(msgspec.Struct):
    method: str
    success: bool | None = None
    result: SubscribeResult | None = None
    error: str | None = None
    symbol: str | None = None  # some error acks name the symbol at the top level
    req_id: int | None = None


method_decoder = msgspec.json.Decoder(MethodResponse)


# --- exact decoding (rare path) -------------------------------------------------------------------
# A value too large to be formatted exactly from its float (see checksum.py) is re-read with its own
# decimal digits: msgspec decodes a JSON number into Decimal from its text, without a float between.


class ExactLevel(msgspec.Struct, gc=False):
    price: Decimal
    qty: Decimal


class ExactBookData(msgspec.Struct, gc=False):
    symbol: str
    bids: list[ExactLevel] = []
    asks: list[ExactLevel] = []


class ExactBookMessage(msgspec.Struct, gc=False):
    data: list[ExactBookData]


exact_book_decoder = msgspec.json.Decoder(ExactBookMessage)


# --- v1 -------------------------------------------------------------------------------------------

v1_decoder = msgspec.json.Decoder(Any)


def subscribe(channel: str, symbols: list[str] | None, req_id: int, **params: Any) -> str:
    body: dict[str, Any] = {"channel": channel}
    if symbols is not None:
        body["symbol"] = symbols
    body.update(params)
    return msgspec.json.encode({"method": "subscribe", "params": body, "req_id": req_id}).decode()


def unsubscribe(channel: str, symbols: list[str], req_id: int, **params: Any) -> str:
    body: dict[str, Any] = {"channel": channel, "symbol": symbols}
    body.update(params)
    return msgspec.json.encode({"method": "unsubscribe", "params": body, "req_id": req_id}).decode()


def ping(req_id: int) -> str:
    return msgspec.json.encode({"method": "ping", "req_id": req_id}).decode()
