"""The Kraken adapter: WebSocket v2 live (``book`` at a configured depth, ``trade``, ``instrument``),
plus a decoder for WS v1 frames so older archives replay (v1 is never subscribed live).

Book integrity on Kraken rests on the CRC32 checksum alone (no sequence numbers): every book message is
applied, truncated to the subscribed depth, and verified before its event is emitted. A mismatch
invalidates that symbol only and resubscribes that symbol only (unsubscribe with the same depth, then
subscribe with a snapshot), within a resync budget per symbol (a circuit breaker).

Live flow: ``start`` fetches REST ``AssetPairs`` (names and precision; the response is recorded, so
replay verifies checksums too), then one connection carries every configured symbol; ``on_open``
subscribes ``instrument`` (precision cross-check), ``book`` and ``trade``.
"""

from __future__ import annotations

import calendar
import zlib
from collections import Counter, deque
from typing import Any

import msgspec

from marketfeed.adapters.kraken import schemas
from marketfeed.adapters.kraken.book import KrakenBook
from marketfeed.adapters.kraken.checksum import CHECKSUM_LEVELS, strip_text
from marketfeed.adapters.kraken.schemas import (
    BookMessage,
    HeartbeatMessage,
    InstrumentMessage,
    MethodResponse,
    StatusMessage,
    TradeMessage,
)
from marketfeed.adapters.kraken.symbols import (
    MetadataError,
    SymbolTable,
    fallback_v1_symbol,
    fallback_v2_symbol,
    pair_from_instrument,
    pairs_from_asset_pairs,
)
from marketfeed.book import L2Book
from marketfeed.config import ConfigError, VenueConfig
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
from marketfeed.protocol import Adapter, Connect, Fetch, Send

_decode_channel = schemas.channel_decoder.decode

WS_URL = "wss://ws.kraken.com"
REST_URL = "https://api.kraken.com"
ASSET_PAIRS_PATH = "/0/public/AssetPairs"
DEPTHS = (10, 25, 100, 500, 1000)
DEFAULT_DEPTH = 10

SECOND = 1_000_000_000
RESYNC_BUDGET = 5  # resyncs per symbol per window before the circuit opens (Kraken's SDK stops at 5)
RESYNC_WINDOW = 600 * SECOND
SNAPSHOT_TIMEOUT = 10 * SECOND  # a (re)subscribe that brings no snapshot counts as a failed resync
REST_RETRY_DELAYS = (1.0, 5.0, 15.0, 30.0, 60.0)
TRADE_IDS_KEPT = 2048  # v1 trade ids remembered per pair for dedupe


def _rfc3339_slow(text: str) -> int | None:
    try:
        y, mo, d = int(text[0:4]), int(text[5:7]), int(text[8:10])
        h, mi, sec = int(text[11:13]), int(text[14:16]), int(text[17:19])
        if text[10] not in "Tt " or text[-1] not in "Zz":
            return None
        frac = text[20:-1] if len(text) > 21 and text[19] == "." else ""
        return calendar.timegm((y, mo, d, h, mi, sec)) * SECOND + (int(frac[:9].ljust(9, "0")) if frac else 0)
    except (ValueError, IndexError, OverflowError):
        return None


def rfc3339_ns(text: str, _seconds: dict[str, int] = {}) -> int | None:  # noqa: B006 (a deliberate cache)
    """``2023-10-06T17:35:55.440295Z`` -> ns since the epoch, or None if it is not such a time.

    Kraken always sends microseconds: that shape costs one dict lookup (the second's value is cached
    under the text up to the ``.``, so a hit has checked the ``.`` too) and one int(); anything else
    takes the general parse."""
    base = _seconds.get(text[:20])
    if base is not None and text[26:] == "Z":  # 27 characters, the last a Z
        try:
            return base + int(text[20:26]) * 1000
        except ValueError:
            return None
    value = _rfc3339_slow(text)
    if value is not None and base is None:
        second = _rfc3339_slow(text[:19] + "Z")
        if second is not None:
            if len(_seconds) > 4096:
                _seconds.clear()
            _seconds[text[:19] + "."] = second
    return value


def epoch_text_ns(text: str) -> int | None:
    """v1 timestamps: ``"1534614248.456738"`` (seconds with microseconds) -> ns."""
    sec, _, frac = text.partition(".")
    try:
        return int(sec) * SECOND + (int(frac[:9].ljust(9, "0")) if frac else 0)
    except ValueError:
        return None


