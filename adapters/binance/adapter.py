"""The Binance adapters: spot (``binance``) and USD-M perpetuals (``binance-usdm``).

Flow (live): fetch exchangeInfo -> connect (streams split across connections; USD-M depth on
``/public``, trades on ``/market``) -> SUBSCRIBE -> per symbol, buffer diffs and fetch a REST snapshot
after the first one -> bridge (``sync.DepthSync``) -> live diffs. A gap, a crossed book or a failed
snapshot affects that symbol alone: ``book_invalid``, new snapshot, buffered diffs replayed, while every
other symbol keeps flowing. A disconnect invalidates the books of that connection.

Each symbol's depth is owned by one connection at a time, so a book never mixes two connections'
streams; trades are deduplicated by id, so redundant or overlapping connections give each trade once.
A connection past its 24 h limit, or told ``serverShutdown``, is replaced make-before-break: the new one
subscribes, takes the books over, and only then is the old one closed.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

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
from marketfeed.protocol import Adapter, Connect, Disconnect, Fetch, Send, rest_problem

from . import schemas
from .frames import (
    read_agg_trade_frame,
    read_depth_frame,
    read_trade_frame,
    stream_name,
    take_agg_trade,
    take_trade,
)
from .symbols import SymbolMap
from .sync import (
    APPLY,
    BUFFER_OVERFLOW,
    BUFFERED,
    GAP,
    IGNORED,
    LIVE,
    TOO_OLD,
    DepthSync,
)
from .sync import STALE as STALE_DIFF

log = structlog.get_logger("marketfeed.binance")

MS = 1_000_000  # ns per ms
SECOND = 1_000_000_000
MAX_CONNECTION_AGE = (23 * 3600 + 50 * 60) * SECOND  # Binance closes at 24 h: replace before
SUBSCRIBE_BATCH = 200  # streams per SUBSCRIBE message
MAX_SNAPSHOT_RETRY_DELAY = 30.0
# Binance diffs cover the whole book: keep only the best levels sorted, deeper ones in the dict alone
# (see marketfeed/book.py); 64 leaves room for top-of-book consumers and bot snapshots of the top.
BOOK_WINDOW = 64


class VenueSpec(msgspec.Struct, frozen=True):
    futures: bool
    ws_url: str
    rest_url: str
    exchange_info_path: str
    depth_path: str
    depth_limits: tuple[int, ...]  # allowed snapshot limits (spot: any 1..5000)
    book_intervals: dict[int, str]  # diff speed (ms) -> stream suffix
    default_interval: int
    default_trade_stream: str
    rest_weight_per_minute: int  # our default share of the venue's per-IP REST weight
    max_sends_per_second: int


SPOT = VenueSpec(
    futures=False,
    ws_url="wss://stream.binance.com:9443",
    rest_url="https://api.binance.com",
    exchange_info_path="/api/v3/exchangeInfo",
    depth_path="/api/v3/depth",
    depth_limits=(),
    book_intervals={100: "depth@100ms", 1000: "depth"},
    default_interval=100,
    default_trade_stream="trade",
    rest_weight_per_minute=3000,  # of 6000
    max_sends_per_second=4,  # of 5 incoming messages/s, pongs included
)

USDM = VenueSpec(
    futures=True,
    ws_url="wss://fstream.binance.com",
    rest_url="https://fapi.binance.com",
    exchange_info_path="/fapi/v1/exchangeInfo",
    depth_path="/fapi/v1/depth",
    depth_limits=(5, 10, 20, 50, 100, 500, 1000),
    book_intervals={0: "depth@0ms", 100: "depth@100ms", 250: "depth", 500: "depth@500ms"},
    default_interval=100,
    default_trade_stream="aggTrade",
    rest_weight_per_minute=1200,  # of 2400
    max_sends_per_second=8,  # of 10
)

SPECS = {"binance": SPOT, "binance-usdm": USDM}


def snapshot_weight(futures: bool, limit: int) -> int:
    """REST weight of a depth snapshot (EXCHANGES.md 1.4, 2.4)."""
    if futures:
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


class SymbolState:
    __slots__ = (
        "native", "symbol", "sync", "book", "owner", "fetching", "failures", "last_trade_id",
        "last_agg_id",
    )

    def __init__(self, native: str, symbol: str, futures: bool) -> None:
        self.native = native
        self.symbol = symbol
        self.sync = DepthSync(futures)
        self.book = L2Book(window=BOOK_WINDOW)
        self.owner: str | None = None  # connection whose depth stream feeds this book
        self.fetching = False  # a snapshot request is out
        self.failures = 0  # consecutive snapshot failures, for retry pacing
        self.last_trade_id = -1
        self.last_agg_id = -1


class Route:
    """What a stream name leads to: the payload's decoder (general path), the whole frame's reader (hot
    path, ``frames``), the handler and the symbol; for trade streams also the compiled reader that
    does the whole work in one call (None without the extension)."""

    __slots__ = ("decoder", "read", "handler", "state", "take")

    def __init__(self, decoder: Any, read: Any, handler: Any, state: SymbolState | None, take: Any = None) -> None:
        self.decoder = decoder
        self.read = read
        self.handler = handler
        self.state = state
        self.take = take


class ConnState:
    __slots__ = ("url", "plan", "opened", "streams", "pending", "replaces", "replacing")

    def __init__(self, url: str, plan: Any, opened: int, streams: list[str], replaces: str | None) -> None:
        self.url = url
        self.plan = plan
        self.opened = opened
        self.streams = streams
        self.pending: dict[int, list[str]] = {}  # SUBSCRIBE id -> streams awaiting the ack
        self.replaces = replaces  # the connection this one takes over from, once subscribed
        self.replacing = False  # a replacement for this connection has been asked for


class BinanceAdapter(Adapter):
    default_stale_after = 60.0  # quiet symbols can be silent for a while; pings are not data
    connect_budget = (250, 300.0)  # Binance allows 300 attempts per 5 min per IP: leave headroom
    ws_heartbeat = None  # Binance pings us; our own pings would count against 5 msgs/s

    def __init__(self, venue: str, config: VenueConfig | None = None) -> None:
        super().__init__()
        self.venue = venue
        spec = SPECS[venue]
        self.spec = spec
        self.futures = spec.futures
        self.config = config
        self.max_sends_per_second = spec.max_sends_per_second
        self.rest_weight_per_minute = (
            config.snapshot_weight_per_minute if config and config.snapshot_weight_per_minute else spec.rest_weight_per_minute
        )
        self.ws_url = (config.ws_url if config and config.ws_url else spec.ws_url).rstrip("/")
        self.rest_url = (config.rest_url if config and config.rest_url else spec.rest_url).rstrip("/")
        self.depth = self._validated_depth(config)
        self.book_stream = spec.book_intervals[self._validated_interval(config)]
        self.trade_stream = (config.trade_stream if config and config.trade_stream else spec.default_trade_stream)
        if self.trade_stream not in ("trade", "aggTrade"):
            raise ValueError(f"{venue}: trade_stream must be 'trade' or 'aggTrade', not {self.trade_stream!r}")
        self.symbols = SymbolMap(spec.futures)
        self.states: dict[str, SymbolState] = {}  # lower-case native -> state
        self.conns: dict[str, ConnState] = {}
        self.routes: dict[str, Route] = {}  # stream name -> what handles it
        self._next_id = 1
        self._warn = RateLimitedLog(log)
        self._guess_announced = False
        self._info_failures = 0  # consecutive exchangeInfo failures, for retry pacing (5 s, 10 s, ... 60 s)

    # -- configuration ------------------------------------------------------------------------------

    def _validated_depth(self, config: VenueConfig | None) -> int:
        depth = config.depth if config and config.depth else 1000
        if self.spec.futures:
            if depth not in self.spec.depth_limits:
                raise ValueError(f"{self.venue}: depth must be one of {self.spec.depth_limits}, not {depth}")
        elif not 1 <= depth <= 5000:
            raise ValueError(f"{self.venue}: depth must be 1..5000, not {depth}")
        return depth

    def _validated_interval(self, config: VenueConfig | None) -> int:
        interval = (
            config.book_interval_ms if config and config.book_interval_ms is not None else self.spec.default_interval
        )
        if interval not in self.spec.book_intervals:
            raise ValueError(
                f"{self.venue}: book_interval_ms must be one of {sorted(self.spec.book_intervals)}, not {interval}"
            )
        return interval

    # -- live start ---------------------------------------------------------------------------------

    def start(self, ts: int) -> None:
        """Ask for instrument metadata; connections follow once it arrives."""
        url = self.rest_url + self.spec.exchange_info_path
        if not self.futures and self.config:
            # spot exchangeInfo is many MB in full; ask only for our symbols (validated on arrival,
            # and on "Invalid symbol" we fall back to the full list to say which one is wrong)
            natives = [s.replace("-", "") for s in self.config.symbols]
            url += "?symbols=" + quote(json.dumps(natives, separators=(",", ":")))
        self.commands.append(Fetch(url, weight=20 if not self.futures else 1))

    def _plan_connections(self, ts: int) -> None:
        assert self.config is not None
        book_streams: list[str] = []
        trade_streams: list[str] = []
        for name in self.config.symbols:
            native = self.symbols.to_native.get(name)
            if native is None:
                self.counters["unknown_symbol"] += 1
                log.error("unknown symbol", venue=self.venue, symbol=name)
                self.events.append(
                    Status(self.venue, name, ts, ERROR, f"unknown symbol {name}: not listed on {self.venue}")
                )
                continue
            status = self.symbols.status.get(native, "TRADING")
            if status != "TRADING":
                self.events.append(Status(self.venue, name, ts, ERROR, f"{native} status is {status}"))
            lower = native.lower()
            self._state(lower, native, name)
            if "book" in self.config.channels:
                book_streams.append(f"{lower}@{self.book_stream}")
            if "trades" in self.config.channels:
                trade_streams.append(f"{lower}@{self.trade_stream}")
        per_conn = self.config.max_streams_per_connection
        if self.futures:
            groups = [(f"{self.ws_url}/public/stream", book_streams), (f"{self.ws_url}/market/stream", trade_streams)]
        else:
            groups = [(f"{self.ws_url}/stream", book_streams + trade_streams)]
        for url, streams in groups:
            for i in range(0, len(streams), per_conn):
                self.commands.append(Connect(url, {"streams": streams[i : i + per_conn]}))

    # -- connections --------------------------------------------------------------------------------

    def on_open(self, conn: str, ts: int, url: str, plan: Any = None) -> None:
        streams: list[str] = []
        replaces = None
        if isinstance(plan, dict):
            streams = list(plan.get("streams") or [])
            replaces = plan.get("replaces")
        elif "streams=" in url:  # a combined-stream URL: the streams are in the query
            query = parse_qs(urlsplit(url).query)
            streams = [s for s in "/".join(query.get("streams", [])).split("/") if s]
        if replaces not in self.conns:
            replaces = None
        cs = self.conns[conn] = ConnState(url, plan, ts, streams, replaces)
        self.events.append(Status(self.venue, None, ts, CONNECTED, url))
        if isinstance(plan, dict):
            for i in range(0, len(streams), SUBSCRIBE_BATCH):
                batch = streams[i : i + SUBSCRIBE_BATCH]
                req_id = self._next_id
                self._next_id += 1
                cs.pending[req_id] = batch
                self.commands.append(
                    Send(conn, json.dumps({"method": "SUBSCRIBE", "params": batch, "id": req_id}, separators=(",", ":")))
                )
            if not streams:
                self._subscribed(conn, cs)
        elif streams:  # subscribed by URL: there is no acknowledgement to wait for
            self._announce_subscribed(ts, streams)

    def on_close(self, conn: str, ts: int, code: int | None, reason: str | None) -> None:
        cs = self.conns.pop(conn, None)
        if cs is None:
            return
        why = reason or (f"code {code}" if code is not None else "connection closed")
        if why.startswith("stale"):
            self.counters["stale"] += 1
            self.events.append(Status(self.venue, None, ts, STALE, why))
        self.events.append(Status(self.venue, None, ts, DISCONNECTED, why))
        for st in self.states.values():
            if st.owner == conn:
                st.owner = None
                self._invalidate(st, ts, f"disconnected: {why}")
        for other in self.conns.values():
            if other.replaces == conn:
                other.replaces = None  # the old one is gone: the replacement is simply a connection now

    def on_tick(self, ts: int) -> None:
        for conn, cs in self.conns.items():
            if not cs.replacing and ts - cs.opened >= MAX_CONNECTION_AGE and isinstance(cs.plan, dict):
                self._replace(conn, cs, "24 h connection limit")

    def _replace(self, conn: str, cs: ConnState, why: str) -> None:
        cs.replacing = True
        self.counters["rotations"] += 1
        log.info("replacing connection", venue=self.venue, conn=conn, reason=why)
        plan = {"streams": cs.streams, "replaces": conn}
        self.commands.append(Connect(cs.url, plan, replaces=conn))

    def _subscribed(self, conn: str, cs: ConnState) -> None:
        """Every SUBSCRIBE of ``conn`` is acknowledged: finish a pending hand-over."""
        old = cs.replaces
        if old is None:
            return
        cs.replaces = None
        # the books the old connection fed move to this one (its plan names the same streams, so
        # this works the same live and in replay, with or without a config)
        for stream in cs.streams:
            st = self._route(stream).state
            if st is not None and st.owner == old:
                st.owner = conn
                st.sync.hand_over()
        self.commands.append(Disconnect(old, "replaced by " + conn, final=True))

    def _announce_subscribed(self, ts: int, streams: list[str]) -> None:
        seen: set[str] = set()
        for stream in streams:
            st = self._route(stream).state
            if st is not None and st.symbol not in seen:
                seen.add(st.symbol)
                self.events.append(Status(self.venue, st.symbol, ts, SUBSCRIBED, None))

    # -- frames -------------------------------------------------------------------------------------

    def on_frame(self, conn: str, ts: int, data: str | bytes) -> None:
        # Hot path: a combined-stream frame starts with {"stream":"<name>": route on the name, then
        # take a trade frame in one C call, or read frame and payload in one pass (frames.py). Anything
        # else takes the general path.
        name = stream_name(data)
        if name is not None:
            route = self.routes.get(name)
            if route is not None:
                if route.take is not None:
                    taken = route.take(data, ts, route.state, self.venue, self.events)
                    if taken == 1:
                        return
                    if taken:
                        self.counters["duplicate_trades" if taken == 2 else "trade_id_jumps"] += 1
                        return
                    # 0: not the plain form; msgspec reads it (and says what is wrong with it)
                if route.read is not None:
                    try:
                        payload = route.read(data)
                    except msgspec.DecodeError as exc:
                        self._bad_payload(conn, ts, data, exc, route)
                        return
                    route.handler(conn, ts, payload, route.state)
                    return
        try:
            env = schemas.envelope_decoder.decode(data)
        except msgspec.DecodeError as exc:
            self._malformed(conn, ts, data, exc)
            return
        stream = env.stream
        if stream is not None and env.data:
            self._dispatch(conn, ts, self._route(stream), env.data)
        elif env.id is not None or env.code is not None or env.error is not None:
            self._on_response(conn, ts, env)
        elif env.e is not None:  # a raw /ws stream: the frame is the event
            self._on_bare_event(conn, ts, env, data)
        else:
            self._unknown(conn, ts, data)

    def _dispatch(self, conn: str, ts: int, route: Route, raw: msgspec.Raw | str | bytes) -> None:
        if route.decoder is None:
            route.handler(conn, ts, None, route.state)
            return
        try:
            payload = route.decoder.decode(raw)
        except msgspec.DecodeError as exc:
            self._bad_payload(conn, ts, raw, exc, route)
            return
        route.handler(conn, ts, payload, route.state)

    def _route(self, stream: str) -> Route:
        """Map a stream name to its handler once; unknown streams are remembered as ignored."""
        route = self.routes.get(stream)
        if route is not None:
            return route
        if stream == "!serverShutdown":
            route = Route(None, None, self._on_server_shutdown, None)
        else:
            lower, _, kind = stream.partition("@")
            take = None
            if kind == "trade":
                decoders = (schemas.trade_decoder, read_trade_frame, self._on_trade)
                take = take_trade
            elif kind == "aggTrade":
                decoders = (schemas.agg_trade_decoder, read_agg_trade_frame, self._on_agg_trade)
                take = take_agg_trade
            elif kind == "depth" or (kind.startswith("depth@") and kind.endswith("ms")):
                decoders = (schemas.depth_decoder, read_depth_frame, self._on_depth)
            else:
                decoders = None
            if decoders is None:
                # bookTicker, kline, partial depth, ...: not ours to normalise (counted, not an error)
                route = Route(None, None, self._on_ignored, None)
            else:
                st = self._state(lower, lower.upper(), None)
                route = Route(*decoders, st, take) if st is not None else Route(None, None, self._on_unknown_symbol, None)
        self.routes[stream] = route
        return route

    def _state(self, lower: str, native: str, name: str | None) -> SymbolState | None:
        st = self.states.get(lower)
        if st is not None:
            return st
        if name is None:
            if self.config is not None:
                return None  # live: only configured symbols (created when the plan is made)
            name = self.symbols.normal(native)
            if name is None:
                return None
            if not self.symbols.from_metadata and not self._guess_announced:
                self._guess_announced = True
                log.warning(
                    "no instrument metadata in this recording: symbols normalised by known quote assets",
                    venue=self.venue,
                    example=f"{native} -> {name}",
                )
        st = self.states[lower] = SymbolState(native, name, self.futures)
        return st

    def _on_ignored(self, conn: str, ts: int, payload: None, st: None) -> None:
        self.counters["ignored_stream"] += 1

    def _on_unknown_symbol(self, conn: str, ts: int, payload: None, st: None) -> None:
        self.counters["unknown_symbol"] += 1
        self._warn.warning(("unknown_symbol", conn), ts, "frame for a symbol we did not subscribe", venue=self.venue, conn=conn)

    def _on_server_shutdown(self, conn: str, ts: int, payload: None, st: None) -> None:
        self.counters["server_shutdown"] += 1
        cs = self.conns.get(conn)
        log.warning("serverShutdown received", venue=self.venue, conn=conn)
        if cs is not None and not cs.replacing and isinstance(cs.plan, dict):
            self._replace(conn, cs, "serverShutdown")

    def _on_bare_event(self, conn: str, ts: int, env: schemas.Envelope, data: str | bytes) -> None:
        kind = env.e
        if kind == "serverShutdown":
            self._on_server_shutdown(conn, ts, None, None)
            return
        if env.s is None:
            self._unknown(conn, ts, data)
            return
        suffix = {"depthUpdate": self.book_stream, "trade": "trade", "aggTrade": "aggTrade"}.get(kind)
        if suffix is None:
            self.counters["ignored_stream"] += 1
            return
        self._dispatch(conn, ts, self._route(f"{env.s.lower()}@{suffix}"), data)

    def _on_response(self, conn: str, ts: int, env: schemas.Envelope) -> None:
        cs = self.conns.get(conn)
        batch = cs.pending.pop(env.id, None) if cs is not None and isinstance(env.id, int) else None
        if env.error is not None:  # the nested form of an error reply
            env.code, env.msg = env.error.code, env.error.msg
        if env.code is not None:
            self.counters["error_response"] += 1
            log.error("request rejected", venue=self.venue, conn=conn, id=env.id, code=env.code, msg=env.msg)
            reason = f"rejected by {self.venue}: code {env.code}: {env.msg}"
            if batch:
                seen: set[str] = set()
                for stream in batch:
                    st = self._route(stream).state
                    if st is not None and st.symbol not in seen:
                        seen.add(st.symbol)
                        self.events.append(Status(self.venue, st.symbol, ts, ERROR, reason))
            else:
                self.events.append(Status(self.venue, None, ts, ERROR, reason))
        elif batch is not None:
            self._announce_subscribed(ts, batch)
        if cs is not None and batch is not None and not cs.pending:
            self._subscribed(conn, cs)

    def _malformed(self, conn: str, ts: int, data: str | bytes | msgspec.Raw, exc: Exception) -> None:
        self.counters["malformed"] += 1
        head = bytes(memoryview(data))[:120] if isinstance(data, msgspec.Raw) else data[:120]
        if self._warn.warning(("malformed", conn), ts, "malformed frame", venue=self.venue, conn=conn, error=str(exc), head=str(head)):
            self.events.append(Status(self.venue, None, ts, ERROR, f"malformed frame: {exc}"))

    def _bad_payload(self, conn: str, ts: int, data: str | bytes | msgspec.Raw, exc: Exception, route: Route) -> None:
        self._malformed(conn, ts, data, exc)
        st = route.state
        if route.handler == self._on_depth and st.owner == conn and st.sync.state == LIVE:
            # a diff we could not read is a diff we missed
            self._invalidate(st, ts, f"malformed diff: {exc}")

    def _unknown(self, conn: str, ts: int, data: str | bytes) -> None:
        self.counters["unknown_message"] += 1
        self._warn.warning(("unknown", conn), ts, "unknown message", venue=self.venue, conn=conn, head=str(data[:120]))

    # -- trades -------------------------------------------------------------------------------------

    def _on_trade(self, conn: str, ts: int, t: schemas.Trade, st: SymbolState) -> None:
        tid = t.t
        last = st.last_trade_id
        if tid <= last:
            self.counters["duplicate_trades"] += 1
            return
        if tid != last + 1 and last >= 0:
            self.counters["trade_id_jumps"] += 1  # not documented as gap-free: a warning only
        st.last_trade_id = tid
        self.events.append(Trade(self.venue, st.symbol, ts, t.T * MS, str(tid), t.p, t.q, "sell" if t.m else "buy"))

    def _on_agg_trade(self, conn: str, ts: int, t: schemas.AggTrade, st: SymbolState) -> None:
        aid = t.a
        if aid <= st.last_agg_id:
            self.counters["duplicate_trades"] += 1
            return
        st.last_agg_id = aid
        self.events.append(Trade(self.venue, st.symbol, ts, t.T * MS, str(aid), t.p, t.q, "sell" if t.m else "buy"))

    # -- depth --------------------------------------------------------------------------------------

    def _on_depth(self, conn: str, ts: int, d: schemas.DepthUpdate, st: SymbolState) -> None:
        owner = st.owner
        if owner != conn:
            if owner is not None:
                self.counters["redundant_diffs"] += 1
                return
            st.owner = conn
        if d.pu is None and self.futures:
            self._malformed(conn, ts, f"{st.native} U={d.U} u={d.u}", ValueError("USD-M diff without pu"))
            return
        d.ts = ts
        verdict = st.sync.on_diff(d)
        if verdict is APPLY:
            if st.book.apply(d.b, d.a):
                self._crossed(st, ts, d.u)
                return
            self.events.append(Book(self.venue, st.symbol, ts, d.E * MS, d.u, False, d.b, d.a))
        elif verdict is BUFFERED:
            self._want_snapshot(st)
        elif verdict is STALE_DIFF:
            self.counters["stale_diffs"] += 1
        elif verdict is GAP:
            self.counters["gaps"] += 1
            self._invalidate_after_gap(st, ts, d)
        elif verdict is BUFFER_OVERFLOW:
            self.counters["buffer_overflow"] += 1
            self._warn.warning(("overflow", st.native), ts, "sync buffer full: oldest diff dropped", venue=self.venue, symbol=st.symbol)
            self._want_snapshot(st)

    def _invalidate_after_gap(self, st: SymbolState, ts: int, d: schemas.DepthUpdate) -> None:
        got = f"pu={d.pu}" if self.futures else f"U={d.U}"
        reason = f"gap: expected {st.sync.gap_expected}, got {got}"
        self._warn.warning(("gap", st.native), ts, "sequence gap", venue=self.venue, symbol=st.symbol, reason=reason)
        self.counters["resyncs"] += 1
        st.book.clear()
        self.events.append(Status(self.venue, st.symbol, ts, BOOK_INVALID, reason))
        self._want_snapshot(st)

    def _crossed(self, st: SymbolState, ts: int, seq: int) -> None:
        self.counters["crossed"] += 1
        self._invalidate(st, ts, f"crossed book at u={seq}")

    def _invalidate(self, st: SymbolState, ts: int, reason: str) -> None:
        """The book of ``st`` can no longer be trusted: tell consumers and forget it. The next diff
        starts a new sync (buffer, then snapshot)."""
        self.counters["resyncs"] += 1
        self._warn.warning(("invalid", st.native), ts, "book invalid", venue=self.venue, symbol=st.symbol, reason=reason)
        st.sync.reset()
        st.book.clear()
        self.events.append(Status(self.venue, st.symbol, ts, BOOK_INVALID, reason))

    def _want_snapshot(self, st: SymbolState, delay: float = 0.0) -> None:
        if st.fetching:
            return
        st.fetching = True
        url = f"{self.rest_url}{self.spec.depth_path}?symbol={st.native}&limit={self.depth}"
        self.commands.append(Fetch(url, weight=snapshot_weight(self.futures, self.depth), delay=delay))

    def _retry_snapshot(self, st: SymbolState) -> None:
        st.failures += 1
        delay = min(MAX_SNAPSHOT_RETRY_DELAY, 0.5 * 2 ** min(st.failures, 10))
        self._want_snapshot(st, delay)

    # -- REST ---------------------------------------------------------------------------------------

    def on_rest(self, ts: int, url: str, status: int, body: str) -> None:
        parts = urlsplit(url)
        path = parts.path
        if path.endswith("/exchangeInfo"):
            self._on_exchange_info(ts, url, status, body)
        elif path.endswith("/depth"):
            native = (parse_qs(parts.query).get("symbol") or [""])[0].upper()
            self._on_snapshot(ts, native, url, status, body)
        else:
            self.counters["unknown_rest"] += 1
            log.warning("REST response not recognised", venue=self.venue, url=url)

    def _on_exchange_info(self, ts: int, url: str, status: int, body: str) -> None:
        info = None
        if status == 200:
            try:
                info = schemas.exchange_info_decoder.decode(body)
            except msgspec.DecodeError as exc:
                problem = f"unreadable body: {exc}"
        else:
            problem = rest_problem(status, body, schemas.rest_error_decoder)
        if info is None:
            self.counters["rest_errors"] += 1
            log.error("exchangeInfo failed", venue=self.venue, problem=problem)
            self.events.append(Status(self.venue, None, ts, ERROR, f"exchangeInfo failed: {problem}"))
            if self.config is not None:
                # a 400 on the filtered request means one of our symbols is not listed: the full list
                # tells which; anything else is retried after a pause
                filtered = status == 400 and "?" in url
                self._info_failures += 1
                delay = 0.0 if filtered else min(MAX_SNAPSHOT_RETRY_DELAY * 2, 2.5 * 2**self._info_failures)
                full = self.rest_url + self.spec.exchange_info_path
                self.commands.append(Fetch(full, weight=20 if not self.futures else 1, delay=delay))
            return
        self._info_failures = 0
        self.symbols.load(info.symbols)
        if self.config is not None and not self.conns:
            self._plan_connections(ts)

    def _on_snapshot(self, ts: int, native: str, url: str, status: int, body: str) -> None:
        lower = native.lower()
        st = self.states.get(lower)
        if st is None:
            if self.config is not None:
                self.counters["unknown_rest"] += 1
                return
            st = self._state(lower, native, None)
            if st is None:
                self.counters["unknown_symbol"] += 1
                return
        st.fetching = False
        snap = None
        problem = ""
        if status == 200:
            try:
                snap = schemas.snapshot_decoder.decode(body)
            except msgspec.DecodeError as exc:
                problem = f"unreadable body: {exc}"
        else:
            problem = rest_problem(status, body, schemas.rest_error_decoder)
        if snap is None:
            self.counters["snapshot_failures"] += 1
            self._warn.warning(("snapshot", native), ts, "snapshot failed", venue=self.venue, symbol=st.symbol, problem=problem)
            self.events.append(Status(self.venue, st.symbol, ts, ERROR, f"snapshot failed: {problem}"))
            if st.sync.state != LIVE:
                self._retry_snapshot(st)
            return
        verdict, to_apply = st.sync.on_snapshot(snap.lastUpdateId)
        if verdict is IGNORED:
            self.counters["unused_snapshots"] += 1
            return
        if verdict is TOO_OLD or verdict is GAP:
            self.counters["snapshot_retries"] += 1
            self._warn.warning(
                ("snapshot_old", native), ts, "snapshot does not bridge the buffered diffs",
                venue=self.venue, symbol=st.symbol, last_update_id=snap.lastUpdateId, verdict=verdict,
            )
            self._retry_snapshot(st)
            return
        st.failures = 0
        book = st.book
        book.apply_snapshot(snap.bids, snap.asks)
        if book.crossed():
            self._crossed(st, ts, snap.lastUpdateId)
            self._retry_snapshot(st)
            return
        venue, symbol, events = self.venue, st.symbol, self.events
        self.counters["snapshots"] += 1
        events.append(
            Book(venue, symbol, ts, snap.E * MS if snap.E else None, snap.lastUpdateId, True, snap.bids, snap.asks)
        )
        for d in to_apply:
            if book.apply(d.b, d.a):
                self._crossed(st, ts, d.u)
                self._want_snapshot(st)
                return
            events.append(Book(venue, symbol, d.ts, d.E * MS, d.u, False, d.b, d.a))
