"""The OKX v5 public adapter (venue ``okx``): ``books`` / ``books-l2-tbt`` / ``books50-l2-tbt`` and ``trades``.

Flow (live): fetch SPOT and SWAP instruments -> connect (``/ws/v5/public``, fewer than 30 channels per
connection) -> subscribe in batches -> per connection and instrument a ``BookSync``:

- WebSocket-snapshot mode (EXCHANGES.md 5.5.2): the first message after the subscribe ack is a
  non-empty ``snapshot`` with ``prevSeqId == -1``; every update must have ``prevSeqId`` equal to the
  previous ``seqId`` (keep-alives repeat it, resets go down; both are fine).
- REST-snapshot mode (5.5.3), chosen at run time per instrument when the first message is not such a
  snapshot: updates are buffered, ``/api/v5/market/books?sz=<depth>`` is fetched, a snapshot older than
  the first buffered ``prevSeqId`` is fetched again, buffered updates up to its ``seqId`` are dropped,
  the first one applied must straddle it (``prevSeqId <= seqId_snapshot < seqId``), then strict.
- After applying a message its checksum is verified whenever it is non-zero (top 25, interleaved,
  exact strings; 5.7). OKX sends 0 since June 2026: then ``seqId`` continuity is the only check. Old
  recordings (2022) have no ``seqId``: then the checksum is the only one (logged once, counted).

A gap, a checksum mismatch, a crossed or unreadable book affects that instrument alone: ``book_invalid``,
then an unsubscribe + subscribe of that instrument's book channel (WS mode) or a new REST snapshot (REST
mode). Subscribe/unsubscribe operations are budgeted per connection (480/h) and resyncs per instrument
(a circuit breaker); what does not fit waits for ``on_tick``.

Each instrument's events come from one connection at a time (its ``owner``), so a book never mixes two
connections' streams. On a ``notice`` (64008: the venue will close the connection for an upgrade) the
connection is replaced make-before-break: the replacement subscribes, its books sync, ownership moves
over at an identical ``seqId`` (no event needed) or, at the latest when the old connection closes, with a
snapshot from the replacement's verified book; then the old one is closed. Trades are deduplicated by
``tradeId`` per instrument, so overlaps and the last trade OKX re-sends on subscribe come out once.

The book channel is the config key ``book_channel``: ``books`` (400 levels, public; the default),
``books-l2-tbt`` (400) or ``books50-l2-tbt`` (50). The tbt channels need a login at VIP5/VIP6, which
this public-data adapter does not do: OKX then rejects the subscription and the symbol gets an
``error`` status. The REST snapshot is fetched with ``sz`` equal to the channel's depth.

Inverse (coin-margined) contracts and options are refused (their sizes cannot be given in base units);
in replay their books are still verified (counted) but nothing is published for them.
"""

from __future__ import annotations

import json
import os
import re
from bisect import bisect_left
from collections import Counter, deque
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import msgspec
import structlog

from marketfeed.book import BookSide, L2Book
from marketfeed.config import VenueConfig
from marketfeed.events import (
    BOOK_INVALID,
    CONNECTED,
    DISCONNECTED,
    ERROR,
    STALE,
    SUBSCRIBED,
    Book,
    Level,
    Status,
    Trade,
)
from marketfeed.logging import RateLimitedLog
from marketfeed.protocol import Adapter, Connect, Disconnect, Fetch, Send, rest_problem

from . import schemas
from .checksum import crc_of_top, signed32
from .symbols import InstrumentInfo, InstrumentMap, guess

log = structlog.get_logger("marketfeed.okx")

_decode_book_push = schemas.book_push_decoder.decode

MS = 1_000_000
SECOND = 1_000_000_000

WS_URL = "wss://ws.okx.com:8443"
REST_URL = "https://www.okx.com"
WS_PATH = "/ws/v5/public"
INSTRUMENTS_PATH = "/api/v5/public/instruments"
BOOKS_PATH = "/api/v5/market/books"
INSTRUMENT_TYPES = ("SPOT", "SWAP")

# book channel -> levels per side it carries
BOOK_CHANNELS = {"books": 400, "books-l2-tbt": 400, "books50-l2-tbt": 50}
DEFAULT_BOOK_CHANNEL = "books"
BOOK_PREFIX = '{"arg":{"channel":"books'

MAX_CHANNELS_PER_CONNECTION = 28  # OKX: "fewer than 30 channels each" for 50/400-level depth
MAX_SUBSCRIBE_BYTES = 4096  # the limit is 64 KB today, was 4 KB: the old one is safe for both
OPS_PER_HOUR = 460  # OKX allows 480 subscribe/unsubscribe ops per hour per connection: keep a margin
HOUR = 3600 * SECOND
PING_AFTER = 25 * SECOND  # OKX drops a connection silent for 30 s; ping before
PONG_WITHIN = 10 * SECOND
REPLACEMENT_DEADLINE = 40 * SECOND  # notice comes 60 s ahead: close the old one by then regardless
RESYNC_LIMIT = 10  # resyncs per instrument per RESYNC_WINDOW before the circuit breaker holds them
RESYNC_WINDOW = 600 * SECOND
RESYNC_HOLD = 30 * SECOND
REST_BUFFER_LIMIT = 2000  # updates buffered while a REST snapshot is awaited
TRADE_IDS_KEPT = 4096
MAX_SNAPSHOT_RETRY_DELAY = 30.0

# BookSync states
WAIT_FIRST = "wait_first"  # subscribed: the first message decides WS or REST snapshot mode
LIVE = "live"
REST_SYNC = "rest_sync"  # buffering updates until the REST snapshot bridges them
RESUBSCRIBING = "resubscribing"  # data ignored until the new subscription's ack

WS_MODE = "ws"
REST_MODE = "rest"


# price text -> float: a book's updates keep naming the same few hundred prices, and a dict hit is
# cheaper than parsing. The mapping is pure (a text always parses to the same float), so it can never
# be stale; it is only bounded.
_PRICES: dict[str, float] = {}
PRICE_CACHE_LIMIT = 1 << 16


