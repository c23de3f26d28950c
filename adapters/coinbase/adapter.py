"""Coinbase Advanced Trade market data (EXCHANGES.md 4.1) as a pure adapter.

What it keeps right, and why:
- ``sequence_num`` is one counter per connection across every channel. A gap means some message of that
  connection was lost, and it could have been any product's book update, so every book on the
  connection is invalid (a ``book_invalid`` status each) and the connection is re-established: only a
  fresh subscribe brings fresh snapshots. A smaller number than expected is a duplicate and is dropped.
- ``level2`` sides are ``bid`` and ``offer``. An unknown side is never guessed at: like a crossed book,
  it invalidates the connection's books and resubscribes (the lost-ask-side bug of other handlers comes
  from mapping ``offer`` wrongly).
- ``market_trades`` opens with a snapshot of recent trades; after a reconnect it repeats trades we have
  already published, so trades are de-duplicated by id per product in a bounded window.
- Liveness follows the ``heartbeats`` rhythm (one a second): five seconds (or the configured
  ``stale_after``) without a heartbeat whose counter advanced closes the connection as stale, even while
  other channels keep talking. ``on_tick`` only asks for the close; the events come from ``on_close``,
  so a replay gives the same events.

Live: ``start`` fetches the public products list, then opens one connection per group of products;
``on_open`` subscribes ``heartbeats``, ``level2`` and ``market_trades``, one channel per message, all
at once so they land well inside the venue's 5 s deadline. Replay (``config=None``) follows every
product it sees.
"""

from __future__ import annotations

from collections import deque
from operator import itemgetter
from typing import Any

import msgspec
import structlog

from marketfeed.book import L2Book
from marketfeed.config import VenueConfig
from marketfeed.events import (
    BOOK_INVALID,
    CONNECTED,
    DISCONNECTED,
    ERROR,
    STALE,
    SUBSCRIBED,
    Book,
    Status,
    Trade,
)
from marketfeed.logging import RateLimitedLog
from marketfeed.protocol import Adapter, Connect, Disconnect, Fetch, Send

from .schemas import (
    Heartbeats,
    L2Data,
    MarketTrades,
    Subscriptions,
    message_decoder,
    other_decoder,
    products_decoder,
)
from .symbols import ProductMap, guess
from .times import parse_time_ns

WS_URL = "wss://advanced-trade-ws.coinbase.com"
REST_URL = "https://api.coinbase.com"
PRODUCTS_PATH = "/api/v3/brokerage/market/products"

SECOND_NS = 1_000_000_000
HEARTBEAT_TIMEOUT_NS = 5 * SECOND_NS  # heartbeats come once a second (EXCHANGES.md 4.1, 8.3)
MAX_PRODUCTS_PER_CONNECTION = 50  # a gap costs every book of its connection: keep the blast radius bounded
TRADE_IDS_REMEMBERED = 2_000  # per product: a reconnect's trade snapshot repeats only recent trades

_DECODED_CHANNELS = ("l2_data", "market_trades", "heartbeats", "subscriptions")
_SIDES = {"BUY": "buy", "SELL": "sell", "buy": "buy", "sell": "sell"}


class RecentIds:
    """The last ``size`` ids seen: a set for lookups, a deque to forget the oldest (bounded memory)."""

    __slots__ = ("ids", "order")

    def __init__(self, size: int = TRADE_IDS_REMEMBERED) -> None:
        self.ids: set[Any] = set()
        self.order: deque[Any] = deque(maxlen=size)

    def add(self, trade_id: Any) -> bool:
        """True if ``trade_id`` is new (and remember it), False if it was seen already."""
        ids = self.ids
        if trade_id in ids:
            return False
        order = self.order
        if len(order) == order.maxlen:
            ids.discard(order[0])
        order.append(trade_id)
        ids.add(trade_id)
        return True

    def __len__(self) -> int:
        return len(self.ids)


RESUBSCRIBE_AFTER_ERROR_NS = 2 * SECOND_NS  # a refused subscribe is asked again after this pause