class _Conn:
    __slots__ = ("url", "plan", "opened", "last_send", "last_ping")

    def __init__(self, url: str, plan: Any, ts: int) -> None:
        self.url = url
        self.plan = plan
        self.opened = ts
        self.last_send = ts
        self.last_ping = 0


class _V1Book:
    """A v1 book (replay only): floats for the events, the wire texts for the checksum."""

    __slots__ = ("symbol", "native", "depth", "book", "conn", "live", "ask_texts", "bid_texts")

    def __init__(self, symbol: str, native: str, depth: int) -> None:
        self.symbol = symbol
        self.native = native
        self.depth = depth
        self.book = L2Book()
        self.conn: str | None = None
        self.live = False
        self.ask_texts: dict[float, str] = {}
        self.bid_texts: dict[float, str] = {}

    def reset(self) -> None:
        self.book.clear()
        self.ask_texts.clear()
        self.bid_texts.clear()
        self.live = False

    def checksum(self) -> int:
        asks = self.book.asks.top_prices(CHECKSUM_LEVELS)
        bids = self.book.bids.top_prices(CHECKSUM_LEVELS)
        text = "".join(self.ask_texts[p] for p in asks) + "".join(self.bid_texts[p] for p in bids)
        return zlib.crc32(text.encode()) & 0xFFFFFFFF


