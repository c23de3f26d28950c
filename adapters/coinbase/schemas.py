"""Coinbase wire messages as msgspec Structs with the venue's own field names.

Advanced Trade (``coinbase``): every frame is an envelope ``{"channel", "timestamp", "sequence_num",
"events": [...]}``; the envelope is a tagged union on ``channel`` so one decode of a frame yields the
typed events of its channel. Prices and sizes are decimal strings; the decoders use ``strict=False`` so
msgspec parses them straight to floats (correctly rounded: a float's shortest form is the venue's text
without trailing zeros). Unknown fields are ignored, so new venue fields never break us.

Legacy Exchange feed (``coinbase-legacy``): flat messages tagged by ``type`` (EXCHANGES.md 4.2).
"""

from __future__ import annotations

import msgspec

# --- Advanced Trade WebSocket ---------------------------------------------------------------------


class L2Update(msgspec.Struct, gc=False):
    """One level of an ``l2_data`` event: ``side`` is ``bid`` or ``offer``; ``new_quantity`` is the
    new absolute size ("0" deletes)."""

    side: str
    price_level: float
    new_quantity: float
    event_time: str | None = None


class L2Event(msgspec.Struct, gc=False):
    type: str  # "snapshot" (the full book) or "update"
    product_id: str
    updates: list[L2Update]


class MarketTrade(msgspec.Struct, gc=False):
    trade_id: str
    product_id: str
    price: float
    size: float
    side: str  # "BUY" / "SELL"; taker or maker is not documented (EXCHANGES.md 4.1): we treat it as taker
    time: str | None = None


class MarketTradesEvent(msgspec.Struct, gc=False):
    type: str  # "snapshot" (recent trades right after subscribing) or "update"
    trades: list[MarketTrade] = []


class HeartbeatEvent(msgspec.Struct, gc=False):
    current_time: str | None = None
    heartbeat_counter: int | str | None = None  # an integer in production, a string in older prose


class SubscriptionsEvent(msgspec.Struct, gc=False):
    subscriptions: dict[str, list[str]] = {}  # channel -> product ids still subscribed


class L2Data(msgspec.Struct, tag_field="channel", tag="l2_data", gc=False):
    sequence_num: int
    events: list[L2Event]
    timestamp: str | None = None
    client_id: str | None = None


class MarketTrades(msgspec.Struct, tag_field="channel", tag="market_trades", gc=False):
    sequence_num: int
    events: list[MarketTradesEvent]
    timestamp: str | None = None
    client_id: str | None = None


class Heartbeats(msgspec.Struct, tag_field="channel", tag="heartbeats", gc=False):
    sequence_num: int
    events: list[HeartbeatEvent] = []
    timestamp: str | None = None
    client_id: str | None = None


class Subscriptions(msgspec.Struct, tag_field="channel", tag="subscriptions", gc=False):
    sequence_num: int
    events: list[SubscriptionsEvent] = []
    timestamp: str | None = None
    client_id: str | None = None


Message = L2Data | MarketTrades | Heartbeats | Subscriptions


class Other(msgspec.Struct):
    """Whatever the tagged union did not know: another channel (``ticker``, ``candles``...) still
    carries ``sequence_num`` and must count for gap detection; an error is ``{"type":"error",...}``."""

    channel: str | None = None
    sequence_num: int | None = None
    type: str | None = None
    message: str | None = None
    reason: str | None = None


message_decoder = msgspec.json.Decoder(Message, strict=False)
other_decoder = msgspec.json.Decoder(Other, strict=False)


# --- REST: GET /api/v3/brokerage/market/products ---------------------------------------------------


class Product(msgspec.Struct, gc=False):
    product_id: str
    base_currency_id: str = ""
    quote_currency_id: str = ""
    product_type: str = "SPOT"
    status: str = ""
    trading_disabled: bool = False
    alias: str = ""  # e.g. BTC-USDC has alias "BTC-USD": its market data is served as BTC-USD
    alias_to: list[str] = []
    base_increment: str | None = None
    price_increment: str | None = None


class ProductsResponse(msgspec.Struct):
    products: list[Product] = []
    num_products: int | None = None


products_decoder = msgspec.json.Decoder(ProductsResponse, strict=False)


# --- Legacy Exchange feed (wss://ws-feed.exchange.coinbase.com, 2021 and earlier) -----------------

LegacyLevel = tuple[float, float]


class LegacySnapshot(msgspec.Struct, tag_field="type", tag="snapshot", gc=False):
    product_id: str
    bids: list[LegacyLevel]
    asks: list[LegacyLevel]


class LegacyL2Update(msgspec.Struct, tag_field="type", tag="l2update", gc=False):
    product_id: str
    changes: list[tuple[str, float, float]]  # ["buy"|"sell", price, new absolute size]
    time: str | None = None


class LegacyMatch(msgspec.Struct, tag_field="type", tag="match", gc=False):
    trade_id: int
    product_id: str
    price: float
    size: float
    side: str  # the MAKER order's side: invert for the taker
    sequence: int | None = None
    time: str | None = None


class LegacyLastMatch(LegacyMatch, tag="last_match"):
    """The most recent trade, sent once right after subscribing to ``matches``."""


class LegacyTicker(msgspec.Struct, tag_field="type", tag="ticker", gc=False):
    product_id: str
    sequence: int | None = None
    best_bid: float | None = None
    best_ask: float | None = None
    time: str | None = None


class LegacyHeartbeat(msgspec.Struct, tag_field="type", tag="heartbeat", gc=False):
    product_id: str | None = None
    sequence: int | None = None
    last_trade_id: int | None = None
    time: str | None = None


class LegacyChannel(msgspec.Struct, gc=False):
    name: str
    product_ids: list[str] = []


class LegacySubscriptions(msgspec.Struct, tag_field="type", tag="subscriptions", gc=False):
    channels: list[LegacyChannel | str] = []


class LegacyError(msgspec.Struct, tag_field="type", tag="error", gc=False):
    message: str | None = None
    reason: str | None = None


LegacyMessage = (
    LegacyL2Update
    | LegacySnapshot
    | LegacyMatch
    | LegacyLastMatch
    | LegacyTicker
    | LegacyHeartbeat
    | LegacySubscriptions
    | LegacyError
)

legacy_decoder = msgspec.json.Decoder(LegacyMessage, strict=False)


class LegacyProduct(msgspec.Struct, gc=False):
    """GET https://api.exchange.coinbase.com/products (formerly api.pro.coinbase.com)."""

    id: str
    base_currency: str = ""
    quote_currency: str = ""
    status: str = ""


legacy_products_decoder = msgspec.json.Decoder(list[LegacyProduct], strict=False)
