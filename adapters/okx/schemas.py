"""OKX v5 public wire messages (EXCHANGES.md 5.2-5.6) as msgspec Structs named after the venue's fields.

A frame is decoded in two steps: the envelope (``Push``) with ``data`` kept raw, then the payload by
channel with a decoder built once per message type. Unknown fields are ignored, so new venue fields
do not break us.

Book levels stay strings: the checksum needs the exact text OKX sent (``"3366"`` and ``"3366.0"`` hash
differently), so the adapter parses floats from them itself.
"""

from __future__ import annotations

import msgspec


class Arg(msgspec.Struct, gc=False):
    channel: str
    instId: str | None = None


class Push(msgspec.Struct, gc=False):
    """Every text frame but ``pong``: a data push (``arg`` + ``data``) or an event (``event``)."""

    arg: Arg | None = None
    action: str | None = None  # books: "snapshot" or "update"
    data: msgspec.Raw = msgspec.Raw()  # empty when absent
    event: str | None = None  # subscribe, unsubscribe, error, notice, channel-conn-count, ...
    code: str | int | None = None
    msg: str | None = None
    connId: str | None = None
    id: str | None = None


class Level(msgspec.Struct, array_like=True, gc=False):
    """``[price, size, "0", numOrders]``: only the first two are read (trailing items are ignored,
    so REST ``books-full``'s 3-item levels decode too). One struct per level is cheaper to decode than
    a list of four strings."""

    px: str
    sz: str


class BookData(msgspec.Struct, gc=False):
    """One ``books``/``books-l2-tbt``/``books50-l2-tbt`` payload, also the REST ``market/books`` one.

    Levels are ``[price, size, "0", numOrders]`` strings (REST ``books-full``: 3 elements); only the
    first two are used. ``seqId``/``prevSeqId`` are absent in recordings from before OKX added them
    (2022) and ``checksum`` is 0 since the 2026 deprecation.
    """

    asks: list[Level] = []
    bids: list[Level] = []
    ts: int | None = None  # ms, sent as a string (decoded with strict=False)
    checksum: int = 0
    seqId: int | None = None
    prevSeqId: int | None = None


class BookPush(msgspec.Struct, gc=False):
    """A book channel's frame decoded in one pass (the hot path; ``Push`` + ``BookData`` otherwise)."""

    arg: Arg
    action: str | None = None
    data: list[BookData] = []


class TradeData(msgspec.Struct, gc=False):
    instId: str
    tradeId: str
    px: float  # decoded from the venue's decimal text (strict=False)
    sz: float
    side: str  # taker side
    ts: int  # ms, sent as a string
    count: str | None = None
    seqId: int | None = None


class Instrument(msgspec.Struct, gc=False):
    """One entry of ``GET /api/v5/public/instruments`` (5.6); empty strings where not applicable."""

    instType: str
    instId: str
    baseCcy: str = ""
    quoteCcy: str = ""
    settleCcy: str = ""
    ctVal: str = ""
    ctMult: str = ""
    ctValCcy: str = ""
    ctType: str = ""
    uly: str = ""
    instFamily: str = ""
    tickSz: str = ""
    lotSz: str = ""
    expTime: str = ""
    state: str = ""


class RestInstruments(msgspec.Struct, gc=False):
    code: str | int
    msg: str = ""
    data: list[Instrument] = []


class RestBooks(msgspec.Struct, gc=False):
    code: str | int
    msg: str = ""
    data: list[BookData] = []


class RestError(msgspec.Struct, gc=False):
    code: str | int | None = None
    msg: str | None = None


push_decoder = msgspec.json.Decoder(Push)
book_data_decoder = msgspec.json.Decoder(list[BookData], strict=False)
book_push_decoder = msgspec.json.Decoder(BookPush, strict=False)
trade_data_decoder = msgspec.json.Decoder(list[TradeData], strict=False)
instruments_decoder = msgspec.json.Decoder(RestInstruments)
rest_books_decoder = msgspec.json.Decoder(RestBooks, strict=False)
rest_error_decoder = msgspec.json.Decoder(RestError)
