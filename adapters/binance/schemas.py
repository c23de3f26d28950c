"""Binance wire messages (spot and USD-M) as msgspec Structs with the venue's own field names.

Prices and quantities arrive as decimal strings; the decoders are built with ``strict=False`` so that
msgspec parses them straight to floats (correctly rounded, so the shortest form of each float is the
venue's text without trailing zeros). Unknown fields are ignored, so new venue fields never break us.
"""

from __future__ import annotations

from typing import Any

import msgspec

PriceLevels = list[tuple[float, float]]


class RestError(msgspec.Struct):
    code: int
    msg: str


class Envelope(msgspec.Struct):
    """Any text frame. Combined streams wrap the payload as ``{"stream": ..., "data": ...}``; control
    responses carry ``id`` with ``result`` or ``code``/``msg``; raw ``/ws`` streams are bare events."""

    stream: str | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty (falsy) when absent
    id: int | str | None = None
    result: Any = None
    code: int | None = None
    msg: str | None = None
    error: RestError | None = None  # some servers nest the error: {"error":{"code":..,"msg":..},"id":..}
    e: str | None = None  # event type of a bare (raw-stream) event
    s: str | None = None  # symbol of a bare event


class DepthUpdate(msgspec.Struct):
    """``<symbol>@depth[@100ms]``: absolute quantities, "0" deletes. USD-M adds ``pu`` and ``T``."""

    E: int
    s: str
    U: int
    u: int
    b: PriceLevels
    a: PriceLevels
    pu: int | None = None
    T: int | None = None
    ts: int = 0  # not on the wire: our receive time, kept while the diff waits in the sync buffer


class Trade(msgspec.Struct, gc=False):
    """``<symbol>@trade``: one fill. ``m`` true means the buyer was the maker, so the taker sold."""

    s: str
    t: int
    p: float
    q: float
    T: int
    m: bool


class AggTrade(msgspec.Struct, gc=False):
    """``<symbol>@aggTrade``: the fills of one taker order at one price (``a`` is its own id space)."""

    s: str
    a: int
    p: float
    q: float
    T: int
    m: bool


class DepthSnapshot(msgspec.Struct):
    """REST ``/api/v3/depth`` (spot, also the 2021 ``/api/v1/depth``) and ``/fapi/v1/depth``."""

    lastUpdateId: int
    bids: PriceLevels
    asks: PriceLevels
    E: int | None = None
    T: int | None = None


class SymbolInfo(msgspec.Struct):
    symbol: str
    baseAsset: str
    quoteAsset: str
    status: str = "TRADING"
    contractType: str | None = None  # USD-M: PERPETUAL, CURRENT_QUARTER, ...
    deliveryDate: int | None = None  # USD-M, ms


class RateLimit(msgspec.Struct):
    rateLimitType: str
    interval: str
    intervalNum: int
    limit: int


class ExchangeInfo(msgspec.Struct):
    symbols: list[SymbolInfo]
    rateLimits: list[RateLimit] = []


class ServerShutdown(msgspec.Struct):
    E: int | None = None


# Whole combined-stream frames, for the hot path: the adapter reads the stream name off the frame's
# first bytes and decodes frame and payload in one pass.
class DepthFrame(msgspec.Struct):
    data: DepthUpdate


class TradeFrame(msgspec.Struct, gc=False):
    data: Trade


class AggTradeFrame(msgspec.Struct, gc=False):
    data: AggTrade


envelope_decoder = msgspec.json.Decoder(Envelope)
depth_decoder = msgspec.json.Decoder(DepthUpdate, strict=False)
trade_decoder = msgspec.json.Decoder(Trade, strict=False)
agg_trade_decoder = msgspec.json.Decoder(AggTrade, strict=False)
snapshot_decoder = msgspec.json.Decoder(DepthSnapshot, strict=False)
rest_error_decoder = msgspec.json.Decoder(RestError)
exchange_info_decoder = msgspec.json.Decoder(ExchangeInfo)
depth_frame_decoder = msgspec.json.Decoder(DepthFrame, strict=False)
trade_frame_decoder = msgspec.json.Decoder(TradeFrame, strict=False)
agg_trade_frame_decoder = msgspec.json.Decoder(AggTradeFrame, strict=False)
