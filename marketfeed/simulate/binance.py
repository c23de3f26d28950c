"""A loopback Binance server (spot and USD-M) for tests: the seed of ``marketfeed simulate``.

It speaks Binance's public market-data protocol as EXCHANGES.md 1.x/2.x describes it:

* spot REST ``/api/v3/exchangeInfo``, ``/api/v3/depth``; WebSocket ``/stream`` (combined) and ``/ws``
  (raw; ``SET_PROPERTY combined``);
* USD-M REST ``/fapi/v1/exchangeInfo``, ``/fapi/v1/depth``; WebSocket ``/public/stream`` (depth and
  bookTicker only) and ``/market/stream`` (trades), and their ``/ws`` forms. A stream subscribed on the
  wrong route is acknowledged and then silent, as the real routed endpoints behave;
* ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` / ``SET_PROPERTY`` / ``GET_PROPERTY`` with
  the documented error codes; a ping frame every ``ping_interval`` and a disconnect when no pong comes
  within ``pong_timeout``; a disconnect above the incoming-message limit (5/s spot, 10/s USD-M).

Each symbol has a TRUE book that evolves by a seeded random process: a few hundred levels per side on
a tick grid, about 18 changed levels per diff (modifications, deletions, inserts, the occasional move
of the inside), never crossed. A diff is generated for every symbol on every ``interval`` whether or not
anyone listens, so a REST snapshot taken at any moment is the book at its ``lastUpdateId`` and the diff
stream continues from it. ``true_book`` exposes it for tests.

Every depth stream of a symbol (``@depth``, ``@depth@100ms``, ...) carries the diffs of the server's one
``interval``: the stream speed in the name is not simulated.

``<symbol>@bookTicker`` goes out after each diff that changes the best bid or ask (price or size), with
the diff's final update id ``u``: the venue's own oracle for a consumer's book.

Fault hooks for tests: ``drop_next_diff``, ``duplicate_next_diff``, ``stall``, ``kill_connections``,
``server_shutdown``, ``fail_depth`` (429 with Retry-After, 418, 5xx), ``slow_depth``, ``pause``; and
counters: ``connections`` (every WebSocket accepted) and ``rest_log`` (every REST request with its
weight and status).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from marketfeed.simulate.faults import close_conn, kill, send_frame
from marketfeed.simulate.loopback import LoopbackServer

log = structlog.get_logger("marketfeed.simulate.binance")

SPOT = "spot"
USDM = "usdm"

_STREAM_RE = re.compile(r"^([a-z0-9_]+)@(depth(?:@\d+ms)?|trade|aggTrade|bookTicker)$")
_ID_RE = re.compile(r"^[A-Za-z0-9]{1,36}$")
MAX_STREAMS = 1024


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _decimals(text: str) -> int:
    return len(text.partition(".")[2].rstrip("0")) if "." in text else 0


@dataclass
class SymbolSpec:
    """An instrument: exchange symbol, assets, tick and lot step (decimal strings), starting mid."""

    symbol: str
    base: str
    quote: str
    tick: str = "0.01"
    step: str = "0.00001"
    mid: float = 60000.0
    levels: int = 250  # target levels per side
    mean_lots: int = 400  # mean size of a level, in lot steps


DEFAULT_SPOT = [
    SymbolSpec("BTCUSDT", "BTC", "USDT", "0.01", "0.00001", 60000.0, mean_lots=20000),
    SymbolSpec("ETHUSDT", "ETH", "USDT", "0.01", "0.0001", 3000.0, mean_lots=5000),
]
DEFAULT_USDM = [
    SymbolSpec("BTCUSDT", "BTC", "USDT", "0.10", "0.001", 60000.0, mean_lots=200),
    SymbolSpec("ETHUSDT", "ETH", "USDT", "0.01", "0.001", 3000.0, mean_lots=500),
]


class _Decimal:
    """Formats integer multiples of a decimal unit (a tick, a lot step) as the venue's text."""

    def __init__(self, unit: str, places: int) -> None:
        self.places = places
        self.scale = 10**places
        self.unit = round(float(unit) * self.scale)  # the unit in 10**-places

    def format(self, n: int) -> str:
        v = n * self.unit
        if not self.places:
            return str(v)
        return f"{v // self.scale}.{v % self.scale:0{self.places}d}"


