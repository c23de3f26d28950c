"""The stream's control messages (server to client), beside the EVENTS.md events on the same socket.

Client to server (JSON text, or MessagePack in binary frames):
``{"op":"auth","token":...}``, ``{"op":"subscribe","channels":[...],"id":1}``,
``{"op":"unsubscribe","channels":[...],"id":2}``, ``{"op":"ping","id":3}``,
``{"op":"snapshot","channel":"book:binance:BTC-USDT","id":4}``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from marketfeed.events import Book, Status, Top, Trade


class Hello(msgspec.Struct, tag_field="type", tag="hello"):
    version: int
    auth: str  # "ok" (authorised already) or "required" (send {"op":"auth"} first)
    heartbeat: float


class Ack(msgspec.Struct, tag_field="type", tag="ack"):
    op: str
    id: Any = None
    channels: list[str] = []  # subscribe/unsubscribe: the concrete channels now (un)subscribed


class Error(msgspec.Struct, tag_field="type", tag="error"):
    code: str  # bad_json, bad_request, unknown_op, unknown_channel, forbidden, too_large,
    #            rate_limited, unauthorized, book_invalid, slow_consumer, token_expired
    message: str
    id: Any = None
    channel: str | None = None


class Pong(msgspec.Struct, tag_field="type", tag="pong"):
    id: Any = None
    ts: int = 0  # server time, ns


class Snapshot(msgspec.Struct, tag_field="type", tag="snapshot"):
    id: Any
    channel: str
    book: Book


Control = Hello | Ack | Error | Pong | Snapshot
Message = Trade | Book | Top | Status | Hello | Ack | Error | Pong | Snapshot