class KrakenAdapter(Adapter):
    # read by the runtime
    default_stale_after = 10.0  # heartbeats arrive about once a second (EXCHANGES.md 8.3: 5-10 s)
    max_sends_per_second = 5  # Kraken's message limit is unpublished and dynamic: stay modest
    rest_weight_per_minute = 60  # public REST is throttled per IP; about one request a second
    ws_heartbeat = None  # the application ping is ours (on_tick); protocol pings are the runtime's
    # connect policy (EXCHANGES.md 3.3 and 8.1): a few immediate retries after a random drop, then at
    # least 5 s between attempts, and at most 100 attempts per 10 minutes per IP (the ban is at 150)
    # application pings: heartbeats come about once a second, so silence this long earns a ping; and
    # Kraken closes a connection idle for about a minute, so we say something at least every 30 s
    ping_after_silence = 5.0
    ping_after_send_idle = 30.0
    ping_interval = 5.0  # at most one ping per connection this often
    reconnect_fast_attempts = 3
    reconnect_min_interval = 5.0
    connect_budget = (100, 600.0)  # (attempts, per seconds)

    def __init__(self, venue: str = "kraken", config: VenueConfig | None = None) -> None:
        # the two counters every book message bumps are plain ints (a Counter item costs ~3x more on
        # the hot path); ``counters`` folds them in whenever it is read
        self._n_messages = 0
        self._n_books = 0
        super().__init__()
        self.venue = venue
        self.config = config
        self.replay = config is None
        depth = DEFAULT_DEPTH if config is None or config.depth is None else config.depth
        if depth not in DEPTHS:
            raise ConfigError(f"venues.{venue}.depth: Kraken book depth must be one of {DEPTHS}, not {depth}")
        self.depth = depth
        self.pairs = SymbolTable()
        self.books: dict[str, KrakenBook] = {}  # v2 name -> book
        self.v1_books: dict[str, _V1Book] = {}  # v1 name -> book
        self._conns: dict[str, _Conn] = {}
        self._last_recv: dict[str, int] = {}  # conn -> ts of its last frame
        self._last_trade_id: dict[str, int] = {}  # v2 name -> highest trade_id seen
        self._v1_trade_ids: dict[str, tuple[set[str], deque[str]]] = {}
        self._req_id = 0
        self._rest_failures = 0
        self._connect_issued = False
        self._fallback_logged = False
        self._log = RateLimitedLog()

    @property  # type: ignore[override]
    def counters(self) -> Counter[str]:
        c = self._counters
        if self._n_messages:
            c["messages"] += self._n_messages
            self._n_messages = 0
        if self._n_books:
            c["books"] += self._n_books
            self._n_books = 0
        return c

    @counters.setter
    def counters(self, value: Counter[str]) -> None:
        self._counters = value

    # -- helpers -----------------------------------------------------------------------------------

    def _next_req_id(self) -> int:
        self._req_id += 1
        return self._req_id

    def _send(self, conn: str, data: str, ts: int) -> None:
        self.commands.append(Send(conn, data))
        c = self._conns.get(conn)
        if c is not None:
            c.last_send = ts

    def _status(self, ts: int, state: str, symbol: str | None, reason: str | None) -> None:
        self.events.append(Status(self.venue, symbol, ts, state, reason))

    def _rest_base(self) -> str:
        base = self.config.rest_url if self.config is not None and self.config.rest_url else REST_URL
        return base.rstrip("/")

    def _ws_base(self) -> str:
        base = self.config.ws_url if self.config is not None and self.config.ws_url else WS_URL
        return base.rstrip("/")

    def _normalise_v2(self, native: str, ts: int) -> str:
        pair = self.pairs.by_v2.get(native)
        if pair is not None:
            return pair.symbol
        self._note_fallback(native, ts)
        return fallback_v2_symbol(native)

    def _normalise_v1(self, native: str, ts: int) -> str:
        pair = self.pairs.by_v1.get(native)
        if pair is not None:
            return pair.symbol
        self._note_fallback(native, ts)
        return fallback_v1_symbol(native)

    def _note_fallback(self, native: str, ts: int) -> None:
        self.counters["symbol_fallback"] += 1
        if not self._fallback_logged:
            self._fallback_logged = True
            self._log.warning(
                "kraken.symbol_fallback", ts,
                "kraken: no instrument metadata for a pair; normalising by Kraken's asset alias table",
                venue=self.venue, native=native,
            )

    def _book_state(self, native: str, ts: int) -> KrakenBook:
        kb = self.books.get(native)
        if kb is None:
            pair = self.pairs.by_v2.get(native)
            symbol = pair.symbol if pair is not None else self._normalise_v2(native, ts)
            depth = None if self.replay else self.depth
            kb = KrakenBook(symbol, native, depth,
                            pair.price_precision if pair else None, pair.qty_precision if pair else None)
            self.books[native] = kb
        return kb

    # -- live start and metadata ---------------------------------------------------------------------

    def start(self, ts: int) -> None:
        self.commands.append(Fetch(self._rest_base() + ASSET_PAIRS_PATH))

    def on_rest(self, ts: int, url: str, status: int, body: str) -> None:
        if ASSET_PAIRS_PATH not in url:
            self.counters["unknown_rest"] += 1
            self._log.warning("kraken.unknown_rest", ts, "kraken: unexpected REST response", url=url)
            return
        try:
            if status != 200:
                raise MetadataError(f"HTTP status {status}")
            pairs = pairs_from_asset_pairs(body)
        except MetadataError as exc:
            self.counters["rest_errors"] += 1
            self._log.error("kraken.asset_pairs", ts, "kraken: AssetPairs failed", error=str(exc))
            if not self.replay and not self._connect_issued:
                delay = REST_RETRY_DELAYS[min(self._rest_failures, len(REST_RETRY_DELAYS) - 1)]
                self._rest_failures += 1
                self.commands.append(Fetch(self._rest_base() + ASSET_PAIRS_PATH, delay=delay))
            return
        for pair in pairs:
            self.pairs.add(pair)
        for kb in self.books.values():
            self._refresh_precision(kb, ts)
        if not self.replay and not self._connect_issued:
            self._connect(ts)

    def _refresh_precision(self, kb: KrakenBook, ts: int) -> None:
        pair = self.pairs.by_v2.get(kb.native)
        if pair is None:
            return
        kb.symbol = pair.symbol
        if kb.set_precision(pair.price_precision, pair.qty_precision) and kb.live:
            kb.refresh_asks()
            kb.refresh_bids()

    def _connect(self, ts: int) -> None:
        assert self.config is not None
        self._connect_issued = True
        book_syms: list[str] = []
        trade_syms: list[str] = []
        for symbol in self.config.symbols:
            pair = self.pairs.by_symbol.get(symbol)
            if pair is None:
                self.counters["unknown_symbol"] += 1
                self._status(ts, ERROR, symbol, "unknown symbol: not among Kraken's AssetPairs")
                continue
            if "book" in self.config.channels:
                book_syms.append(pair.v2)
                self._book_state(pair.v2, ts)
            if "trades" in self.config.channels:
                trade_syms.append(pair.v2)
        if not book_syms and not trade_syms:
            return
        plan = {"book": book_syms, "depth": self.depth, "trade": trade_syms, "instrument": True}
        self.commands.append(Connect(self._ws_base() + "/v2", plan))

    # -- connection lifecycle ----------------------------------------------------------------------

    def on_open(self, conn: str, ts: int, url: str, plan: Any = None) -> None:
        self._conns[conn] = _Conn(url, plan, ts)
        self._status(ts, CONNECTED, None, url)
        if not isinstance(plan, dict):
            return  # a recording without a plan: books are claimed by their snapshots
        if plan.get("instrument"):
            self._send(conn, schemas.subscribe("instrument", None, self._next_req_id(), snapshot=True), ts)
        depth = plan.get("depth") or self.depth
        book_syms = list(plan.get("book") or ())
        for native in book_syms:
            kb = self._book_state(native, ts)
            kb.depth = depth
            kb.conn = conn
            kb.reset()
            kb.rejected = False
            kb.retry_at = None
            kb.awaiting_since = ts
        if book_syms:
            self._send(conn, schemas.subscribe("book", book_syms, self._next_req_id(), depth=depth, snapshot=True), ts)
        trade_syms = list(plan.get("trade") or ())
        if trade_syms:
            # snapshot: the last 50 trades; after a reconnect those newer than the last trade seen
            # fill the gap, the rest are dropped by trade_id (see _on_trade)
            self._send(conn, schemas.subscribe("trade", trade_syms, self._next_req_id(), snapshot=True), ts)

    def on_close(self, conn: str, ts: int, code: int | None, reason: str | None) -> None:
        self._conns.pop(conn, None)
        self._last_recv.pop(conn, None)
        if reason and reason.startswith("stale"):
            self._status(ts, STALE, None, reason)
        self._status(ts, DISCONNECTED, None, reason if reason else f"closed (code {code})")
        why = f"disconnected: {reason}" if reason else "disconnected"
        for kb in self.books.values():
            if kb.conn == conn:
                self._status(ts, BOOK_INVALID, kb.symbol, why)
                kb.reset()
                kb.conn = None
                kb.awaiting_since = None
                kb.retry_at = None
        for vb in self.v1_books.values():
            if vb.conn == conn:
                self._status(ts, BOOK_INVALID, vb.symbol, why)
                vb.reset()
                vb.conn = None

    def on_tick(self, ts: int) -> None:
        # commands only (events come from recorded inputs, so replay reproduces them)
        silence = int(self.ping_after_silence * SECOND)
        send_idle = int(self.ping_after_send_idle * SECOND)
        interval = int(self.ping_interval * SECOND)
        for conn, c in self._conns.items():
            if not isinstance(c.plan, dict):
                continue
            idle = ts - self._last_recv.get(conn, c.opened) >= silence or ts - c.last_send >= send_idle
            if idle and ts - c.last_ping >= interval:
                c.last_ping = ts
                self._send(conn, schemas.ping(self._next_req_id()), ts)
        for kb in self.books.values():
            if kb.conn is None or kb.live or kb.rejected:
                continue
            if kb.retry_at is not None:
                if ts >= kb.retry_at:  # the circuit's cool-down is over: try once more
                    kb.retry_at = None
                    kb.failures.clear()
                    kb.awaiting_since = ts
                    self._subscribe_book(kb, ts)
            elif kb.awaiting_since is not None and ts - kb.awaiting_since >= SNAPSHOT_TIMEOUT:
                self.counters["snapshot_timeouts"] += 1
                self._log.warning("kraken.snapshot_timeout", ts, "kraken: no book snapshot after subscribing",
                                  symbol=kb.symbol)
                self._resync(kb, ts, unsubscribe=True)

    # -- resubscription ----------------------------------------------------------------------------

    def _subscribe_book(self, kb: KrakenBook, ts: int) -> None:
        assert kb.conn is not None
        self._send(kb.conn, schemas.subscribe("book", [kb.native], self._next_req_id(),
                                              depth=kb.depth or self.depth, snapshot=True), ts)

    def _unsubscribe_book(self, kb: KrakenBook, ts: int) -> None:
        assert kb.conn is not None
        # Kraken requires the unsubscribe to name the depth of the subscription
        self._send(kb.conn, schemas.unsubscribe("book", [kb.native], self._next_req_id(),
                                                depth=kb.depth or self.depth), ts)

    def _resync(self, kb: KrakenBook, ts: int, unsubscribe: bool) -> bool:
        """Ask for a fresh snapshot of this symbol only, within the resync budget. Returns False when
        the budget is spent (the circuit opens: one retry after the window instead)."""
        self.counters["resyncs"] += 1
        failures = kb.failures
        failures.append(ts)
        while failures and ts - failures[0] > RESYNC_WINDOW:
            failures.popleft()
        if kb.conn is None:
            return True
        if unsubscribe:
            self._unsubscribe_book(kb, ts)
        if len(failures) > RESYNC_BUDGET:
            kb.retry_at = failures[0] + RESYNC_WINDOW
            kb.awaiting_since = None
            self.counters["circuit_open"] += 1
            return False
        kb.awaiting_since = ts
        self._subscribe_book(kb, ts)
        return True

    def _book_failed(self, kb: KrakenBook, ts: int, reason: str) -> None:
        self._status(ts, BOOK_INVALID, kb.symbol, reason)
        self._log.warning("kraken.book_invalid", ts, "kraken: book invalid, resubscribing", symbol=kb.symbol,
                          reason=reason)
        kb.reset()
        if not self._resync(kb, ts, unsubscribe=True):
            self._status(ts, ERROR, kb.symbol,
                         f"resync budget spent: {len(kb.failures)} resyncs within "
                         f"{RESYNC_WINDOW // SECOND} s; next attempt in {(kb.retry_at - ts) // SECOND} s")

    # -- frames ------------------------------------------------------------------------------------

    def on_frame(self, conn: str, ts: int, data: str | bytes) -> None:
        self._n_messages += 1
        self._last_recv[conn] = ts
        try:
            msg = _decode_channel(data)
        except msgspec.DecodeError:
            self._on_other(conn, ts, data)
            return
        t = type(msg)
        if t is BookMessage:
            # the hot path, inlined: an update for a live book on its own connection
            if msg.type == "update" and len(msg.data) == 1:
                d = msg.data[0]
                kb = self.books.get(d.symbol)
                if kb is not None and kb.live and kb.conn == conn:
                    bids, asks = kb.apply_update(d.bids, d.asks, data)
                    crc = kb.crc
                    if crc == d.checksum:
                        self._n_books += 1
                        ts_ex = d.timestamp
                        self.events.append(Book(self.venue, kb.symbol, ts, rfc3339_ns(ts_ex) if ts_ex else None,
                                                None, False, bids, asks, crc))
                    else:
                        self.counters["checksum_failures"] += 1
                        self._book_failed(kb, ts, f"checksum mismatch: venue {d.checksum}, computed {crc}")
                    return
            self._on_book(conn, ts, msg, data)
        elif t is TradeMessage:
            self._on_trade(ts, msg)
        elif t is HeartbeatMessage:
            self.counters["heartbeats"] += 1
        elif t is StatusMessage:
            self._on_status(ts, msg)
        else:
            self._on_instrument(ts, msg)

    def _on_other(self, conn: str, ts: int, data: str | bytes) -> None:
        try:
            self._on_method(conn, ts, schemas.method_decoder.decode(data))
            return
        except msgspec.DecodeError:
            pass
        try:
            obj = schemas.v1_decoder.decode(data)
        except msgspec.DecodeError as exc:
            self.counters["malformed"] += 1
            self._log.warning("kraken.malformed", ts, "kraken: frame is not JSON", error=str(exc)[:200])
            return
        if isinstance(obj, list):
            self._on_v1_array(conn, ts, obj)
        elif isinstance(obj, dict) and "event" in obj:
            self._on_v1_event(ts, obj)
        elif isinstance(obj, dict) and obj.get("channel") in ("book", "trade", "status", "instrument"):
            self.counters["malformed"] += 1
            self._log.warning("kraken.malformed", ts, "kraken: malformed channel message",
                              channel=obj.get("channel"), frame=str(data)[:200])
            if obj.get("channel") == "book":
                self._malformed_book(ts, obj)
        else:
            self.counters["unknown_message"] += 1
            self._log.warning("kraken.unknown_message", ts, "kraken: unknown message", frame=str(data)[:200])

    def _malformed_book(self, ts: int, obj: dict) -> None:
        """A book message we cannot read leaves that book unknowable: invalidate it if we can tell which."""
        try:
            native = obj["data"][0]["symbol"]
        except (KeyError, IndexError, TypeError):
            return
        kb = self.books.get(native) if isinstance(native, str) else None
        if kb is not None and kb.live:
            self._book_failed(kb, ts, "malformed book message")

    def _on_method(self, conn: str, ts: int, m: MethodResponse) -> None:
        if m.method == "pong":
            self.counters["pongs"] += 1
            return
        if m.method not in ("subscribe", "unsubscribe"):
            self.counters["unknown_message"] += 1
            return
        result = m.result
        channel = result.channel if result is not None else None
        native = (result.symbol if result is not None else None) or m.symbol
        if m.method == "unsubscribe":
            self.counters["unsubscribe_acks" if m.success else "unsubscribe_errors"] += 1
            return
        if channel == "instrument":
            if not m.success:
                self.counters["subscribe_errors"] += 1
                self._log.warning("kraken.instrument_rejected", ts, "kraken: instrument subscription failed",
                                  error=m.error)
            return
        symbol = self._normalise_v2(native, ts) if native else None
        if m.success:
            self.counters["subscribe_acks"] += 1
            if channel == "book" and native in self.books and result is not None and result.depth:
                kb = self.books[native]
                if kb.depth is None:
                    kb.depth = result.depth
            self._status(ts, SUBSCRIBED, symbol,
                         f"book depth {result.depth}" if channel == "book" and result and result.depth else channel)
        else:
            self.counters["subscribe_errors"] += 1
            kb = self.books.get(native) if native else None
            already = "already" in (m.error or "").lower()  # a duplicate subscribe: the feed still flows
            if kb is not None and not kb.live and channel in (None, "book") and not already:
                kb.rejected = True  # refused: retrying on a timer would only be refused again
                kb.awaiting_since = None
            self._status(ts, ERROR, symbol, f"subscription rejected ({channel or 'unknown channel'}): {m.error}")

    def _on_status(self, ts: int, msg: StatusMessage) -> None:
        for d in msg.data:
            if d.system is not None and d.system != "online":
                self.counters["system_not_online"] += 1
                self._status(ts, ERROR, None, f"kraken system status: {d.system}")

    def _on_instrument(self, ts: int, msg: InstrumentMessage) -> None:
        for p in msg.data.pairs:
            pair = pair_from_instrument(p.symbol, p.base, p.quote, p.price_precision, p.qty_precision, p.status)
            old = self.pairs.add(pair)
            if old is not None and (old.price_precision, old.qty_precision) != (p.price_precision, p.qty_precision):
                # the WS value is the one the checksum is computed with (EXCHANGES.md 3.6, 9.5)
                self.counters["precision_mismatch"] += 1
                self._log.warning("kraken.precision_mismatch", ts, "kraken: instrument precision differs from AssetPairs",
                                  symbol=p.symbol, rest=(old.price_precision, old.qty_precision),
                                  ws=(p.price_precision, p.qty_precision))
            kb = self.books.get(p.symbol)
            if kb is not None:
                self._refresh_precision(kb, ts)

    # -- v2 book -----------------------------------------------------------------------------------

    def _on_book(self, conn: str, ts: int, msg: BookMessage, frame: str | bytes) -> None:
        for d in msg.data:  # always exactly one element on Kraken
            kb = self.books.get(d.symbol)
            if kb is None:
                if not self.replay:
                    self.counters["unknown_symbol"] += 1
                    self._log.warning("kraken.unknown_symbol", ts, "kraken: book for a symbol not subscribed",
                                      native=d.symbol)
                    continue
                kb = self._book_state(d.symbol, ts)
            if kb.conn is None:
                kb.conn = conn  # replay of a recording without a plan: the first snapshot's connection
            elif kb.conn != conn:
                self.counters["book_other_conn"] += 1
                continue
            if msg.type == "snapshot":
                self._book_snapshot(kb, ts, d, frame)
            elif kb.live:
                self._book_update(kb, ts, d, frame)
            else:
                self.counters["book_waiting_snapshot"] += 1

    def _book_snapshot(self, kb: KrakenBook, ts: int, d, frame: str | bytes) -> None:
        self.counters["book_snapshots"] += 1
        kb.awaiting_since = None
        if kb.depth is None:
            # no plan and no ack seen: the subscribed depth is the smallest valid one holding the snapshot
            n = max(len(d.bids), len(d.asks))
            kb.depth = next((x for x in DEPTHS if x >= n), DEPTHS[-1])
        if not kb.verifiable:
            self.counters["unverifiable"] += 1
            self._log.error("kraken.no_precision", ts, "kraken: no precision for a book: cannot verify", symbol=kb.symbol)
            kb.reset()
            self._status(ts, ERROR, kb.symbol, "no price/qty precision known for this pair: book cannot be verified")
            return
        bids, asks = kb.load_snapshot(d.bids, d.asks, frame)
        crc = kb.checksum()
        if d.checksum is None or crc != d.checksum:
            self.counters["checksum_failures"] += 1
            self._book_failed(kb, ts, f"snapshot checksum mismatch: venue {d.checksum}, computed {crc}")
            return
        kb.live = True
        self.counters["books"] += 1
        self.events.append(Book(self.venue, kb.symbol, ts, rfc3339_ns(d.timestamp) if d.timestamp else None,
                                None, True, bids, asks, crc))

    def _book_update(self, kb: KrakenBook, ts: int, d, frame: str | bytes) -> None:
        bids, asks = kb.apply_update(d.bids, d.asks, frame)
        crc = kb.checksum()
        if crc != d.checksum:
            self.counters["checksum_failures"] += 1
            self._book_failed(kb, ts, f"checksum mismatch: venue {d.checksum}, computed {crc}")
            return
        self.counters["books"] += 1
        ts_ex = d.timestamp
        self.events.append(Book(self.venue, kb.symbol, ts, rfc3339_ns(ts_ex) if ts_ex else None,
                                None, False, bids, asks, crc))

    # -- v2 trades ---------------------------------------------------------------------------------

    def _on_trade(self, ts: int, msg: TradeMessage) -> None:
        last_ids = self._last_trade_id
        if msg.type == "snapshot":
            # the first snapshot of a symbol is history from before we subscribed: it only sets the
            # mark that later snapshots (after a reconnect) are deduplicated against, so that those
            # fill the gap with the trades newer than the last one seen
            first = {t.symbol for t in msg.data if t.symbol not in last_ids}
            for t in msg.data:
                if t.symbol in first and t.trade_id > last_ids.get(t.symbol, -1):
                    last_ids[t.symbol] = t.trade_id
            # a snapshot may list newest first: emit in trade_id order
            trades = sorted((t for t in msg.data if t.symbol not in first), key=lambda t: t.trade_id)
        else:
            trades = msg.data
        for t in trades:
            last = last_ids.get(t.symbol)
            if last is not None and t.trade_id <= last:
                self.counters["duplicate_trades"] += 1
                continue
            if last is not None and t.trade_id != last + 1 and msg.type != "snapshot":
                self.counters["trade_id_gaps"] += 1
            last_ids[t.symbol] = t.trade_id
            side = t.side if t.side == "buy" or t.side == "sell" else None
            self.counters["trades"] += 1
            self.events.append(Trade(self.venue, self._normalise_v2(t.symbol, ts), ts,
                                     rfc3339_ns(t.timestamp) if t.timestamp else None,
                                     str(t.trade_id), t.price, t.qty, side))

    # -- v1 (replay of older archives) ---------------------------------------------------------------

    def _on_v1_event(self, ts: int, obj: dict) -> None:
        event = obj.get("event")
        if event == "heartbeat":
            self.counters["heartbeats"] += 1
        elif event == "pong":
            self.counters["pongs"] += 1
        elif event == "systemStatus":
            if obj.get("status") != "online":
                self.counters["system_not_online"] += 1
                self._status(ts, ERROR, None, f"kraken system status: {obj.get('status')}")
        elif event == "subscriptionStatus":
            native = obj.get("pair")
            symbol = self._normalise_v1(native, ts) if isinstance(native, str) else None
            channel = obj.get("channelName") or (obj.get("subscription") or {}).get("name")
            status = obj.get("status")
            if status == "subscribed":
                self.counters["subscribe_acks"] += 1
                self._status(ts, SUBSCRIBED, symbol, str(channel))
            elif status == "error":
                self.counters["subscribe_errors"] += 1
                self._status(ts, ERROR, symbol, f"subscription rejected ({channel}): {obj.get('errorMessage')}")
        else:
            self.counters["unknown_message"] += 1

    def _on_v1_array(self, conn: str, ts: int, arr: list) -> None:
        # [channelID, payload..., channelName, pair]: route on channelName and pair (channelID is deprecated)
        if len(arr) < 4 or not isinstance(arr[-2], str) or not isinstance(arr[-1], str):
            self.counters["malformed"] += 1
            self._log.warning("kraken.malformed", ts, "kraken: malformed v1 message", frame=str(arr)[:200])
            return
        channel, native = arr[-2], arr[-1]
        try:
            if channel.startswith("book-"):
                self._on_v1_book(conn, ts, channel, native, arr[1:-2])
            elif channel == "trade":
                self._on_v1_trades(ts, native, arr[1])
            else:
                self.counters["ignored_channel"] += 1
        except (TypeError, ValueError, IndexError, KeyError, AttributeError) as exc:
            self.counters["malformed"] += 1
            self._log.warning("kraken.malformed", ts, "kraken: malformed v1 message", error=str(exc), frame=str(arr)[:200])
            vb = self.v1_books.get(native)
            if channel.startswith("book-") and vb is not None and vb.live and vb.conn == conn:
                self._status(ts, BOOK_INVALID, vb.symbol, "malformed book message")
                vb.reset()

    def _on_v1_book(self, conn: str, ts: int, channel: str, native: str, payloads: list) -> None:
        vb = self.v1_books.get(native)
        if vb is None:
            vb = self.v1_books[native] = _V1Book(self._normalise_v1(native, ts), native, int(channel[5:]))
        if vb.conn is None:
            vb.conn = conn
        elif vb.conn != conn:
            self.counters["book_other_conn"] += 1
            return
        snapshot = any("as" in p or "bs" in p for p in payloads)
        checksum = None
        for p in payloads:
            if "c" in p:
                checksum = int(p["c"])
        depth = vb.depth
        book = vb.book
        if snapshot:
            self.counters["book_snapshots"] += 1
            vb.reset()
            asks = [(float(l[0]), float(l[1]), strip_text(l[0]) + strip_text(l[1])) for p in payloads for l in p.get("as", ())]
            bids = [(float(l[0]), float(l[1]), strip_text(l[0]) + strip_text(l[1])) for p in payloads for l in p.get("bs", ())]
            book.apply_snapshot([(p, q) for p, q, _ in bids], [(p, q) for p, q, _ in asks])
            vb.ask_texts.update((p, t) for p, _, t in asks)
            vb.bid_texts.update((p, t) for p, _, t in bids)
            for p in book.asks.truncate(depth):
                del vb.ask_texts[p]
            for p in book.bids.truncate(depth):
                del vb.bid_texts[p]
            if checksum is not None and checksum != vb.checksum():
                self.counters["checksum_failures"] += 1
                self._status(ts, BOOK_INVALID, vb.symbol, f"snapshot checksum mismatch: venue {checksum}, computed {vb.checksum()}")
                vb.reset()
                return
            # v1 snapshots carry no checksum: the first update's checksum verifies this state too
            vb.live = True
            self.counters["books"] += 1
            self.events.append(Book(self.venue, vb.symbol, ts, None, None, True,
                                    book.bids.top(depth), book.asks.top(depth), checksum))
            return
        if not vb.live:
            self.counters["book_waiting_snapshot"] += 1
            return
        out: dict[str, list] = {"a": [], "b": []}
        ts_ex = None
        for p in payloads:
            for key in ("a", "b"):
                levels = p.get(key)
                if not levels:
                    continue
                side, texts = (book.asks, vb.ask_texts) if key == "a" else (book.bids, vb.bid_texts)
                o = out[key]
                for lv in levels:  # in array order: several updates can share a timestamp
                    price, qty = float(lv[0]), float(lv[1])
                    if qty:
                        texts[price] = strip_text(lv[0]) + strip_text(lv[1])
                    else:
                        texts.pop(price, None)
                    side.set(price, qty)
                    o.append((price, qty))
                    t = epoch_text_ns(lv[2])
                    if t is not None and (ts_ex is None or t > ts_ex):
                        ts_ex = t
        for key, side, texts in (("a", book.asks, vb.ask_texts), ("b", book.bids, vb.bid_texts)):
            for price in side.truncate(depth):
                del texts[price]
                out[key].append((price, 0.0))
        crc = vb.checksum()
        if checksum is None or crc != checksum:
            self.counters["checksum_failures"] += 1
            reason = "update without checksum" if checksum is None else f"checksum mismatch: venue {checksum}, computed {crc}"
            self._status(ts, BOOK_INVALID, vb.symbol, reason)
            vb.reset()  # v1 is replay-only: the book stays invalid until the recording's next snapshot
            return
        self.counters["books"] += 1
        self.events.append(Book(self.venue, vb.symbol, ts, ts_ex, None, False, out["b"], out["a"], crc))

    def _on_v1_trades(self, ts: int, native: str, trades: list) -> None:
        symbol = self._normalise_v1(native, ts)
        seen = self._v1_trade_ids.get(native)
        if seen is None:
            seen = self._v1_trade_ids[native] = (set(), deque())
        ids, order = seen
        repeats: dict[str, int] = {}
        for tr in trades:
            price, volume, time_text, side = tr[0], tr[1], tr[2], tr[3]
            # v1 trades carry no id: the id is the trade's own wire text (time, price, volume, side),
            # with the occurrence number appended when one message repeats an identical fill; stable
            # across a resent snapshot, so it deduplicates too
            base = f"{time_text}-{price}-{volume}-{side}"
            k = repeats.get(base, 0)
            repeats[base] = k + 1
            trade_id = base if k == 0 else f"{base}-{k}"
            if trade_id in ids:
                self.counters["duplicate_trades"] += 1
                continue
            ids.add(trade_id)
            order.append(trade_id)
            if len(order) > TRADE_IDS_KEPT:
                ids.discard(order.popleft())
            taker = "buy" if side in ("b", "buy") else "sell" if side in ("s", "sell") else None
            self.counters["trades"] += 1
            self.events.append(Trade(self.venue, symbol, ts, epoch_text_ns(time_text), trade_id,
                                     float(price), float(volume), taker))
