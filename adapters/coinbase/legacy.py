"""The older Coinbase Exchange (Coinbase Pro) feed, ``coinbase-legacy`` (EXCHANGES.md 4.2): replay of
users' archives recorded from ``wss://ws-feed.exchange.coinbase.com`` (``ws-feed.pro.coinbase.com``).

Replay only: the daemon's live Coinbase venue is Advanced Trade (``adapter.py``), and the legacy feed's
``level2`` channel now needs authentication. What it decodes:
- ``snapshot`` (``bids``/``asks`` as ``[price, size]``) and ``l2update`` (``changes`` as
  ``[side, price, size]``, ``buy`` = bid, ``sell`` = ask, size "0" removes). The feed carries no book
  sequence number, so ``seq`` is null and nothing can detect a lost update; a connection's close
  invalidates its books, and a book only ever follows the connection that sent its snapshot.
- ``match`` / ``last_match``: one trade each, once (de-duplicated by trade id per product). ``side``
  there is the MAKER's side, so the taker side is the opposite.
- ``ticker`` carries the venue's best bid/ask and is left to tests as the truth to check books against;
  ``heartbeat``, ``subscriptions`` and ``error`` are handled as on the live feed.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

import msgspec
import structlog

from marketfeed.book import L2Book
from marketfeed.config import VenueConfig
from marketfeed.events import BOOK_INVALID, CONNECTED, DISCONNECTED, ERROR, STALE, SUBSCRIBED, Book, Status, Trade
from marketfeed.logging import RateLimitedLog
from marketfeed.protocol import Adapter

from .adapter import RecentIds
from .schemas import (
    LegacyChannel,
    LegacyError,
    LegacyHeartbeat,
    LegacyL2Update,
    LegacyMatch,
    LegacySnapshot,
    LegacySubscriptions,
    LegacyTicker,
    legacy_decoder,
    legacy_products_decoder,
)
from .symbols import guess, normalise_legacy
from .times import parse_time_ns

_TAKER_SIDE = {"buy": "sell", "sell": "buy"}  # match.side is the maker's side
_KNOWN_TYPES = {"snapshot", "l2update", "match", "last_match", "ticker", "heartbeat", "subscriptions", "error"}


class _Typed(msgspec.Struct):
    type: str | None = None


_typed_decoder = msgspec.json.Decoder(_Typed)


def _type_of(data: str | bytes) -> str | None:
    """The ``type`` of a frame the full decoder refused, if it is a JSON object that has one."""
    try:
        return _typed_decoder.decode(data).type
    except msgspec.DecodeError:
        return None


class CoinbaseLegacyAdapter(Adapter):
    default_stale_after = 5.0
    max_sends_per_second = 8
    rest_weight_per_minute = 300
    ws_heartbeat = None

    def __init__(self, venue: str = "coinbase-legacy", config: VenueConfig | None = None) -> None:
        super().__init__()
        self.venue = venue
        self.config = config
        self.log = RateLimitedLog(structlog.get_logger("marketfeed.coinbase").bind(venue=venue))
        self.metadata: dict[str, str] = {}  # product id -> normalised symbol, from /products
        self.symbol_of: dict[str, str] = {}
        self.books: dict[str, L2Book] = {}
        self.owner: dict[str, str] = {}  # symbol -> conn whose snapshot the book holds
        self.conn_books: dict[str, set[str]] = {}
        self.acked: dict[str, set[str]] = {}
        self.trade_ids: dict[str, RecentIds] = {}
        self._guess_logged = False

    def on_rest(self, ts: int, url: str, status: int, body: str) -> None:
        if not url.rstrip("/").endswith("/products") or status != 200:
            self.counters["unknown_rest" if status == 200 else "rest_failures"] += 1
            return
        try:
            products = legacy_products_decoder.decode(body)
        except msgspec.DecodeError as exc:
            self.counters["malformed"] += 1
            self.log.error("products", ts, "coinbase-legacy products malformed", error=str(exc)[:200])
            return
        for product in products:
            name = normalise_legacy(product)
            if name is not None:
                self.metadata[product.id] = name

    def on_open(self, conn: str, ts: int, url: str, plan: Any = None) -> None:
        self.conn_books[conn] = set()
        self.acked[conn] = set()
        self.events.append(Status(self.venue, None, ts, CONNECTED))

    def on_close(self, conn: str, ts: int, code: int | None, reason: str | None) -> None:
        books = self.conn_books.pop(conn, None)
        self.acked.pop(conn, None)
        if books is None:
            return
        why = reason or (f"closed with code {code}" if code is not None else "closed")
        if why.startswith("stale"):
            self.events.append(Status(self.venue, None, ts, STALE, why))
        self.events.append(Status(self.venue, None, ts, DISCONNECTED, why))
        for symbol in sorted(books):
            if self.owner.get(symbol) == conn:
                del self.owner[symbol]
                self.books[symbol].clear()
                self.events.append(Status(self.venue, symbol, ts, BOOK_INVALID, f"disconnected: {why}"))

    def _symbol(self, product_id: str, ts: int) -> str | None:
        symbol = self.symbol_of.get(product_id)
        if symbol is not None:
            return symbol
        symbol = self.metadata.get(product_id)
        if symbol is None:
            symbol = guess(product_id)
            if symbol is None:
                self.counters["unknown_symbol"] += 1
                self.log.warning(("unknown", product_id), ts, "coinbase-legacy product id not understood",
                                 product_id=product_id)
                return None
            if not self._guess_logged:
                self._guess_logged = True
                structlog.get_logger("marketfeed.coinbase").info(
                    "coinbase-legacy products metadata missing: product ids used as BASE-QUOTE", venue=self.venue)
        self.symbol_of[product_id] = symbol
        return symbol

    def on_frame(self, conn: str, ts: int, data: str | bytes) -> None:
        self.counters["messages"] += 1
        books = self.conn_books.get(conn)
        if books is None:
            self.counters["ignored_after_close"] += 1
            return
        try:
            msg = legacy_decoder.decode(data)
        except msgspec.DecodeError as exc:
            kind = _type_of(data)
            if kind is not None and kind not in _KNOWN_TYPES:
                self.counters["unknown_message"] += 1  # a message type this decoder does not cover
                self.log.warning(("unknown", kind), ts, "coinbase-legacy unknown message type", type=kind)
                return
            self.counters["malformed"] += 1
            self.log.warning("malformed", ts, "coinbase-legacy frame not understood", error=str(exc)[:200],
                             frame=str(data)[:200])
            return
        kind = type(msg)
        if kind is LegacyL2Update:
            self._update(conn, ts, msg)
        elif kind is LegacyMatch or isinstance(msg, LegacyMatch):
            self._match(ts, msg)
        elif kind is LegacySnapshot:
            self._snapshot(conn, books, ts, msg)
        elif kind is LegacyTicker or kind is LegacyHeartbeat:
            self.counters["ticker" if kind is LegacyTicker else "heartbeats"] += 1
        elif kind is LegacySubscriptions:
            self._subscriptions(conn, ts, msg)
        elif kind is LegacyError:
            self.counters["venue_errors"] += 1
            self.log.error("error", ts, "coinbase-legacy error message", message=str(data)[:2000])
            self.events.append(Status(self.venue, None, ts, ERROR, f"venue error: {msg.message or msg.reason}"))

    def _snapshot(self, conn: str, books: set[str], ts: int, msg: LegacySnapshot) -> None:
        symbol = self._symbol(msg.product_id, ts)
        if symbol is None:
            return
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = L2Book()
        book.apply_snapshot(msg.bids, msg.asks)
        previous = self.owner.get(symbol)
        if previous is not None and previous != conn and previous in self.conn_books:
            self.conn_books[previous].discard(symbol)
        self.owner[symbol] = conn
        books.add(symbol)
        self.counters["snapshots"] += 1
        self.events.append(Book(self.venue, symbol, ts, None, None, True,
                                book.bids.top(len(book.bids)), book.asks.top(len(book.asks))))

    def _update(self, conn: str, ts: int, msg: LegacyL2Update) -> None:
        symbol = self.symbol_of.get(msg.product_id) or self._symbol(msg.product_id, ts)
        if symbol is None:
            return
        if self.owner.get(symbol) != conn:
            self.counters["update_without_snapshot"] += 1
            return
        bids: list[tuple[float, float]] = []
        asks: list[tuple[float, float]] = []
        for side, price, size in msg.changes:
            if side == "buy":
                bids.append((price, size))
            elif side == "sell":
                asks.append((price, size))
            else:
                # never guess a side: the book is unknowable from here on
                self.counters["unknown_side"] += 1
                self.log.error(("side", side), ts, "coinbase-legacy l2update side not buy/sell", side=side)
                self._invalidate(conn, symbol, ts, f"l2update with unknown side {side!r}")
                return
        book = self.books[symbol]
        if bids:
            book.bids.apply(bids)
            if len(bids) > 1:
                bids.sort(key=_price, reverse=True)
        if asks:
            book.asks.apply(asks)
            if len(asks) > 1:
                asks.sort(key=_price)
        if book.crossed():
            self.counters["crossed"] += 1
            self._invalidate(conn, symbol, ts, "crossed book")
            return
        self.events.append(Book(self.venue, symbol, ts, parse_time_ns(msg.time), None, False, bids, asks))

    def _invalidate(self, conn: str, symbol: str, ts: int, reason: str) -> None:
        """The book cannot be trusted any more. This feed has no way to ask for a fresh snapshot in
        replay, so it stays invalid until the recording holds one (a new subscription)."""
        del self.owner[symbol]
        self.conn_books[conn].discard(symbol)
        self.books[symbol].clear()
        self.log.warning(("invalid", symbol), ts, "coinbase-legacy book invalid", symbol=symbol, reason=reason)
        self.events.append(Status(self.venue, symbol, ts, BOOK_INVALID, reason))

    def _match(self, ts: int, msg: LegacyMatch) -> None:
        symbol = self.symbol_of.get(msg.product_id) or self._symbol(msg.product_id, ts)
        if symbol is None:
            return
        seen = self.trade_ids.get(symbol)
        if seen is None:
            seen = self.trade_ids[symbol] = RecentIds()
        if not seen.add(msg.trade_id):
            self.counters["duplicate_trades"] += 1
            return
        side = _TAKER_SIDE.get(msg.side)
        if side is None:
            self.counters["unknown_trade_side"] += 1
        self.counters["trades"] += 1
        self.events.append(Trade(self.venue, symbol, ts, parse_time_ns(msg.time), str(msg.trade_id),
                                 msg.price, msg.size, side))

    def _subscriptions(self, conn: str, ts: int, msg: LegacySubscriptions) -> None:
        acked = self.acked[conn]
        for channel in msg.channels:
            if not isinstance(channel, LegacyChannel) or channel.name not in ("level2", "level2_batch", "matches"):
                continue
            for product_id in channel.product_ids:
                symbol = self._symbol(product_id, ts)
                if symbol is None or symbol in acked:
                    continue
                acked.add(symbol)
                self.events.append(Status(self.venue, symbol, ts, SUBSCRIBED))


_price = itemgetter(0)  # sort by price only: a stable sort keeps repeats of a price in order