def _apply_text_py(
    levels_in: list[schemas.Level], levels: dict, prices: list, frag: list[str], cache: dict, cache_limit: int,
    ct: float | None, nd: int,
) -> list[Level]:
    """Set each level of one side (size "0" deletes) in the float book (``levels``, ``prices``) and in
    the aligned list of exact-text fragments; return the event's ``(price, size)`` list in base units.
    Price texts become floats through ``cache`` (cleared when it reaches ``cache_limit``). The same
    loop is in C (marketfeed/_book.c apply_text_levels); tests/unit/test_okx_apply.py runs both."""
    changes = []
    append = changes.append
    # the hot loop of the adapter: the dict answers "is it there" (cheaper than comparing at the
    # bisected index), and the size test doubles as the validity test where it can
    for lv in levels_in:
        px = lv.px
        sz = lv.sz
        p = cache.get(px)
        if p is None:
            p = float(px)  # raises ValueError on text that is not a number: nothing cached then
            if len(cache) >= cache_limit:
                cache.clear()
            cache[px] = p
        s = float(sz)
        if s > 0.0 and p > 0.0:  # set (a NaN or negative size is not > 0)
            if ct is not None:
                s = round(s * ct, nd)
            if p in levels:
                frag[bisect_left(prices, p)] = f"{px}:{sz}"
            else:
                i = bisect_left(prices, p)
                prices.insert(i, p)
                frag.insert(i, f"{px}:{sz}")
            levels[p] = s
        elif s or not p > 0.0:  # a negative or NaN size, or a price that is not > 0 (also NaN)
            raise ValueError(f"bad level [{px!r}, {sz!r}]")
        elif p in levels:  # size 0 (or -0): delete
            i = bisect_left(prices, p)
            del prices[i]
            del frag[i]
            del levels[p]
        append((p, s))
    return changes


try:
    from marketfeed._book import apply_text_levels as _apply_text_c
except ImportError:  # not built (no C compiler at install)
    _apply_text_c = None
_apply_text = _apply_text_c if _apply_text_c is not None and not os.environ.get("MARKETFEED_PURE_PYTHON") else _apply_text_py


def _apply_side(levels_in: list[schemas.Level], side: BookSide, frag: list[str], ct: float | None, nd: int) -> list[Level]:
    """``_apply_text`` on a ``BookSide``, with the module's price cache."""
    return _apply_text(levels_in, side.levels, side.prices, frag, _PRICES, PRICE_CACHE_LIMIT, ct, nd)


def _truncate(side: BookSide, frag: list[str], depth: int, changes: list[Level]) -> int:
    """Drop the levels beyond the channel's window; they go into the event as explicit deletions."""
    prices = side.prices
    n = len(prices) - depth
    if side.descending:
        removed = prices[n - 1 :: -1]
        del prices[:n]
        del frag[:n]
    else:
        removed = prices[depth:]
        del prices[depth:]
        del frag[depth:]
    levels = side.levels
    for p in removed:
        del levels[p]
        changes.append((p, 0.0))
    return n


class BookSync:
    """One connection's copy of one instrument's book channel."""

    __slots__ = (
        "conn", "channel", "depth", "state", "mode", "book", "bfrag", "afrag", "last", "bridging",
        "buffer", "first_prev", "fetching", "failures", "resub_due",
    )

    def __init__(self, conn: str, channel: str) -> None:
        self.conn = conn
        self.channel = channel
        self.depth = BOOK_CHANNELS.get(channel, 400)
        self.state = WAIT_FIRST
        self.mode: str | None = None
        self.book = L2Book()
        # "px:sz" exactly as received, aligned index for index with the book's sorted price lists
        # (ascending, like ``BookSide.prices``): the checksum's top 25 are then two C-level slices
        self.bfrag: list[str] = []
        self.afrag: list[str] = []
        self.last: int | None = None  # seqId of the state the book is in
        self.bridging = False  # REST mode: the next update must straddle the snapshot's seqId
        self.buffer: list[tuple[int, schemas.BookData]] = []
        self.first_prev: int | None = None
        self.fetching = False
        self.failures = 0
        self.resub_due: int | None = None  # a held resubscription: when to send it

    def clear(self) -> None:
        self.book.clear()
        self.bfrag = []
        self.afrag = []
        self.last = None
        self.bridging = False
        self.buffer = []
        self.first_prev = None


class SymbolState:
    __slots__ = (
        "inst", "info", "symbol", "refused", "ct_val", "size_decimals", "owner", "consumer_valid",
        "syncs", "trade_ids", "trade_order", "resyncs",
    )

    def __init__(self, inst: str, info: InstrumentInfo) -> None:
        self.inst = inst
        self.info = info
        self.symbol = info.symbol or inst
        self.refused = info.refused if info.refused else (None if info.symbol else "cannot be normalised")
        self.ct_val = info.ct_val
        self.size_decimals = info.size_decimals
        self.owner: str | None = None  # the connection whose book feeds the events
        self.consumer_valid = False  # a snapshot went out since the last book_invalid
        self.syncs: dict[str, BookSync] = {}
        self.trade_ids: set[str] = set()
        self.trade_order: deque[str] = deque()
        self.resyncs: deque[int] = deque()  # times of recent resyncs, for the circuit breaker


class ConnState:
    __slots__ = (
        "url", "plan", "opened", "args", "acked", "pending", "replaces", "replacing", "last_recv",
        "ping_sent", "stale_sent", "ops", "handed_over",
    )

    def __init__(self, url: str, plan: Any, opened: int, args: list[tuple[str, str]], replaces: str | None) -> None:
        self.url = url
        self.plan = plan
        self.opened = opened
        self.args = args
        self.acked: set[tuple[str, str]] = set()
        self.pending: dict[str, tuple[str, list[tuple[str, str]]]] = {}  # request id -> (op, args)
        self.replaces = replaces
        self.replacing = False
        self.last_recv = opened
        self.ping_sent = 0
        self.stale_sent = False
        self.ops: deque[int] = deque()  # times of subscribe/unsubscribe ops in the last hour
        self.handed_over = False