class _Conn:
    """What the adapter knows about one open connection."""

    __slots__ = ("conn", "products", "expected_seq", "books", "last_heartbeat", "heartbeat_counter",
                 "closing", "stale_sent", "acked", "level2_checked", "channels", "resubscribe_at")

    def __init__(self, conn: str, ts: int, products: set[str] | None, channels: list[str]) -> None:
        self.conn = conn
        self.products = products  # product ids this connection subscribes (None: unknown, replay)
        self.channels = channels  # the data channels subscribed (heartbeats aside)
        self.resubscribe_at: int | None = None  # after a venue error: when to subscribe again
        self.expected_seq: int | None = None  # next sequence_num; None until the first message
        self.books: set[str] = set()  # symbols whose valid book follows this connection's sequence
        self.last_heartbeat = ts  # the open counts as the first beat: 5 s without one is stale
        self.heartbeat_counter: Any = None
        self.closing = False  # we asked the runtime to close it: later frames are ignored
        self.stale_sent = False  # on_tick asked for a stale close (commands only, no events)
        self.acked: set[str] = set()  # symbols already reported subscribed on this connection
        self.level2_checked = False  # the level2 acknowledgement was compared with what we asked for


class CoinbaseAdapter(Adapter):
    default_stale_after = 5.0  # any frame at all: heartbeats alone arrive every second
    connect_budget = (100, 1.0)  # Coinbase allows 750 per second per IP; we never need that many
    max_sends_per_second = 8  # unauthenticated messages per second per IP (EXCHANGES.md 4.1)
    rest_weight_per_minute = 300  # public REST about 10/s per IP; we need one request per start
    ws_heartbeat = None  # the server keeps the socket alive; the heartbeats channel is our watchdog
    # a full level2 snapshot is one frame (112 bytes a level): 64 MiB holds ~600,000 levels, where
    # aiohttp's 16 MiB default would close a deep product's snapshot with 1009 and loop on reconnects
    max_frame_bytes = 64 * 1024 * 1024

    def __init__(self, venue: str = "coinbase", config: VenueConfig | None = None) -> None:
        super().__init__()
        self.venue = venue
        self.config = config
        self.log = RateLimitedLog(structlog.get_logger("marketfeed.coinbase").bind(venue=venue))
        self.products: ProductMap | None = None
        self.symbol_of: dict[str, str] = {}  # product id -> the symbol we publish it as
        self.books: dict[str, L2Book] = {}
        self.owner: dict[str, _Conn] = {}  # symbol -> the connection whose snapshot its book holds
        self.trade_ids: dict[str, RecentIds] = {}
        self.conns: dict[str, _Conn] = {}
        self._connections_planned = False
        self._rest_failures = 0
        self._guess_logged = False
        self._side_logged = False
        # heartbeats come every second; a configured stale_after tightens or loosens the 5 s default
        stale_after = config.stale_after if config is not None else None
        self.heartbeat_timeout_ns = int((stale_after or HEARTBEAT_TIMEOUT_NS / SECOND_NS) * SECOND_NS)
        if config is not None:
            channels = config.channels
            self._channels = [c for c, want in (("level2", "book"), ("market_trades", "trades")) if want in channels]
        else:
            self._channels = ["level2", "market_trades"]

    # --- URLs ---------------------------------------------------------------------------------------

    def _rest_base(self) -> str:
        base = self.config.rest_url if self.config is not None and self.config.rest_url else REST_URL
        return base.rstrip("/")

    def _ws_url(self) -> str:
        return self.config.ws_url if self.config is not None and self.config.ws_url else WS_URL

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self, ts: int) -> None:
        self.commands.append(Fetch(self._rest_base() + PRODUCTS_PATH))

    def on_rest(self, ts: int, url: str, status: int, body: str) -> None:
        if "/products" not in url:
            self.counters["unknown_rest"] += 1
            return
        products = None
        if status == 200:
            try:
                products = products_decoder.decode(body).products
            except msgspec.DecodeError as exc:
                self.counters["malformed"] += 1
                self.log.error("products", ts, "coinbase products response malformed", error=str(exc)[:200])
        if not products:
            self.counters["rest_failures"] += 1
            self._rest_failures += 1
            self.log.error("products", ts, "coinbase products unavailable", status=status, body=body[:200])
            self.events.append(Status(self.venue, None, ts, ERROR, f"products metadata unavailable (HTTP {status})"))
            if self.config is not None and not self._connections_planned:
                delay = min(60.0, 2.0 ** min(self._rest_failures, 6))
                self.commands.append(Fetch(self._rest_base() + PRODUCTS_PATH, delay=delay))
            return
        self.products = ProductMap(products)
        if self.config is None:
            return  # replay: symbols resolve lazily from this map
        if not self._connections_planned:
            self._plan_connections(ts)

    def _plan_connections(self, ts: int) -> None:
        assert self.config is not None and self.products is not None
        wanted: list[str] = []
        for symbol in self.config.symbols:
            product_id = self.products.subscription_for(symbol)
            if product_id is None:
                self.counters["unknown_symbol"] += 1
                self.log.error(("unknown", symbol), ts, "coinbase does not list symbol", symbol=symbol)
                self.events.append(Status(self.venue, symbol, ts, ERROR, "unknown symbol: not in Coinbase products"))
                continue
            if product_id in self.symbol_of:
                # BTC-USD and BTC-USDC both asked for: the venue serves them as one product
                self.events.append(Status(self.venue, symbol, ts, ERROR,
                                          f"served as {product_id}, already published as {self.symbol_of[product_id]}"))
                continue
            self.symbol_of[product_id] = symbol
            wanted.append(product_id)
        self._connections_planned = True
        url = self._ws_url()
        for i in range(0, len(wanted), MAX_PRODUCTS_PER_CONNECTION):
            chunk = wanted[i : i + MAX_PRODUCTS_PER_CONNECTION]
            # the plan is recorded with the connection: it carries the names we publish (an aliased
            # BTC-USDC), so a replay without our config publishes the same names
            plan = {"products": chunk, "channels": self._channels, "symbols": {p: self.symbol_of[p] for p in chunk}}
            self.commands.append(Connect(url, plan))

    def on_open(self, conn: str, ts: int, url: str, plan: Any = None) -> None:
        products = None
        channels = self._channels
        if isinstance(plan, dict):
            if isinstance(plan.get("products"), list):
                products = [str(p) for p in plan["products"]]
            if isinstance(plan.get("channels"), list):
                channels = [str(c) for c in plan["channels"]]
            names = plan.get("symbols")
            if isinstance(names, dict) and self.config is None:
                self.symbol_of.update({str(k): str(v) for k, v in names.items()})
        c = self.conns[conn] = _Conn(conn, ts, set(products) if products is not None else None, channels)
        self.events.append(Status(self.venue, None, ts, CONNECTED))
        # one channel per subscribe message; heartbeats first so liveness is watched from the start
        self.commands.append(Send(conn, '{"type":"subscribe","channel":"heartbeats"}'))
        self._subscribe(c)

    def _subscribe(self, c: _Conn) -> None:
        if c.products:
            products = sorted(c.products)
            for channel in c.channels:
                self.commands.append(Send(c.conn, msgspec.json.encode(
                    {"type": "subscribe", "product_ids": products, "channel": channel}).decode()))

    def on_close(self, conn: str, ts: int, code: int | None, reason: str | None) -> None:
        c = self.conns.pop(conn, None)
        if c is None:
            return
        why = reason or (f"closed with code {code}" if code is not None else "closed")
        if why.startswith("stale"):
            self.counters["stale"] += 1
            self.events.append(Status(self.venue, None, ts, STALE, why))
        self.events.append(Status(self.venue, None, ts, DISCONNECTED, why))
        self._invalidate_books(c, ts, f"disconnected: {why}")

    def on_tick(self, ts: int) -> None:
        for c in self.conns.values():
            if c.closing or c.stale_sent:
                continue
            if c.resubscribe_at is not None and ts >= c.resubscribe_at:
                # Coinbase's error does not say which subscribe failed: ask for every channel again
                # (a channel already subscribed just sends a fresh snapshot, which the book takes)
                c.resubscribe_at = None
                self.counters["resubscribes"] += 1
                self._subscribe(c)
            if ts - c.last_heartbeat > self.heartbeat_timeout_ns:
                c.stale_sent = True
                self.counters["heartbeat_timeouts"] += 1
                silent = (ts - c.last_heartbeat) / SECOND_NS
                self.commands.append(Disconnect(c.conn, f"stale: no heartbeat for {silent:.1f} s"))

    # --- frames -------------------------------------------------------------------------------------

    def on_frame(self, conn: str, ts: int, data: str | bytes) -> None:
        self.counters["messages"] += 1
        c = self.conns.get(conn)
        if c is None or c.closing:
            self.counters["ignored_after_close"] += 1
            return
        try:
            msg = message_decoder.decode(data)
        except msgspec.DecodeError:
            self._other(c, ts, data)
            return
        seq = msg.sequence_num
        expected = c.expected_seq
        if expected is not None and seq != expected:
            if seq < expected:
                self.counters["duplicates"] += 1
                return
            self._gap(c, ts, expected, seq)
            return
        c.expected_seq = seq + 1
        kind = type(msg)
        if kind is L2Data:
            self._level2(c, ts, msg)
        elif kind is MarketTrades:
            self._trades(c, ts, msg)
        elif kind is Heartbeats:
            self._heartbeat(c, ts, msg)
        elif kind is Subscriptions:
            self._subscriptions(c, ts, msg)

    def _other(self, c: _Conn, ts: int, data: str | bytes) -> None:
        """A frame outside the four channels we decode: another channel (it still counts in the
        connection's sequence), an error, or garbage."""
        try:
            other = other_decoder.decode(data)
        except msgspec.DecodeError as exc:
            self.counters["malformed"] += 1
            self.log.warning("malformed", ts, "coinbase malformed frame", error=str(exc)[:200], frame=str(data)[:200])
            return
        if other.type == "error":
            self.counters["venue_errors"] += 1
            text = ": ".join(t for t in (other.message, other.reason) if t) or str(data)[:500]
            self.log.error("error", ts, "coinbase error message", message=str(data)[:2000])
            self.events.append(Status(self.venue, None, ts, ERROR, f"venue error: {text}"))
            if c.resubscribe_at is None:
                c.resubscribe_at = ts + RESUBSCRIBE_AFTER_ERROR_NS
            return
        seq = other.sequence_num
        if seq is None and other.channel in _DECODED_CHANNELS:
            self.counters["malformed"] += 1
            self.log.warning(("bad", other.channel), ts, "coinbase message without sequence_num", channel=other.channel,
                             frame=str(data)[:200])
            return
        if seq is not None and other.channel is not None:
            expected = c.expected_seq
            if expected is not None and seq != expected:
                if seq < expected:
                    self.counters["duplicates"] += 1
                    return
                self._gap(c, ts, expected, seq)
                return
            c.expected_seq = seq + 1
            if other.channel in _DECODED_CHANNELS:
                # a known channel whose body did not decode: whatever it carried is lost
                self.counters["malformed"] += 1
                self.log.warning(("bad", other.channel), ts, "coinbase message malformed", channel=other.channel,
                                 frame=str(data)[:200])
                if other.channel == "l2_data":
                    self._fail_connection(c, ts, "malformed l2_data message: its update is lost")
                return
        self.counters["unknown_message"] += 1
        self.log.warning(("unknown", other.channel, other.type), ts, "coinbase unknown message",
                         channel=other.channel, type=other.type)

    def _gap(self, c: _Conn, ts: int, expected: int, got: int) -> None:
        self.counters["gaps"] += 1
        self.log.warning(("gap", c.conn), ts, "coinbase sequence gap", conn=c.conn, expected=expected, got=got)
        self._fail_connection(c, ts, f"gap: expected sequence_num={expected}, got {got}")

    def _fail_connection(self, c: _Conn, ts: int, reason: str) -> None:
        """Every book on the connection is suspect: invalidate them and re-establish the connection (a
        fresh subscribe is the only way to fresh snapshots)."""
        self.counters["resyncs"] += 1
        self._invalidate_books(c, ts, reason)
        c.closing = True
        self.commands.append(Disconnect(c.conn, reason))

    def _invalidate_books(self, c: _Conn, ts: int, reason: str) -> None:
        for symbol in sorted(c.books):
            if self.owner.get(symbol) is c:
                del self.owner[symbol]
                self.books[symbol].clear()
                self.events.append(Status(self.venue, symbol, ts, BOOK_INVALID, reason))
        c.books.clear()

    def _symbol(self, product_id: str, ts: int) -> str | None:
        symbol = self.symbol_of.get(product_id)
        if symbol is not None:
            return symbol
        if self.config is not None:
            self.counters["unknown_symbol"] += 1
            self.log.warning(("unsubscribed", product_id), ts, "coinbase data for a product not subscribed",
                             product_id=product_id)
            return None
        # replay: follow every product seen, named from the recorded metadata where we have it
        if self.products is not None and product_id in self.products.symbol_of:
            symbol = self.products.symbol_of[product_id]
        else:
            symbol = guess(product_id)
            if symbol is None:
                self.counters["unknown_symbol"] += 1
                self.log.warning(("unknown", product_id), ts, "coinbase product id not understood",
                                 product_id=product_id)
                return None
            if not self._guess_logged:
                self._guess_logged = True
                structlog.get_logger("marketfeed.coinbase").info(
                    "coinbase products metadata not recorded: product ids used as BASE-QUOTE", venue=self.venue)
        self.symbol_of[product_id] = symbol
        return symbol

    # --- level2 -------------------------------------------------------------------------------------

    def _level2(self, c: _Conn, ts: int, msg: L2Data) -> None:
        ts_exchange = parse_time_ns(msg.timestamp)
        seq = msg.sequence_num
        events = self.events
        venue = self.venue
        for ev in msg.events:
            symbol = self.symbol_of.get(ev.product_id) or self._symbol(ev.product_id, ts)
            if symbol is None:
                continue
            bids: list[tuple[float, float]] = []
            asks: list[tuple[float, float]] = []
            for u in ev.updates:  # a plain loop: twice as fast as two comprehensions on Python 3.11
                side = u.side
                if side == "bid":
                    bids.append((u.price_level, u.new_quantity))
                elif side == "offer":
                    asks.append((u.price_level, u.new_quantity))
                else:
                    self.counters["unknown_side"] += 1
                    self.log.error(("side", side), ts, "coinbase level2 side not bid/offer", side=side)
                    self._fail_connection(c, ts, f"level2 update with unknown side {side!r}")
                    return
            if ev.type == "update":
                if self.owner.get(symbol) is not c:
                    # no snapshot yet, an invalid book, or another connection's book: never mix
                    self.counters["update_without_snapshot"] += 1
                    continue
                book = self.books[symbol]
                bid_side = book.bids
                ask_side = book.asks
                if bids:
                    bid_side.apply(bids)
                    if len(bids) > 1:
                        bids.sort(key=_price, reverse=True)  # stable: repeats of a price keep their order
                if asks:
                    ask_side.apply(asks)
                    if len(asks) > 1:
                        asks.sort(key=_price)
                bid_prices = bid_side.prices
                ask_prices = ask_side.prices
                if bid_prices and ask_prices and bid_prices[-1] >= ask_prices[0]:
                    # the venue's book never crosses: an update of ours is missing or wrong
                    self.counters["crossed"] += 1
                    self.log.warning(("crossed", symbol), ts, "coinbase book crossed", symbol=symbol, seq=seq)
                    self._fail_connection(c, ts, f"crossed book at sequence_num={seq}")
                    return
                events.append(Book(venue, symbol, ts, ts_exchange, seq, False, bids, asks))
            elif ev.type == "snapshot":
                book = self.books.get(symbol)
                if book is None:
                    book = self.books[symbol] = L2Book()
                book.apply_snapshot(bids, asks)
                previous = self.owner.get(symbol)
                if previous is not None and previous is not c:
                    previous.books.discard(symbol)
                self.owner[symbol] = c
                c.books.add(symbol)
                self.counters["snapshots"] += 1
                if book.crossed():
                    self.counters["crossed_snapshot"] += 1
                    self.log.warning(("crossed", symbol), ts, "coinbase snapshot crossed", symbol=symbol)
                events.append(Book(venue, symbol, ts, ts_exchange, seq, True,
                                   book.bids.top(len(book.bids)), book.asks.top(len(book.asks))))
            else:
                self.counters["unknown_message"] += 1
                self.log.warning(("l2type", ev.type), ts, "coinbase l2_data event type unknown", type=ev.type)

    # --- trades -------------------------------------------------------------------------------------

    def _trades(self, c: _Conn, ts: int, msg: MarketTrades) -> None:
        events = self.events
        venue = self.venue
        for ev in msg.events:
            for t in ev.trades:
                symbol = self.symbol_of.get(t.product_id) or self._symbol(t.product_id, ts)
                if symbol is None:
                    continue
                seen = self.trade_ids.get(symbol)
                if seen is None:
                    seen = self.trade_ids[symbol] = RecentIds()
                if not seen.add(t.trade_id):
                    self.counters["duplicate_trades"] += 1
                    continue
                side = _SIDES.get(t.side)
                if side is None:
                    self.counters["unknown_trade_side"] += 1
                else:
                    self._check_side(symbol, side, t.price, ts)
                events.append(Trade(venue, symbol, ts, parse_time_ns(t.time), t.trade_id, t.price, t.size, side))
                self.counters["trades"] += 1

    def _check_side(self, symbol: str, side: str, price: float, ts: int) -> None:
        """``side`` is published as the taker side, which the venue's docs do not confirm (EXCHANGES.md
        4.1). Count the evidence: a trade at or above the best ask was a taker buy, at or below the best
        bid a taker sell. Trades come batched over 250 ms, so the book may have moved: a tally, not a
        verdict."""
        counters = self.counters
        counters["trade_side_unverified"] += 1
        if not self._side_logged:
            self._side_logged = True
            structlog.get_logger("marketfeed.coinbase").warning(
                "coinbase market_trades side published as the taker side (unconfirmed by the venue docs); "
                "see counters trade_side_agrees/trade_side_disagrees", venue=self.venue)
        if symbol not in self.owner:
            return
        book = self.books[symbol]
        bid = book.bids.best_price()
        ask = book.asks.best_price()
        if ask is not None and price >= ask:
            counters["trade_side_agrees" if side == "buy" else "trade_side_disagrees"] += 1
        elif bid is not None and price <= bid:
            counters["trade_side_agrees" if side == "sell" else "trade_side_disagrees"] += 1

    # --- heartbeats and acknowledgements -------------------------------------------------------------

    def _heartbeat(self, c: _Conn, ts: int, msg: Heartbeats) -> None:
        for ev in msg.events:
            counter = ev.heartbeat_counter
            if counter is not None and counter == c.heartbeat_counter:
                self.counters["heartbeat_stalled"] += 1  # a repeated counter is not a sign of life
                continue
            c.heartbeat_counter = counter
            c.last_heartbeat = ts
            c.stale_sent = False

    def _subscriptions(self, c: _Conn, ts: int, msg: Subscriptions) -> None:
        for ev in msg.events:
            level2 = ev.subscriptions.get("level2")
            if level2 is not None and c.products and not c.level2_checked:
                # the acknowledgement of our level2 subscribe: a product missing from it gets no book
                c.level2_checked = True
                for product_id in sorted(c.products - set(level2)):
                    symbol = self.symbol_of.get(product_id, product_id)
                    self.counters["subscription_missing"] += 1
                    self.log.error(("missing", product_id), ts, "coinbase did not subscribe level2", product_id=product_id)
                    self.events.append(Status(self.venue, symbol, ts, ERROR, f"level2 not subscribed for {product_id}"))
            for channel, product_ids in ev.subscriptions.items():
                if channel not in ("level2", "market_trades"):
                    continue
                for product_id in product_ids:
                    symbol = self.symbol_of.get(product_id) or self._symbol(product_id, ts)
                    if symbol is None or symbol in c.acked:
                        continue
                    c.acked.add(symbol)
                    self.events.append(Status(self.venue, symbol, ts, SUBSCRIBED))


_price = itemgetter(0)  # sort diff levels by price only: a stable sort keeps repeats of a price in order