class TrueBook:
    """One symbol's real book, in integer ticks and lots. ``update_id`` is the ``u`` of its last diff."""

    def __init__(self, spec: SymbolSpec, rng: random.Random, market: str, first_update_id: int) -> None:
        self.spec = spec
        self.rng = rng
        self.market = market
        # spot prints 8 decimals ("61800.30000000"), USD-M the places of the tick as written ("61800.30"
        # for tick "0.10")
        self.price_fmt = _Decimal(spec.tick, 8 if market == SPOT else len(spec.tick.partition(".")[2]))
        self.qty_fmt = _Decimal(spec.step, 8 if market == SPOT else len(spec.step.partition(".")[2]))
        tick = float(spec.tick)
        mid = round(spec.mid / tick)
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        for i in range(spec.levels):
            self.bids[mid - 1 - i - (i // 7)] = self._qty()
            self.asks[mid + 1 + i + (i // 7)] = self._qty()
        self.update_id = first_update_id
        # the best levels the last bookTicker showed (none yet: the book's initial top), so a ticker
        # goes out only when a diff changes them, as the venue's does
        self.ticker_top = self.top()
        self.trade_id = rng.randint(1_000_000, 5_000_000)
        self.agg_id = rng.randint(100_000, 900_000)

    def _qty(self) -> int:
        # most levels are small, a few are large: an exponential number of lots
        return 1 + int(self.rng.expovariate(1 / self.spec.mean_lots))

    def best_bid(self) -> int:
        return max(self.bids)

    def best_ask(self) -> int:
        return min(self.asks)

    def top(self) -> tuple[int, int, int, int]:
        """(best bid, its lots, best ask, its lots)."""
        bb, ba = self.best_bid(), self.best_ask()
        return bb, self.bids[bb], ba, self.asks[ba]

    def evolve(self) -> tuple[int, int, int, dict[int, int], dict[int, int]]:
        """Advance the book by one diff: returns (pu, U, u, bid changes, ask changes), quantity 0 for
        a deleted level."""
        rng = self.rng
        bid_changes: dict[int, int] = {}
        ask_changes: dict[int, int] = {}
        target = self.spec.levels
        for _ in range(rng.randint(12, 24)):
            is_bid = rng.random() < 0.5
            levels = self.bids if is_bid else self.asks
            changes = bid_changes if is_bid else ask_changes
            best_bid, best_ask = self.best_bid(), self.best_ask()
            r = rng.random()
            ordered = sorted(levels, reverse=is_bid)  # best first
            if r < 0.55:  # change the size of a level, mostly near the top
                price = ordered[min(len(ordered) - 1, int(abs(rng.gauss(0, 25))))]
                levels[price] = changes[price] = self._qty()
            elif r < 0.78 and len(levels) > max(10, target // 2):  # delete a level
                deep = len(levels) > target
                i = len(ordered) - 1 - int(abs(rng.gauss(0, 5))) if deep and rng.random() < 0.5 else int(abs(rng.gauss(0, 30)))
                price = ordered[max(0, min(len(ordered) - 1, i))]
                del levels[price]
                changes[price] = 0
            else:  # insert a level: inside the spread now and then (the price moves), else behind the best
                if rng.random() < 0.15 and best_ask - best_bid > 1:
                    price = rng.randint(best_bid + 1, best_ask - 1)
                else:
                    offset = 1 + int(abs(rng.gauss(0, 40)))
                    price = best_bid - offset if is_bid else best_ask + offset
                    if len(levels) < target and rng.random() < 0.3:  # refill the deep end
                        price = ordered[-1] - offset if is_bid else ordered[-1] + offset
                if (is_bid and price >= best_ask) or (not is_bid and price <= best_bid) or price <= 0:
                    continue  # would cross the book: the matching engine would have traded it
                levels[price] = changes[price] = self._qty()
        pu = self.update_id
        first = pu + 1
        last = pu + max(1, len(bid_changes) + len(ask_changes)) + rng.randint(0, 3)
        self.update_id = last
        return pu, first, last, bid_changes, ask_changes

    def levels_text(self, changes: dict[int, int], descending: bool) -> list[list[str]]:
        fp, fq = self.price_fmt.format, self.qty_fmt.format
        return [[fp(p), fq(q)] for p, q in sorted(changes.items(), reverse=descending)]

    def snapshot(self, limit: int) -> tuple[int, list[list[str]], list[list[str]]]:
        bids = sorted(self.bids.items(), reverse=True)[:limit]
        asks = sorted(self.asks.items())[:limit]
        fp, fq = self.price_fmt.format, self.qty_fmt.format
        return self.update_id, [[fp(p), fq(q)] for p, q in bids], [[fp(p), fq(q)] for p, q in asks]

    def as_floats(self) -> tuple[dict[float, float], dict[float, float]]:
        """The book as a consumer sees it after parsing the venue's text: price -> size."""
        fp, fq = self.price_fmt.format, self.qty_fmt.format
        return (
            {float(fp(p)): float(fq(q)) for p, q in self.bids.items()},
            {float(fp(p)): float(fq(q)) for p, q in self.asks.items()},
        )


class ReplayedBook(TrueBook):
    """A true book driven by a recording (``marketfeed.simulate.replayed``) instead of the random
    process: each ``evolve`` is the recording's next step, looping at its end. The update ids are the
    server's own (a recording's ids are not continuous across the loop)."""

    def __init__(self, spec: SymbolSpec, rng: random.Random, market: str, first_update_id: int, source: Any) -> None:
        self.spec = spec
        self.rng = rng
        self.market = market
        self.price_fmt = _Decimal(spec.tick, 8 if market == SPOT else len(spec.tick.partition(".")[2]))
        self.qty_fmt = _Decimal(spec.step, 8 if market == SPOT else len(spec.step.partition(".")[2]))
        self._pscale = 10 ** source.price_places
        self._qscale = 10 ** source.qty_places
        self.bids = {self._p(p): self._q(q) for p, q in source.bids.items()}
        self.asks = {self._p(p): self._q(q) for p, q in source.asks.items()}
        self.steps = [([(self._p(p), self._q(q)) for p, q in b], [(self._p(p), self._q(q)) for p, q in a]) for b, a in source.looped_steps()]
        self.trade_prices = [self._p(p) for p, _, _ in source.trades]
        self.position = 0
        self.update_id = first_update_id
        self.ticker_top = self.top()
        self.trade_id = rng.randint(1_000_000, 5_000_000)
        self.agg_id = rng.randint(100_000, 900_000)

    def _p(self, price: float) -> int:
        return round(price * self._pscale)

    def _q(self, qty: float) -> int:
        return round(qty * self._qscale)

    def evolve(self) -> tuple[int, int, int, dict[int, int], dict[int, int]]:
        bid_changes: dict[int, int] = {}
        ask_changes: dict[int, int] = {}
        if self.steps:
            b, a = self.steps[self.position]
            self.position = (self.position + 1) % len(self.steps)
            for levels, changes, step in ((self.bids, bid_changes, b), (self.asks, ask_changes, a)):
                for p, q in step:
                    if q:
                        levels[p] = q
                    else:
                        levels.pop(p, None)
                    changes[p] = q
        pu = self.update_id
        self.update_id = pu + max(1, len(bid_changes) + len(ask_changes))
        return pu, pu + 1, self.update_id, bid_changes, ask_changes


def specs_from_capture(symbols: dict[str, Any], market: str) -> list[tuple[SymbolSpec, Any]]:
    """SymbolSpecs (Binance names, the recording's finest units as tick and step) for a recording's symbols."""
    out = []
    for name, source in symbols.items():
        parts = name.split("-")
        base, quote = parts[0], parts[1]
        tick = f"{10 ** -source.price_places:.{source.price_places}f}" if source.price_places else "1"
        step = f"{10 ** -source.qty_places:.{source.qty_places}f}" if source.qty_places else "1"
        spec = SymbolSpec(base + quote, base, quote, tick, step, 0.0)
        out.append((spec, source))
    return out

@dataclass(eq=False)
class SimConnection:
    """One accepted WebSocket, with what the tests may want to know about it."""

    id: int
    market: str
    route: str  # "stream", "ws", "public/stream", "market/stream", "public/ws", "market/ws"
    path: str
    ws: web.WebSocketResponse
    request: web.Request
    combined: bool
    opened_at: float = field(default_factory=time.monotonic)
    subscriptions: set[str] = field(default_factory=set)
    received: list[str] = field(default_factory=list)  # text frames from the client, in order
    pings_sent: int = 0
    pongs_received: int = 0
    frames_sent: int = 0
    stalled: bool = False
    closed: bool = False
    close_reason: str | None = None
    last_pong: float = field(default_factory=time.monotonic)
    _incoming: deque[float] = field(default_factory=deque)
    _unstalled: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def serves_depth(self) -> bool:
        return self.market == SPOT or self.route.startswith("public")

    @property
    def serves_trades(self) -> bool:
        return self.market == SPOT or self.route.startswith("market")


@dataclass
class RestHit:
    """One REST request the server answered."""

    at: float  # time.monotonic() on arrival
    market: str
    path: str
    symbol: str | None
    limit: int | None
    weight: int
    status: int


@dataclass
class _RestFault:
    status: int  # 0: not a failure, only slow
    count: int
    retry_after: float | None = None
    delay: float = 0.0


class _Market:
    def __init__(self, kind: str, specs: list[SymbolSpec], rng: random.Random) -> None:
        self.kind = kind
        self.specs = {s.symbol: s for s in specs}
        self.books = {s.symbol: TrueBook(s, rng, kind, rng.randint(10**9, 5 * 10**9)) for s in specs}
        self.conns: set[SimConnection] = set()
        self.drop: dict[str, int] = {}
        self.duplicate: dict[str, int] = {}
        self.rest_faults: deque[_RestFault] = deque()
        self.paused = False


def spot_depth_weight(limit: int) -> int:
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


def usdm_depth_weight(limit: int) -> int:
    return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20


USDM_LIMITS = (5, 10, 20, 50, 100, 500, 1000)


class BinanceSimulator(LoopbackServer):
    """The server. Use ``await sim.start()`` / ``await sim.stop()`` (loopback, a free port), or mount
    ``sim.app`` in an aiohttp test server. ``ws_url`` / ``rest_url`` are the base URLs to configure."""

    def __init__(
        self,
        spot: list[SymbolSpec] | None = None,
        usdm: list[SymbolSpec] | None = None,
        seed: int = 1,
        interval: float = 0.1,
        trade_probability: float = 0.5,
        ping_interval: float = 20.0,
        pong_timeout: float = 60.0,
        spot_incoming_limit: int = 5,
        usdm_incoming_limit: int = 10,
        error_format: str = "flat",
        weight_limit: dict[str, int] | None = None,
    ) -> None:
        """``interval``: seconds between diffs (every symbol gets one per interval).
        ``trade_probability``: chance per interval and symbol of a taker order (1-3 fills).
        ``error_format``: "flat" gives ``{"code":2,"msg":...,"id":1}`` as EXCHANGES.md 1.2 documents;
        "nested" gives ``{"error":{"code":2,"msg":...},"id":1}``.
        ``weight_limit``: REST weight per rolling minute per market ({"spot": 6000, "usdm": 2400} as the
        venue); a request above it is answered 429 with ``Retry-After`` (none enforced when not given)."""
        self.rng = random.Random(seed)
        self.markets = {
            SPOT: _Market(SPOT, spot if spot is not None else DEFAULT_SPOT, self.rng),
            USDM: _Market(USDM, usdm if usdm is not None else DEFAULT_USDM, self.rng),
        }
        self.interval = interval
        self.trade_probability = trade_probability
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.incoming_limit = {SPOT: spot_incoming_limit, USDM: usdm_incoming_limit}
        self.error_format = error_format
        self.weight_limit = dict(weight_limit or {})
        self.connections: list[SimConnection] = []
        self.rest_log: list[RestHit] = []
        self.diffs_sent = 0
        self.rate_limit_disconnects = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app = self._make_app()

    @classmethod
    def from_capture(cls, paths: list[Any], market: str, **kwargs: Any) -> BinanceSimulator:
        """A server whose ``market`` ("spot" or "usdm") books replay a recording (see ``ReplayedBook``);
        the other market keeps the seeded defaults."""
        from marketfeed.simulate.replayed import load_capture

        sim = cls(**kwargs)
        m = sim.markets[market]
        pairs = specs_from_capture(load_capture(paths), market)
        if not pairs:
            raise ValueError(f"{paths}: no book in this recording")
        m.specs = {spec.symbol: spec for spec, _ in pairs}
        m.books = {spec.symbol: ReplayedBook(spec, sim.rng, market, sim.rng.randint(10**9, 5 * 10**9), source) for spec, source in pairs}
        return sim

    # -- lifecycle ----------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/api/v3/exchangeInfo", self._exchange_info(SPOT))
        r.add_get("/api/v3/depth", self._depth(SPOT))
        r.add_get("/fapi/v1/exchangeInfo", self._exchange_info(USDM))
        r.add_get("/fapi/v1/depth", self._depth(USDM))
        for route, market in (
            ("stream", SPOT), ("ws", SPOT),
            ("public/stream", USDM), ("market/stream", USDM), ("public/ws", USDM), ("market/ws", USDM),
        ):
            handler = self._ws_handler(market, route)
            r.add_get("/" + route, handler)
            if route.endswith("ws"):
                r.add_get("/" + route + "/{streams}", handler)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._market_loop(m)) for m in self.markets.values()]

    async def _on_shutdown(self, app: web.Application) -> None:
        for conn in list(self.connections):
            if not conn.closed:
                conn.stalled = False
                conn._unstalled.set()
                await self._close(conn, 1001, "server stopping")


    # -- truth and counters for tests ---------------------------------------------------------------

    def true_book(self, symbol: str, market: str = SPOT) -> tuple[int, dict[float, float], dict[float, float]]:
        """(update id, bids, asks) of the real book now; prices and sizes as floats."""
        book = self.markets[market].books[symbol]
        bids, asks = book.as_floats()
        return book.update_id, bids, asks

    def open_connections(self, market: str | None = None) -> list[SimConnection]:
        return [c for c in self.connections if not c.closed and (market is None or c.market == market)]

    def depth_requests(self, market: str = SPOT, symbol: str | None = None) -> list[RestHit]:
        return [h for h in self.rest_log if h.market == market and h.path.endswith("/depth") and (symbol is None or h.symbol == symbol)]

    # -- fault hooks --------------------------------------------------------------------------------

    def pause(self, market: str | None = None) -> None:
        """Freeze the books (no diffs, no trades): a still moment to compare a consumer with the truth.
        ``step`` still advances them by hand."""
        for m in self._markets(market):
            m.paused = True

    def resume(self, market: str | None = None) -> None:
        for m in self._markets(market):
            m.paused = False

    async def step(self, market: str | None = None) -> None:
        """Advance every symbol of ``market`` (or of both) by one diff now and send its frames. With the
        market paused this drives the server diff by diff: the same seed then gives the same frames
        (times aside), which is what the fixture generator and exact tests need."""
        for m in self._markets(market):
            for symbol in m.books:
                await self._step(m, symbol)

    def drop_next_diff(self, symbol: str, market: str = SPOT, count: int = 1) -> None:
        """The next ``count`` diffs of ``symbol`` are applied to the true book but sent to nobody: a gap."""
        m = self.markets[market]
        m.drop[symbol] = m.drop.get(symbol, 0) + count

    def duplicate_next_diff(self, symbol: str, market: str = SPOT) -> None:
        """The next diff of ``symbol`` is sent twice."""
        m = self.markets[market]
        m.duplicate[symbol] = m.duplicate.get(symbol, 0) + 1

    def stall(self, market: str | None = None) -> list[SimConnection]:
        """The open connections go silent: no data, no pings, no answer to pings or close frames (a
        dead peer whose TCP connection is still up). Returns the stalled connections."""
        stalled = [c for c in self.open_connections(market)]
        for c in stalled:
            c.stalled = True
            c._unstalled.clear()
        return stalled

    def unstall(self) -> None:
        for c in self.connections:
            if c.stalled:
                c.stalled = False
                c._unstalled.set()

    def kill_connections(self, market: str | None = None, route: str | None = None) -> int:
        """Drop the TCP connections without a close frame. Returns how many."""
        n = 0
        for c in self.open_connections(market):
            if route is not None and c.route != route:
                continue
            n += kill(c)
        return n

    async def server_shutdown(self, market: str = SPOT, close_after: float | None = None) -> int:
        """Send ``serverShutdown`` on every open connection of ``market``; close them ``close_after``
        seconds later if given. Returns how many were told."""
        E = int(time.time() * 1000)
        frame_combined = _dumps({"stream": "!serverShutdown", "data": {"e": "serverShutdown", "E": E}})
        frame_raw = _dumps({"e": "serverShutdown", "E": E})
        told = [c for c in self.open_connections(market) if not c.stalled]
        for c in told:
            await self._send(c, frame_combined if c.combined else frame_raw)
        if close_after is not None:
            async def later() -> None:
                await asyncio.sleep(close_after)
                for c in told:
                    if not c.closed:
                        await self._close(c, 1001, "server shutdown")
            self._tasks.append(asyncio.get_running_loop().create_task(later()))
        return len(told)

    def fail_depth(self, status: int, count: int = 1, retry_after: float | None = None, market: str = SPOT) -> None:
        """Answer the next ``count`` depth requests with HTTP ``status`` (429/418 with ``Retry-After``
        when given, 5xx, ...)."""
        self.markets[market].rest_faults.append(_RestFault(status, count, retry_after))

    def slow_depth(self, delay: float, count: int = 1, market: str = SPOT) -> None:
        """Delay the next ``count`` depth responses by ``delay`` seconds (then answer normally)."""
        self.markets[market].rest_faults.append(_RestFault(0, count, delay=delay))

    def _markets(self, market: str | None) -> list[_Market]:
        return list(self.markets.values()) if market is None else [self.markets[market]]

    # -- the market: books evolve, frames go out ----------------------------------------------------

    async def _market_loop(self, m: _Market) -> None:
        try:
            while True:
                await asyncio.sleep(self.interval)
                if m.paused:
                    continue
                for symbol in m.books:
                    await self._step(m, symbol)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("simulator market loop failed")
            raise

    async def _step(self, m: _Market, symbol: str) -> None:
        book = m.books[symbol]
        pu, first, last, bid_changes, ask_changes = book.evolve()
        now_ms = int(time.time() * 1000)
        depth: dict[str, Any] = {"e": "depthUpdate", "E": now_ms}
        if m.kind == USDM:
            depth["T"] = now_ms - 1
        depth["s"] = symbol
        depth["U"] = first
        depth["u"] = last
        if m.kind == USDM:
            depth["pu"] = pu
        depth["b"] = book.levels_text(bid_changes, True)
        depth["a"] = book.levels_text(ask_changes, False)
        lower = symbol.lower()
        frames: list[tuple[str, str]] = []  # (stream kind, payload)
        dropped = m.drop.get(symbol, 0)
        if dropped:
            m.drop[symbol] = dropped - 1
        else:
            payload = _dumps(depth)
            frames.append(("depth", payload))
            if m.duplicate.get(symbol):
                m.duplicate[symbol] -= 1
                frames.append(("depth", payload))
        # the best bid/offer after a diff that changed it (price or size), with the diff's final update
        # id: the oracle a consumer may check its book against (also when the diff itself was dropped)
        top = book.top()
        if top != book.ticker_top:
            book.ticker_top = top
            frames.append(("bookTicker", self._book_ticker(m, book, last, now_ms)))
        if self.rng.random() < self.trade_probability:
            frames.extend(self._trades(m, book, now_ms))
        for conn in list(m.conns):
            if conn.stalled or conn.closed:
                continue
            for kind, payload in frames:
                for stream in self._streams_for(conn, lower, kind):
                    await self._send(conn, f'{{"stream":"{stream}","data":{payload}}}' if conn.combined else payload)
                    if kind == "depth":
                        self.diffs_sent += 1

    def _book_ticker(self, m: _Market, book: TrueBook, u: int, now_ms: int) -> str:
        """``<symbol>@bookTicker`` as EXCHANGES.md 1.4 (spot: no event type, no times) and 2.4 (USD-M:
        ``e``, then ``T`` and ``E`` after the levels, in the venue's key order)."""
        bb, bq, ba, aq = book.top()
        fp, fq = book.price_fmt.format, book.qty_fmt.format
        ticker: dict[str, Any] = {"e": "bookTicker"} if m.kind == USDM else {}
        ticker.update({"u": u, "s": book.spec.symbol, "b": fp(bb), "B": fq(bq), "a": fp(ba), "A": fq(aq)})
        if m.kind == USDM:
            ticker["T"] = now_ms - 1
            ticker["E"] = now_ms
        return _dumps(ticker)

    def _streams_for(self, conn: SimConnection, lower: str, kind: str) -> list[str]:
        subs = conn.subscriptions
        if not subs:
            return []
        if kind == "depth":
            if not conn.serves_depth:
                return []
            return [s for s in subs if s.startswith(lower + "@depth")]
        if kind == "bookTicker":
            name = lower + "@bookTicker"
            return [name] if name in subs and conn.serves_depth else []
        name = f"{lower}@{kind}"
        return [name] if name in subs and conn.serves_trades else []

    def _trades(self, m: _Market, book: TrueBook, now_ms: int) -> list[tuple[str, str]]:
        """A taker order of 1-3 fills at the inside: one ``trade`` per fill and one ``aggTrade``."""
        rng = self.rng
        taker_buys = rng.random() < 0.5
        price = book.best_ask() if taker_buys else book.best_bid()
        fp, fq = book.price_fmt.format, book.qty_fmt.format
        fills = [1 + int(rng.expovariate(1 / 50)) for _ in range(rng.randint(1, 3))]
        out: list[tuple[str, str]] = []
        first_id = book.trade_id + 1
        for lots in fills:
            book.trade_id += 1
            trade: dict[str, Any] = {"e": "trade", "E": now_ms}
            if m.kind == USDM:
                trade["T"] = now_ms
            trade.update({"s": book.spec.symbol, "t": book.trade_id, "p": fp(price), "q": fq(lots)})
            if m.kind == SPOT:
                trade.update({"T": now_ms, "m": taker_buys is False, "M": True})
            else:
                trade.update({"X": "MARKET", "m": taker_buys is False})
            out.append(("trade", _dumps(trade)))
        book.agg_id += 1
        total = fq(sum(fills))
        agg: dict[str, Any] = {"e": "aggTrade", "E": now_ms, "s": book.spec.symbol, "a": book.agg_id, "p": fp(price), "q": total}
        if m.kind == USDM:
            agg["nq"] = total
        agg.update({"f": first_id, "l": book.trade_id, "T": now_ms, "m": taker_buys is False})
        if m.kind == SPOT:
            agg["M"] = True
        out.append(("aggTrade", _dumps(agg)))
        return out

    async def _send(self, conn: SimConnection, text: str) -> None:
        await send_frame(conn, text)  # a client gone away: its handler notices and cleans up

    async def _close(self, conn: SimConnection, code: int, reason: str) -> None:
        await close_conn(conn, code, reason)

    # -- WebSocket ----------------------------------------------------------------------------------

    def _ws_handler(self, market: str, route: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await self._serve_ws(request, market, route)

        return handler

    async def _serve_ws(self, request: web.Request, market: str, route: str) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        m = self.markets[market]
        streams: list[str] = []
        if "streams" in request.query:
            streams = [s for s in request.query["streams"].split("/") if s]
        elif request.match_info.get("streams"):
            streams = [s for s in request.match_info["streams"].split("/") if s]
        conn = SimConnection(
            id=len(self.connections) + 1,
            market=market,
            route=route,
            path=request.path_qs,
            ws=ws,
            request=request,
            combined=route.endswith("stream"),
        )
        conn.subscriptions.update(s for s in streams if _STREAM_RE.match(s))
        self.connections.append(conn)
        m.conns.add(conn)
        pinger = asyncio.get_running_loop().create_task(self._ping_loop(conn))
        try:
            await self._receive_loop(conn)
        finally:
            pinger.cancel()
            m.conns.discard(conn)
            conn.closed = True
        return ws

    async def _receive_loop(self, conn: SimConnection) -> None:
        ws = conn.ws
        while True:
            if conn.stalled and not await self._wait_unstalled(conn):
                return
            msg = await ws.receive()
            if conn.stalled:  # read while stalling: a dead peer answers nothing
                if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR, WSMsgType.CLOSING):
                    return
                continue
            if msg.type is WSMsgType.TEXT:
                if not self._count_incoming(conn):
                    return
                conn.received.append(msg.data)
                reply = self._control(conn, msg.data)
                if reply is not None:
                    await self._send(conn, reply)
            elif msg.type is WSMsgType.PING:
                if not self._count_incoming(conn):
                    return
                await ws.pong(msg.data)
            elif msg.type is WSMsgType.PONG:
                conn.pongs_received += 1
                conn.last_pong = time.monotonic()
                if not self._count_incoming(conn):
                    return
            elif msg.type is WSMsgType.BINARY:
                await self._close(conn, 1003, "binary frames are not accepted")
                return
            else:  # CLOSE (aiohttp answered it), CLOSING, CLOSED, ERROR
                if msg.type is WSMsgType.CLOSE:
                    conn.close_reason = conn.close_reason or f"client closed: {msg.data} {msg.extra}"
                    await ws.close()
                return

    async def _wait_unstalled(self, conn: SimConnection) -> bool:
        """Wait until the stall ends (True) or the client's TCP connection goes away (False)."""
        while conn.stalled:
            transport = conn.request.transport
            if transport is None or transport.is_closing():
                return False
            try:
                await asyncio.wait_for(conn._unstalled.wait(), 0.05)
            except TimeoutError:
                pass
        return True

    def _count_incoming(self, conn: SimConnection) -> bool:
        """Binance's incoming-message limit (pings, pongs and control messages): above it, the
        connection is dropped. Returns False when it was."""
        now = time.monotonic()
        window = conn._incoming
        window.append(now)
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) > self.incoming_limit[conn.market]:
            self.rate_limit_disconnects += 1
            log.warning("simulator: client over the incoming message limit", conn=conn.id, messages=len(window))
            kill(conn)
            conn.close_reason = "too many messages"
            return False
        return True

    async def _ping_loop(self, conn: SimConnection) -> None:
        while not conn.closed:
            await asyncio.sleep(self.ping_interval)
            if conn.closed:
                return
            if conn.stalled:
                continue
            if time.monotonic() - conn.last_pong > self.pong_timeout:
                log.warning("simulator: no pong in time, disconnecting", conn=conn.id)
                await self._close(conn, 1008, "pong timeout")
                return
            try:
                await conn.ws.ping(str(int(time.time() * 1000)).encode())
                conn.pings_sent += 1
            except Exception:
                return

    def _error(self, code: int, msg: str, req_id: Any) -> str:
        if self.error_format == "nested":
            return _dumps({"error": {"code": code, "msg": msg}, "id": req_id})
        return _dumps({"code": code, "msg": msg, "id": req_id})

    def _control(self, conn: SimConnection, text: str) -> str | None:
        """A client request -> the reply frame (EXCHANGES.md 1.2)."""
        try:
            req = json.loads(text)
        except ValueError as exc:
            return self._error(3, f"Invalid JSON: {exc}", None)
        if not isinstance(req, dict):
            return self._error(2, "Invalid request: expected an object", None)
        req_id = req.get("id")
        if not (
            req_id is None
            or (isinstance(req_id, int) and not isinstance(req_id, bool) and -(2**63) <= req_id < 2**63)
            or (isinstance(req_id, str) and _ID_RE.match(req_id))
        ):
            return self._error(2, "Invalid request: invalid id", None)
        method = req.get("method")
        if not isinstance(method, str):
            return self._error(2, "Invalid request: missing field `method`", req_id)
        params = req.get("params")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                return self._error(2, "Invalid request: params must be a list of stream names", req_id)
            bad = [p for p in params if not _STREAM_RE.match(p)]
            if bad:
                return self._error(2, f"Invalid request: invalid stream name {bad[0]!r}", req_id)
            if method == "SUBSCRIBE":
                if len(conn.subscriptions | set(params)) > MAX_STREAMS:
                    return self._error(2, f"Invalid request: more than {MAX_STREAMS} streams", req_id)
                conn.subscriptions.update(params)
            else:
                conn.subscriptions.difference_update(params)
            return _dumps({"result": None, "id": req_id})
        if method == "LIST_SUBSCRIPTIONS":
            return _dumps({"result": sorted(conn.subscriptions), "id": req_id})
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if not isinstance(params, list) or not params or not isinstance(params[0], str):
                return self._error(2, "Invalid request: property name must be a string", req_id)
            if params[0] != "combined":
                return self._error(0, "Unknown property", req_id)
            if method == "GET_PROPERTY":
                return _dumps({"result": conn.combined, "id": req_id})
            if len(params) != 2 or not isinstance(params[1], bool):
                return self._error(1, "Invalid value type: expected Boolean", req_id)
            conn.combined = params[1]
            return _dumps({"result": None, "id": req_id})
        return self._error(2, f"Invalid request: unknown method {method!r}", req_id)

    # -- REST ---------------------------------------------------------------------------------------

    def _rest_json(self, obj: Any, status: int = 200, weight_used: int = 0, headers: dict[str, str] | None = None) -> web.Response:
        h = {"X-MBX-USED-WEIGHT-1M": str(weight_used)}
        if headers:
            h.update(headers)
        return web.Response(text=_dumps(obj), status=status, content_type="application/json", headers=h)

    def _used_weight(self, market: str | None = None) -> int:
        cutoff = time.monotonic() - 60.0
        return sum(h.weight for h in self.rest_log if h.at >= cutoff and h.status != 429 and (market is None or h.market == market))

    def _over_limit(self, market: str, weight: int) -> float | None:
        """Seconds until ``weight`` more fits the market's enforced limit, or None when it fits now."""
        limit = self.weight_limit.get(market)
        if limit is None:
            return None
        now = time.monotonic()
        hits = [h for h in self.rest_log if h.at >= now - 60.0 and h.status != 429 and h.market == market]
        used = sum(h.weight for h in hits)
        if used + weight <= limit:
            return None
        for h in hits:  # the oldest hits leave the window first
            used -= h.weight
            if used + weight <= limit:
                return max(0.001, h.at + 60.0 - now)
        return 60.0

    def _exchange_info(self, market: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            m = self.markets[market]
            weight = 20 if market == SPOT else 1
            specs = list(m.specs.values())
            wanted: list[str] | None = None
            if "symbol" in request.query:
                wanted = [request.query["symbol"]]
            elif "symbols" in request.query:
                try:
                    wanted = json.loads(request.query["symbols"])
                    assert isinstance(wanted, list)
                except (ValueError, AssertionError):
                    return self._rest_hit(request, market, None, None, weight, 400, {"code": -1100, "msg": "Illegal characters found in parameter 'symbols'."})
            if wanted is not None:
                unknown = [s for s in wanted if s not in m.specs]
                if unknown:
                    return self._rest_hit(request, market, None, None, weight, 400, {"code": -1121, "msg": "Invalid symbol."})
                specs = [m.specs[s] for s in wanted]
            body = {
                "timezone": "UTC",
                "serverTime": int(time.time() * 1000),
                "rateLimits": [
                    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000 if market == SPOT else 2400},
                    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
                ],
                "exchangeFilters": [],
                "symbols": [self._symbol_info(market, s) for s in specs],
            }
            return self._rest_hit(request, market, None, None, weight, 200, body)

        return handler

    def _symbol_info(self, market: str, s: SymbolSpec) -> dict[str, Any]:
        filters = [
            {"filterType": "PRICE_FILTER", "minPrice": s.tick, "maxPrice": "1000000.00", "tickSize": s.tick},
            {"filterType": "LOT_SIZE", "minQty": s.step, "maxQty": "9000.00", "stepSize": s.step},
        ]
        if market == SPOT:
            return {
                "symbol": s.symbol, "status": "TRADING", "baseAsset": s.base, "baseAssetPrecision": 8,
                "quoteAsset": s.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True, "filters": filters,
            }
        return {
            "symbol": s.symbol, "pair": s.symbol, "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000, "status": "TRADING", "baseAsset": s.base, "quoteAsset": s.quote,
            "marginAsset": s.quote, "pricePrecision": _decimals(s.tick), "quantityPrecision": _decimals(s.step),
            "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN", "filters": filters,
        }

    def _rest_hit(self, request: web.Request, market: str, symbol: str | None, limit: int | None, weight: int, status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
        self.rest_log.append(RestHit(time.monotonic(), market, request.path, symbol, limit, weight, status))
        return self._rest_json(body, status, self._used_weight(), headers)

    def _depth(self, market: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            m = self.markets[market]
            symbol = request.query.get("symbol")
            try:
                limit = int(request.query.get("limit", "100" if market == SPOT else "500"))
            except ValueError:
                return self._rest_hit(request, market, symbol, None, 1, 400, {"code": -1100, "msg": "Illegal characters found in parameter 'limit'."})
            if market == SPOT:
                limit = max(1, min(limit, 5000))
                weight = spot_depth_weight(limit)
            else:
                limit = next((n for n in USDM_LIMITS if n >= limit), 1000)
                weight = usdm_depth_weight(limit)
            wait = self._over_limit(market, weight)
            if wait is not None:
                body = {"code": -1003, "msg": "Too many requests; current limit is exceeded."}
                return self._rest_hit(request, market, symbol, limit, weight, 429, body, {"Retry-After": str(int(wait) + 1)})
            fault = m.rest_faults[0] if m.rest_faults else None
            if fault is not None:
                fault.count -= 1
                if fault.count <= 0:
                    m.rest_faults.popleft()
                if fault.delay:
                    await asyncio.sleep(fault.delay)
                if fault.status:
                    headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else None
                    body = {"code": -1003, "msg": "Too many requests; current limit is exceeded."} if fault.status in (418, 429) else {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}
                    return self._rest_hit(request, market, symbol, limit, weight, fault.status, body, headers)
            if not symbol:
                return self._rest_hit(request, market, symbol, limit, weight, 400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."})
            book = m.books.get(symbol)
            if book is None:
                return self._rest_hit(request, market, symbol, limit, weight, 400, {"code": -1121, "msg": "Invalid symbol."})
            last, bids, asks = book.snapshot(limit)
            body: dict[str, Any] = {"lastUpdateId": last}
            if market == USDM:
                now_ms = int(time.time() * 1000)
                body["E"] = now_ms
                body["T"] = now_ms - 1
            body["bids"] = bids
            body["asks"] = asks
            return self._rest_hit(request, market, symbol, limit, weight, 200, body)

        return handler


def main(argv: list[str] | None = None) -> None:
    """``python -m marketfeed.simulate.binance --port 9000``: serve until interrupted (for pointing a
    daemon at it by hand: ``ws_url``/``rest_url`` = ws://127.0.0.1:9000, http://127.0.0.1:9000)."""
    import argparse

    parser = argparse.ArgumentParser(description="A loopback Binance (spot and USD-M) market-data server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between diffs")
    parser.add_argument("--ping-interval", type=float, default=20.0)
    args = parser.parse_args(argv)
    sim = BinanceSimulator(seed=args.seed, interval=args.interval, ping_interval=args.ping_interval)
    print(f"Binance simulator on ws://{args.host}:{args.port} and http://{args.host}:{args.port}", flush=True)
    web.run_app(sim.app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