class OkxAdapter(Adapter):
    default_stale_after = 35.0  # ping after 25 s idle + 10 s for the pong
    connect_budget = (3, 1.0)  # OKX: at most 3 connection attempts per second per IP
    max_sends_per_second = 5
    rest_weight_per_minute = 600  # of OKX's 40 requests / 2 s per IP for market/books
    ws_heartbeat = None  # the keep-alive is OKX's text ping, sent from on_tick

    def __init__(self, venue: str = "okx", config: VenueConfig | None = None) -> None:
        # the counters every book message bumps are plain ints (a Counter item costs a few times
        # more on the hot path); ``counters`` folds them in whenever it is read
        self._n_messages = 0
        self._n_updates = 0
        self._n_verified = 0
        super().__init__()
        self.venue = venue
        self.config = config
        channel = getattr(config, "book_channel", None) if config is not None else None
        channel = channel or DEFAULT_BOOK_CHANNEL
        if channel not in BOOK_CHANNELS:
            raise ValueError(f"{venue}: book_channel must be one of {', '.join(BOOK_CHANNELS)}, not {channel!r}")
        self.book_channel = channel
        self.depth = BOOK_CHANNELS[channel]
        if config is not None and config.depth is not None and config.depth != self.depth:
            raise ValueError(
                f"{venue}: depth {config.depth} does not match book_channel {channel!r} ({self.depth} levels); "
                "choose the depth with book_channel"
            )
        self.ws_url = ((config.ws_url if config and config.ws_url else WS_URL).rstrip("/")) + WS_PATH
        self.rest_url = (config.rest_url if config and config.rest_url else REST_URL).rstrip("/")
        self.instruments = InstrumentMap()
        self.syms: dict[str, SymbolState] = {}  # instId -> state
        self.conns: dict[str, ConnState] = {}
        self._planned = False
        self._next_id = 1
        self._warn = RateLimitedLog(log)
        self._said: set[str] = set()
        self._instrument_failures = 0

    @property  # type: ignore[override]
    def counters(self) -> Counter[str]:
        c = self._counters
        if self._n_messages:
            c["messages"] += self._n_messages
            self._n_messages = 0
        if self._n_updates:
            c["book_updates"] += self._n_updates
            self._n_updates = 0
        if self._n_verified:
            c["checksums_verified"] += self._n_verified
            self._n_verified = 0
        return c

    @counters.setter
    def counters(self, value: Counter[str]) -> None:
        self._counters = value

    # -- helpers ------------------------------------------------------------------------------------

    def _once(self, key: str, event: str, **kw: Any) -> None:
        if key not in self._said:
            self._said.add(key)
            log.warning(event, venue=self.venue, **kw)

    def _status(self, symbol: str | None, ts: int, state: str, reason: str | None = None) -> None:
        self.events.append(Status(self.venue, symbol, ts, state, reason))

    # -- live start ---------------------------------------------------------------------------------

    def start(self, ts: int) -> None:
        for kind in INSTRUMENT_TYPES:
            self.commands.append(Fetch(f"{self.rest_url}{INSTRUMENTS_PATH}?instType={kind}"))

    def _plan_connections(self, ts: int) -> None:
        assert self.config is not None
        self._planned = True
        args: list[tuple[str, str]] = []
        want_book = "book" in self.config.channels
        want_trades = "trades" in self.config.channels
        per_symbol = int(want_book) + int(want_trades)
        for name in self.config.symbols:
            inst = self.instruments.by_symbol.get(name)
            if inst is None:
                self.counters["unknown_symbol"] += 1
                log.error("unknown symbol", venue=self.venue, symbol=name)
                self._status(name, ts, ERROR, f"unknown symbol {name}: not in OKX's SPOT/SWAP instruments")
                continue
            info = self.instruments.by_inst[inst]
            if info.refused:
                self.counters["refused_symbol"] += 1
                log.error("symbol refused", venue=self.venue, symbol=name, reason=info.refused)
                self._status(name, ts, ERROR, f"{name} ({inst}) refused: {info.refused}")
                continue
            if info.state and info.state != "live":
                self._status(name, ts, ERROR, f"{inst} state is {info.state}")
            self.syms[inst] = SymbolState(inst, info)
            if want_book:
                args.append((self.book_channel, inst))
            if want_trades:
                args.append(("trades", inst))
        if not per_symbol:
            return
        step = max(per_symbol, MAX_CHANNELS_PER_CONNECTION // per_symbol * per_symbol)
        for i in range(0, len(args), step):
            self.commands.append(Connect(self.ws_url, {"args": [list(a) for a in args[i : i + step]]}))

    # -- connections --------------------------------------------------------------------------------

    def on_open(self, conn: str, ts: int, url: str, plan: Any = None) -> None:
        args: list[tuple[str, str]] = []
        replaces = None
        if isinstance(plan, dict):
            for a in plan.get("args") or []:
                if isinstance(a, (list, tuple)) and len(a) == 2:
                    args.append((str(a[0]), str(a[1])))
            replaces = plan.get("replaces")
        if replaces not in self.conns:
            replaces = None
        cs = self.conns[conn] = ConnState(url, plan, ts, args, replaces)
        self._status(None, ts, CONNECTED, url)
        if args:
            self._subscribe(conn, cs, args, ts)
        elif replaces is not None:
            self._finish_replacement(conn, cs, ts)

    def _subscribe(self, conn: str, cs: ConnState, args: list[tuple[str, str]], ts: int, op: str = "subscribe") -> None:
        """Send ``op`` for ``args`` in as few messages as fit, never repeating what is subscribed."""
        if op == "subscribe":
            args = [a for a in args if a not in cs.acked]
        batch: list[tuple[str, str]] = []
        size = 0
        for a in args:
            item = len(a[0]) + len(a[1]) + 32
            if batch and size + item > MAX_SUBSCRIBE_BYTES - 64:
                self._send_op(conn, cs, op, batch, ts)
                batch, size = [], 0
            batch.append(a)
            size += item
        if batch:
            self._send_op(conn, cs, op, batch, ts)

    def _send_op(self, conn: str, cs: ConnState, op: str, args: list[tuple[str, str]], ts: int) -> None:
        req_id = str(self._next_id)
        self._next_id += 1
        cs.pending[req_id] = (op, args)
        ops = cs.ops
        for _ in args:
            ops.append(ts)
        self.counters[op + "_ops"] += len(args)
        body = {"id": req_id, "op": op, "args": [{"channel": c, "instId": i} for c, i in args]}
        self.commands.append(Send(conn, json.dumps(body, separators=(",", ":"))))

    def _ops_left(self, cs: ConnState, ts: int) -> int:
        ops = cs.ops
        while ops and ts - ops[0] >= HOUR:
            ops.popleft()
        return OPS_PER_HOUR - len(ops)

    def on_close(self, conn: str, ts: int, code: int | None, reason: str | None) -> None:
        cs = self.conns.pop(conn, None)
        why = reason or (f"code {code}" if code is not None else "connection closed")
        if cs is None:
            return
        if why.startswith("stale"):
            self.counters["stale"] += 1
            self._status(None, ts, STALE, why)
        self._status(None, ts, DISCONNECTED, why)
        for sym in self.syms.values():
            sync = sym.syncs.pop(conn, None)
            if sync is None or sym.owner != conn:
                continue
            sym.owner = None
            if sym.refused:
                continue
            if not self._hand_over(sym, sync, ts):
                self._invalidate_consumer(sym, ts, f"disconnected: {why}")
        for other in self.conns.values():
            if other.replaces == conn:
                other.replaces = None
        if cs.replacing and not why.startswith("replaced by"):
            # the venue closed it before the hand-over finished: its replacement carries the same
            # subscriptions, so the runtime must not reconnect this one as well
            self.commands.append(Disconnect(conn, f"{why} (being replaced)", final=True))

    def _hand_over(self, sym: SymbolState, old: BookSync | None, ts: int) -> bool:
        """Give ``sym``'s events to another connection with a live, verified book. Silent when that
        book is in the very state the consumers have (same seqId); otherwise its snapshot goes out."""
        for sync in sym.syncs.values():
            if sync.state == LIVE and sync is not old:
                sym.owner = sync.conn
                same = (
                    old is not None and old.state == LIVE and sym.consumer_valid
                    and sync.last is not None and sync.last == old.last
                )
                if same:
                    self.counters["silent_handovers"] += 1
                else:
                    self._emit_snapshot(sym, sync, ts, None)
                return True
        return False

    def on_tick(self, ts: int) -> None:
        for conn, cs in list(self.conns.items()):
            if cs.ping_sent == 0:
                if ts - cs.last_recv >= PING_AFTER:
                    cs.ping_sent = ts
                    self.counters["pings"] += 1
                    self.commands.append(Send(conn, "ping"))
            elif not cs.stale_sent and ts - cs.ping_sent >= PONG_WITHIN:
                cs.stale_sent = True
                self.counters["pong_timeouts"] += 1
                self.commands.append(Disconnect(conn, f"stale: no pong within {PONG_WITHIN // SECOND} s of a ping"))
            if cs.replaces is not None and not cs.handed_over and ts - cs.opened >= REPLACEMENT_DEADLINE:
                self._finish_replacement(conn, cs, ts)
        for sym in self.syms.values():
            for sync in sym.syncs.values():
                if sync.resub_due is not None and ts >= sync.resub_due:
                    self._resubscribe(sym, sync, ts)

    def _replace(self, conn: str, cs: ConnState, why: str) -> None:
        if cs.replacing or not cs.args:
            return
        cs.replacing = True
        self.counters["replacements"] += 1
        log.info("replacing connection", venue=self.venue, conn=conn, reason=why)
        plan = {"args": [list(a) for a in cs.args], "replaces": conn}
        self.commands.append(Connect(cs.url, plan, replaces=conn))

    def _maybe_finish_replacement(self, conn: str, cs: ConnState, ts: int) -> None:
        """The replacement is ready once every subscription is acknowledged and every book on it is
        live (or has taken its instrument over)."""
        if cs.replaces is None or cs.handed_over or cs.pending:
            return
        for sym in self.syms.values():
            sync = sym.syncs.get(conn)
            if sync is not None and sync.state != LIVE and not sym.refused:
                return
        self._finish_replacement(conn, cs, ts)

    def _finish_replacement(self, conn: str, cs: ConnState, ts: int) -> None:
        cs.handed_over = True
        old = cs.replaces
        if old is not None and old in self.conns:
            self.commands.append(Disconnect(old, f"replaced by {conn}", final=True))

    # -- frames -------------------------------------------------------------------------------------

    def on_frame(self, conn: str, ts: int, data: str | bytes) -> None:
        self._n_messages += 1
        cs = self.conns.get(conn)
        if cs is not None:
            cs.last_recv = ts
            cs.ping_sent = 0
        if type(data) is str and data.startswith(BOOK_PREFIX):
            # the hot path: a book frame decoded in one pass (anything odd takes the general path)
            try:
                msg = _decode_book_push(data)
            except msgspec.DecodeError:
                pass  # the general path says what is wrong with it
            else:
                arg = msg.arg
                if arg.channel in BOOK_CHANNELS:
                    sym = self.syms.get(arg.instId)  # type: ignore[arg-type]
                    sync = sym.syncs.get(conn) if sym is not None else None
                    datas = msg.data
                    if sync is not None and sync.state is LIVE and msg.action == "update" and len(datas) == 1:
                        self._update(sym, sync, ts, datas[0])  # type: ignore[arg-type]
                    else:
                        self._on_book(conn, ts, arg, msg.action, datas)
                    return
        if data == "pong" or data == b"pong":
            self.counters["pongs"] += 1
            return
        try:
            push = schemas.push_decoder.decode(data)
        except msgspec.DecodeError as exc:
            self._malformed(conn, ts, data, exc)
            return
        arg = push.arg
        if push.event is not None:
            self._on_event(conn, ts, push, cs)
            return
        if arg is None or not push.data:
            self._unknown(conn, ts, data)
            return
        channel = arg.channel
        if channel in BOOK_CHANNELS:
            try:
                datas = schemas.book_data_decoder.decode(push.data)
            except msgspec.DecodeError as exc:
                self._malformed(conn, ts, data, exc)
                sym = self.syms.get(arg.instId or "")
                sync = sym.syncs.get(conn) if sym is not None else None
                if sym is not None and sync is not None and sync.state == LIVE:
                    # a book message we could not read is one we missed
                    self._fail(sym, sync, ts, f"malformed book message: {exc}", "malformed_books")
                return
            self._on_book(conn, ts, arg, push.action, datas)
        elif channel == "trades":
            self._on_trades(conn, ts, push.data)
        else:
            self.counters["ignored_channel"] += 1  # tickers, bbo-tbt, ...: not ours to normalise

    def _malformed(self, conn: str, ts: int, data: Any, exc: Exception) -> None:
        self.counters["malformed"] += 1
        if self._warn.warning(("malformed", conn), ts, "malformed frame", venue=self.venue, conn=conn, error=str(exc), head=str(data[:120])):
            self._status(None, ts, ERROR, f"malformed frame: {exc}")

    def _unknown(self, conn: str, ts: int, data: Any) -> None:
        self.counters["unknown_message"] += 1
        self._warn.warning(("unknown", conn), ts, "unknown message", venue=self.venue, conn=conn, head=str(data[:120]))

    def _symbol(self, inst: str | None, ts: int) -> SymbolState | None:
        """The state of ``inst``; in replay (no config) created for every instrument seen."""
        if inst is None:
            return None
        sym = self.syms.get(inst)
        if sym is not None:
            return sym
        if self.config is not None:
            return None
        info = self.instruments.get(inst)
        if info is None:
            info = guess(inst)
            self._once(
                "guess", "no instrument metadata for an instrument in this recording: normalised by OKX's "
                "instId rules (spot only; contracts cannot be sized without ctVal)", example=inst,
            )
        sym = self.syms[inst] = SymbolState(inst, info)
        if sym.refused:
            log.warning("instrument refused", venue=self.venue, inst=inst, reason=sym.refused)
            self._status(info.symbol, ts, ERROR, f"{inst} refused: {sym.refused}")
        return sym

    # -- control events -----------------------------------------------------------------------------

    def _on_event(self, conn: str, ts: int, push: schemas.Push, cs: ConnState | None) -> None:
        event = push.event
        arg = push.arg
        if event == "subscribe" or event == "unsubscribe":
            key = (arg.channel, arg.instId or "") if arg is not None else None
            if cs is not None:
                self._acked(cs, push.id, event, key)
                if key is not None:
                    if event == "subscribe":
                        cs.acked.add(key)
                    else:
                        cs.acked.discard(key)
            if event == "subscribe" and arg is not None:
                self._on_subscribed(conn, ts, arg)
            if cs is not None and cs.replaces is not None:
                self._maybe_finish_replacement(conn, cs, ts)
        elif event == "error":
            self._on_error(conn, ts, push, cs)
        elif event == "notice":
            self.counters["notices"] += 1
            log.warning("venue notice", venue=self.venue, conn=conn, code=push.code, msg=push.msg)
            # 64008: "The connection will soon be closed for a service upgrade": replace it now;
            # any other notice is about the connection too, and a replacement costs little
            if cs is not None:
                self._replace(conn, cs, f"notice {push.code}: {push.msg}")
        elif event in ("channel-conn-count", "channel-conn-count-error", "login"):
            self.counters["ignored_event"] += 1
        else:
            self._unknown(conn, ts, push.event)

    def _acked(self, cs: ConnState, req_id: str | None, op: str, key: tuple[str, str] | None) -> None:
        """Strike ``key`` off the request it belongs to (by the echoed id, else the oldest with it)."""
        requests = [req_id] if req_id is not None and req_id in cs.pending else list(cs.pending)
        for rid in requests:
            rop, args = cs.pending[rid]
            if rop == op and key in args:
                args.remove(key)
                if not args:
                    del cs.pending[rid]
                return

    def _on_subscribed(self, conn: str, ts: int, arg: schemas.Arg) -> None:
        channel = arg.channel
        if channel not in BOOK_CHANNELS and channel != "trades":
            return
        sym = self._symbol(arg.instId, ts)
        if sym is None:
            return
        if channel in BOOK_CHANNELS:
            sync = sym.syncs.get(conn)
            if sync is None:
                sym.syncs[conn] = BookSync(conn, channel)
            elif sync.state == RESUBSCRIBING:
                sync.state = WAIT_FIRST
                sync.mode = None
        if not sym.refused:
            self._status(sym.symbol, ts, SUBSCRIBED, channel)

    def _on_error(self, conn: str, ts: int, push: schemas.Push, cs: ConnState | None) -> None:
        self.counters["error_response"] += 1
        reason = f"rejected by okx: code {push.code}: {push.msg}"
        log.error("request rejected", venue=self.venue, conn=conn, id=push.id, code=push.code, msg=push.msg)
        request = cs.pending.get(push.id) if cs is not None and push.id is not None else None
        if request is None:
            self._status(None, ts, ERROR, reason)
            return
        op, args = request
        # OKX's message names the culprit ("...instId:XYZ doesn't exist"); otherwise every argument
        # of the request still unacknowledged is taken as rejected
        msg = push.msg or ""
        rejected = [a for a in args if a[1] and re.search(re.escape(a[1]) + r"(?![A-Za-z0-9-])", msg)] or list(args)
        for a in rejected:
            args.remove(a)
        if not args:
            del cs.pending[push.id]
        seen: set[str] = set()
        for channel, inst in rejected:
            sym = self.syms.get(inst)
            if sym is None:
                continue
            if sym.symbol not in seen:
                seen.add(sym.symbol)
                self._status(sym.symbol, ts, ERROR, f"{op} {channel} {inst} {reason}")
            if op == "subscribe" and channel in BOOK_CHANNELS:
                sync = sym.syncs.pop(conn, None)
                if sync is not None and sym.owner == conn:
                    sym.owner = None
                    self._invalidate_consumer(sym, ts, f"subscription rejected: {reason}")

    # -- trades -------------------------------------------------------------------------------------

    def _on_trades(self, conn: str, ts: int, raw: msgspec.Raw) -> None:
        try:
            trades = schemas.trade_data_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            self._malformed(conn, ts, raw, exc)
            return
        events = self.events
        for t in trades:
            sym = self.syms.get(t.instId) or self._symbol(t.instId, ts)
            if sym is None:
                self.counters["unknown_symbol"] += 1
                continue
            if sym.refused:
                self.counters["refused_trades"] += 1
                continue
            tid = t.tradeId
            ids = sym.trade_ids
            if tid in ids:
                self.counters["duplicate_trades"] += 1
                continue
            ids.add(tid)
            order = sym.trade_order
            order.append(tid)
            if len(order) > TRADE_IDS_KEPT:
                ids.discard(order.popleft())
            ct = sym.ct_val
            size = t.sz if ct is None else round(t.sz * ct, sym.size_decimals)
            side = t.side if t.side == "buy" or t.side == "sell" else None
            self.counters["trades"] += 1
            events.append(Trade(self.venue, sym.symbol, ts, t.ts * MS, tid, t.px, size, side))

    # -- books --------------------------------------------------------------------------------------

    def _on_book(self, conn: str, ts: int, arg: schemas.Arg, action: str | None, datas: list[schemas.BookData]) -> None:
        inst = arg.instId
        sym = self.syms.get(inst) if inst is not None else None
        if sym is None:
            sym = self._symbol(inst, ts)
            if sym is None:
                self.counters["unknown_symbol"] += 1
                self._warn.warning(("unknown_symbol", inst), ts, "book for an instrument we did not subscribe", venue=self.venue, inst=inst)
                return
        sync = sym.syncs.get(conn)
        if sync is None:  # a recording without the subscribe ack
            sync = sym.syncs[conn] = BookSync(conn, arg.channel)
        for d in datas:
            state = sync.state
            if state is LIVE:
                if action == "snapshot":
                    self._ws_snapshot(sym, sync, ts, d)
                else:
                    self._update(sym, sync, ts, d)
            elif state is WAIT_FIRST:
                if action == "snapshot" and (d.prevSeqId is None or d.prevSeqId == -1) and (d.bids or d.asks):
                    sync.mode = WS_MODE
                    self._ws_snapshot(sym, sync, ts, d)
                else:
                    # no usable WS snapshot: REST-snapshot mode (5.5.3); a first "snapshot" is ignored
                    sync.mode = REST_MODE
                    sync.state = REST_SYNC
                    self._once("rest_mode", "okx sent no WebSocket snapshot: books are synced from REST snapshots", inst=inst)
                    self.counters["rest_mode_books"] += 1
                    if action != "snapshot":
                        self._buffer(sym, sync, ts, d)
            elif state is REST_SYNC:
                if action == "snapshot":
                    self.counters["ignored_snapshots"] += 1
                else:
                    self._buffer(sym, sync, ts, d)
            else:  # RESUBSCRIBING: the old subscription's tail
                self.counters["dropped_while_resyncing"] += 1

    def _apply(self, sync: BookSync, sym: SymbolState, d: schemas.BookData) -> tuple[list, list]:
        """Apply one message's levels to ``sync``'s book; return the event's (bids, asks)."""
        book = sync.book
        bids = _apply_side(d.bids, book.bids, sync.bfrag, sym.ct_val, sym.size_decimals) if d.bids else []
        asks = _apply_side(d.asks, book.asks, sync.afrag, sym.ct_val, sym.size_decimals) if d.asks else []
        self._truncate_both(sync, bids, asks)
        return bids, asks

    def _truncate_both(self, sync: BookSync, bids: list[Level], asks: list[Level]) -> None:
        book = sync.book
        depth = sync.depth
        if len(book.bids.prices) > depth:
            self.counters["truncated_levels"] += _truncate(book.bids, sync.bfrag, depth, bids)
        if len(book.asks.prices) > depth:
            self.counters["truncated_levels"] += _truncate(book.asks, sync.afrag, depth, asks)

    def _verify(self, sync: BookSync, expected: int) -> bool:
        ok = signed32(crc_of_top(sync.bfrag, sync.afrag, 25)) == expected
        self.counters["checksums_verified" if ok else "checksum_failures"] += 1
        return ok

    def _ws_snapshot(self, sym: SymbolState, sync: BookSync, ts: int, d: schemas.BookData) -> None:
        sync.clear()
        try:
            self._apply(sync, sym, d)
        except (ValueError, IndexError, TypeError) as exc:
            self._fail(sym, sync, ts, f"malformed snapshot: {exc}", "malformed_books")
            return
        checksum = d.checksum
        if checksum and not self._verify(sync, checksum):
            self._fail(sym, sync, ts, f"checksum mismatch on snapshot seqId={d.seqId}", None)
            return
        self._check_seq_presence(d)
        sync.state = LIVE
        sync.last = d.seqId
        sync.failures = 0
        sync.resub_due = None
        if sync.book.crossed():
            self._fail(sym, sync, ts, f"crossed book after snapshot seqId={d.seqId}", "crossed")
            return
        self.counters["snapshots"] += 1
        self._emit_snapshot(sym, sync, ts, d)
        cs = self.conns.get(sync.conn)
        if cs is not None and cs.replaces is not None:
            self._maybe_finish_replacement(sync.conn, cs, ts)

    def _check_seq_presence(self, d: schemas.BookData) -> None:
        if d.seqId is None:
            self.counters["books_without_seqid"] += 1
            self._once(
                "no_seqid", "okx books without seqId (a recording from before OKX added it): continuity "
                "cannot be checked; the checksum is the only integrity signal",
            )
            if not d.checksum:
                self.counters["books_unverifiable"] += 1

    def _update(self, sym: SymbolState, sync: BookSync, ts: int, d: schemas.BookData) -> None:
        seq = d.seqId
        prev = d.prevSeqId
        if prev == sync.last and prev is not None and seq is not None:
            sync.bridging = False  # the common case first: continuity holds
        else:
            last = sync.last
            if seq is not None and prev is not None and last is not None:  # then prev != last
                if not (sync.bridging and prev <= last < seq):
                    self._fail(sym, sync, ts, f"gap: prevSeqId={prev}, expected {last} (seqId={seq})", "gaps")
                    return
                sync.bridging = False
            else:
                self._check_seq_presence(d)
        book = sync.book
        bids = d.bids
        asks = d.asks
        try:  # _apply, inlined: a call costs about as much as a level
            ct = sym.ct_val
            nd = sym.size_decimals
            if bids:
                side = book.bids
                bids = _apply_text(bids, side.levels, side.prices, sync.bfrag, _PRICES, PRICE_CACHE_LIMIT, ct, nd)
            if asks:
                side = book.asks
                asks = _apply_text(asks, side.levels, side.prices, sync.afrag, _PRICES, PRICE_CACHE_LIMIT, ct, nd)
        except (ValueError, IndexError, TypeError) as exc:
            self._fail(sym, sync, ts, f"malformed update: {exc}", "malformed_books")
            return
        bp = book.bids.prices
        ap = book.asks.prices
        depth = sync.depth
        if len(bp) > depth or len(ap) > depth:
            self._truncate_both(sync, bids, asks)
        checksum = d.checksum
        if checksum:
            if crc_of_top(sync.bfrag, sync.afrag, 25) != checksum & 0xFFFFFFFF:
                self.counters["checksum_failures"] += 1
                self._fail(sym, sync, ts, f"checksum mismatch at seqId={seq}: venue {checksum}", None)
                return
            self._n_verified += 1
        else:
            checksum = None
        if seq is not None:
            sync.last = seq
        if bp and ap and bp[-1] >= ap[0]:
            self._fail(sym, sync, ts, f"crossed book at seqId={seq}", "crossed")
            return
        self._n_updates += 1
        if sym.owner == sync.conn and sym.consumer_valid:
            ts_ex = d.ts
            self.events.append(
                Book(self.venue, sym.symbol, ts, ts_ex * MS if ts_ex else None, seq, False, bids, asks, checksum)
            )
        elif not sym.refused:
            self._emit_other(sym, sync, ts, d)

    def _emit_other(self, sym: SymbolState, sync: BookSync, ts: int, d: schemas.BookData | None) -> None:
        """``sync`` applied a message but is not the owner with a valid consumer book."""
        owner = sym.owner
        if owner is None or owner == sync.conn:
            sym.owner = sync.conn
            self._emit_snapshot(sym, sync, ts, d)
            return
        current = sym.syncs.get(owner)
        if current is None or current.state != LIVE:
            sym.owner = sync.conn
            self._emit_snapshot(sym, sync, ts, d)
            return
        # the owner is live: a replacement in progress. Take over where both are in the same state.
        cs = self.conns.get(sync.conn)
        if cs is not None and cs.replaces == owner and sync.last is not None and sync.last == current.last:
            sym.owner = sync.conn
            self.counters["silent_handovers"] += 1
            return
        self.counters["redundant_book_messages"] += 1

    def _emit_snapshot(self, sym: SymbolState, sync: BookSync, ts: int, d: schemas.BookData | None) -> None:
        if sym.refused:
            return
        owner = sym.owner
        if owner is None:
            sym.owner = owner = sync.conn
        if owner != sync.conn:
            self._emit_other(sym, sync, ts, d)
            return
        bids = sync.book.bids
        asks = sync.book.asks
        bl = bids.levels
        al = asks.levels
        checksum = d.checksum if d is not None and d.checksum else None
        ts_ex = d.ts * MS if d is not None and d.ts else None
        self.events.append(
            Book(
                self.venue, sym.symbol, ts, ts_ex, sync.last, True,
                [(p, bl[p]) for p in reversed(bids.prices)], [(p, al[p]) for p in asks.prices], checksum,
            )
        )
        sym.consumer_valid = True

    def _invalidate_consumer(self, sym: SymbolState, ts: int, reason: str) -> None:
        if sym.refused:
            return
        sym.consumer_valid = False
        self._status(sym.symbol, ts, BOOK_INVALID, reason)

    def _fail(self, sym: SymbolState, sync: BookSync, ts: int, reason: str, counter: str | None) -> None:
        """``sync``'s book can no longer be trusted: tell consumers (if it fed them) and resync it."""
        if counter:
            self.counters[counter] += 1
        self.counters["resyncs"] += 1
        self._warn.warning(("invalid", sym.inst), ts, "book invalid", venue=self.venue, inst=sym.inst, reason=reason)
        sync.clear()
        if sym.owner == sync.conn:
            sym.owner = None
            if not sym.refused:
                self._invalidate_consumer(sym, ts, reason)
                self._hand_over(sym, sync, ts)
        if sync.mode == REST_MODE:
            sync.state = REST_SYNC
            sync.fetching = False
        else:
            sync.state = RESUBSCRIBING
            sync.mode = None
            self._resubscribe(sym, sync, ts)

    def _resubscribe(self, sym: SymbolState, sync: BookSync, ts: int) -> None:
        """Unsubscribe + subscribe this instrument's book channel on its connection, within the op
        budget and the circuit breaker; otherwise held until ``on_tick`` finds room."""
        cs = self.conns.get(sync.conn)
        if cs is None or not isinstance(cs.plan, dict):
            sync.resub_due = None  # replay, or a connection we did not plan: nothing to send
            return
        resyncs = sym.resyncs
        while resyncs and ts - resyncs[0] >= RESYNC_WINDOW:
            resyncs.popleft()
        if len(resyncs) >= RESYNC_LIMIT or self._ops_left(cs, ts) < 2:
            if sync.resub_due is None:
                self.counters["resyncs_held"] += 1
                self._warn.warning(("held", sym.inst), ts, "resubscription held (circuit breaker or op budget)", venue=self.venue, inst=sym.inst)
            sync.resub_due = ts + RESYNC_HOLD
            return
        sync.resub_due = None
        resyncs.append(ts)
        key = (sync.channel, sym.inst)
        self._send_op(sync.conn, cs, "unsubscribe", [key], ts)
        cs.acked.discard(key)
        self._send_op(sync.conn, cs, "subscribe", [key], ts)

    # -- REST-snapshot mode -------------------------------------------------------------------------

    def _buffer(self, sym: SymbolState, sync: BookSync, ts: int, d: schemas.BookData) -> None:
        if d.seqId is None or d.prevSeqId is None:
            self.counters["unstitchable_updates"] += 1
            self._once("no_seqid_rest", "okx updates without seqId cannot be stitched to a REST snapshot", inst=sym.inst)
            return
        buf = sync.buffer
        buf.append((ts, d))
        if len(buf) > REST_BUFFER_LIMIT:
            del buf[0]
            self.counters["buffer_overflow"] += 1
            sync.first_prev = buf[0][1].prevSeqId
        if sync.first_prev is None:
            sync.first_prev = d.prevSeqId
        if not sync.fetching:
            self._fetch_snapshot(sym, sync, 0.0)

    def _fetch_snapshot(self, sym: SymbolState, sync: BookSync, delay: float) -> None:
        sync.fetching = True
        self.counters["snapshot_requests"] += 1
        url = f"{self.rest_url}{BOOKS_PATH}?instId={quote(sym.inst)}&sz={sync.depth}"
        self.commands.append(Fetch(url, weight=1, delay=delay))

    def _retry_snapshot(self, sym: SymbolState, sync: BookSync) -> None:
        sync.failures += 1
        self._fetch_snapshot(sym, sync, min(MAX_SNAPSHOT_RETRY_DELAY, 0.25 * 2 ** min(sync.failures, 8)))

    def on_rest(self, ts: int, url: str, status: int, body: str) -> None:
        parts = urlsplit(url)
        path = parts.path
        query = parse_qs(parts.query)
        if path.endswith(INSTRUMENTS_PATH):
            self._on_instruments(ts, url, (query.get("instType") or [None])[0], status, body)
        elif path.endswith(BOOKS_PATH):
            inst = (query.get("instId") or [""])[0]
            self._on_rest_book(ts, inst, status, body)
        else:
            self.counters["unknown_rest"] += 1
            log.warning("REST response not recognised", venue=self.venue, url=url)

    def _on_instruments(self, ts: int, url: str, kind: str | None, status: int, body: str) -> None:
        resp = None
        problem = ""
        if status == 200:
            try:
                resp = schemas.instruments_decoder.decode(body)
            except msgspec.DecodeError as exc:
                problem = f"unreadable body: {exc}"
            else:
                if str(resp.code) != "0":
                    problem = f"code {resp.code}: {resp.msg}"
                    resp = None
        else:
            problem = rest_problem(status, body, schemas.rest_error_decoder)
        if resp is None:
            self.counters["rest_errors"] += 1
            log.error("instruments failed", venue=self.venue, url=url, problem=problem)
            self._status(None, ts, ERROR, f"instruments failed: {problem}")
            if self.config is not None:
                self._instrument_failures += 1
                delay = min(60.0, 2.0 * 2 ** min(self._instrument_failures, 5))
                self.commands.append(Fetch(url, delay=delay))
            return
        self.instruments.load(kind, resp.data)
        if self.config is not None and not self._planned and all(k in self.instruments.loaded_types for k in INSTRUMENT_TYPES):
            self._plan_connections(ts)

    def _on_rest_book(self, ts: int, inst: str, status: int, body: str) -> None:
        sym = self.syms.get(inst)
        if sym is None:
            self.counters["unknown_rest"] += 1
            return
        waiting = [s for s in sym.syncs.values() if s.state == REST_SYNC and s.fetching]
        if not waiting:
            self.counters["unused_snapshots"] += 1
            return
        snap = None
        problem = ""
        if status == 200:
            try:
                resp = schemas.rest_books_decoder.decode(body)
            except msgspec.DecodeError as exc:
                problem = f"unreadable body: {exc}"
            else:
                if str(resp.code) != "0" or not resp.data:
                    problem = f"code {resp.code}: {resp.msg or 'no data'}"
                else:
                    snap = resp.data[0]
        else:
            problem = rest_problem(status, body, schemas.rest_error_decoder)
        if snap is not None and snap.seqId is None:
            snap = None
            problem = "the REST snapshot has no seqId: it cannot be stitched to the stream"
        for sync in waiting:
            sync.fetching = False
            if snap is None:
                self.counters["snapshot_failures"] += 1
                self._warn.warning(("snapshot", inst), ts, "snapshot failed", venue=self.venue, inst=inst, problem=problem)
                if not sym.refused:
                    self._status(sym.symbol, ts, ERROR, f"snapshot failed: {problem}")
                self._retry_snapshot(sym, sync)
                continue
            self._stitch(sym, sync, ts, snap)

    def _stitch(self, sym: SymbolState, sync: BookSync, ts: int, snap: schemas.BookData) -> None:
        sid = snap.seqId
        assert sid is not None
        if sync.first_prev is not None and sid < sync.first_prev:
            self.counters["snapshot_too_old"] += 1
            self._retry_snapshot(sym, sync)
            return
        buffered = [(t, d) for t, d in sync.buffer if d.seqId > sid]  # type: ignore[operator]
        if buffered and buffered[0][1].prevSeqId > sid:  # type: ignore[operator]
            self.counters["snapshot_too_old"] += 1
            self._retry_snapshot(sym, sync)
            return
        sync.clear()
        try:
            self._apply(sync, sym, snap)
        except (ValueError, IndexError, TypeError) as exc:
            self.counters["malformed_books"] += 1
            self._status(sym.symbol, ts, ERROR, f"malformed REST snapshot: {exc}")
            sync.state = REST_SYNC
            self._retry_snapshot(sym, sync)
            return
        if sync.book.crossed():
            self.counters["crossed"] += 1
            sync.clear()
            self._retry_snapshot(sym, sync)
            return
        sync.state = LIVE
        sync.last = sid
        sync.bridging = True
        sync.failures = 0
        self.counters["snapshots"] += 1
        self.counters["rest_snapshots"] += 1
        self._emit_snapshot(sym, sync, ts, None)
        for t, d in buffered:
            if sync.state is not LIVE:
                break  # a buffered update failed: the sync restarted
            self._update(sym, sync, t, d)
        cs = self.conns.get(sync.conn)
        if cs is not None and cs.replaces is not None:
            self._maybe_finish_replacement(sync.conn, cs, ts)
