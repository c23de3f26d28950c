"""A local Kraken server for tests: REST ``AssetPairs`` and the WebSocket v2 protocol on 127.0.0.1.

It keeps a TRUE book per pair in integers (price ticks, quantity lots), evolving by a seeded random
process, and serves each subscription the view Kraken documents: updates only for levels inside the
subscribed depth, no delete for a level pushed out by an insert (the client truncates), the next
level republished when one inside the window is deleted, numbers as JSON numbers without trailing
zeros (so a client must format with the pair's precision), and a CRC32 checksum of the true top 10 on
every book message (integers: exact by construction).

Protocol: a ``status`` message on connect; ``subscribe``/``unsubscribe`` for ``book`` (depth 10, 25,
100, 500, 1000; an unsubscribe must name the subscribed depth), ``trade`` (50-trade snapshot when asked)
and ``instrument``, acknowledged per symbol; ``ping`` -> ``pong``; ``heartbeat`` after a quiet second.

Fault hooks: ``drop_next_update`` (a book change that is never sent: a gap), ``corrupt_next_checksum``,
``kill_connections`` (TCP dropped without a close frame), ``stall`` (silent socket), ``reject``
(subscriptions for a pair fail).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from marketfeed.simulate.faults import close_conn, kill, send_frame
from marketfeed.simulate.loopback import LoopbackServer

log = structlog.get_logger("marketfeed.simulate.kraken")

DEPTHS = (10, 25, 100, 500, 1000)
ASK, BID = "asks", "bids"


@dataclass(frozen=True)
class PairSpec:
    v2: str  # BTC/USD
    rest_key: str  # XXBTZUSD
    wsname: str  # XBT/USD (v1 name)
    base: str  # REST asset code: XXBT
    quote: str  # ZUSD
    v2_base: str  # BTC
    v2_quote: str  # USD
    price_precision: int
    qty_precision: int
    mid: int  # starting mid price in ticks


DEFAULT_PAIRS = [
    PairSpec("BTC/USD", "XXBTZUSD", "XBT/USD", "XXBT", "ZUSD", "BTC", "USD", 1, 8, 600_000),
    PairSpec("ETH/USD", "XETHZUSD", "ETH/USD", "XETH", "ZUSD", "ETH", "USD", 2, 8, 300_000),
    PairSpec("DOGE/USD", "XDGUSD", "XDG/USD", "XXDG", "ZUSD", "DOGE", "USD", 7, 8, 1_200_000),
]


def number_text(n: int, precision: int) -> str:
    """An integer count of 10**-precision units as Kraken's v2 JSON number: no trailing zeros."""
    if precision == 0 or n == 0:
        return str(n)
    s = str(n).rjust(precision + 1, "0")
    frac = s[-precision:].rstrip("0")
    return s[:-precision] + ("." + frac if frac else "")


def rfc3339_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


class TrueBook:
    """The real book of one pair: ``bids``/``asks`` map price ticks -> lots; ``*_prices`` ascending."""

    def __init__(self, spec: PairSpec, rng: random.Random, levels: int = 1200, near_top: float = 0.7,
                 near_top_mean: float = 12.0) -> None:
        self.spec = spec
        self.rng = rng
        self.target = levels
        self.near_top = near_top  # share of changes drawn near the top (the rest: anywhere)
        self.near_top_mean = near_top_mean
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.bid_prices: list[int] = []
        self.ask_prices: list[int] = []
        self.hold: dict[int, int] = {}  # price -> steps during which the random process leaves it alone
        p = spec.mid + 1
        for _ in range(levels):
            self.asks[p] = self._lots()
            p += rng.randint(1, 3)
        p = spec.mid - 1
        for _ in range(levels):
            self.bids[p] = self._lots()
            p -= rng.randint(1, 3)
        self.ask_prices = sorted(self.asks)
        self.bid_prices = sorted(self.bids)
        self.trade_id = rng.randint(1_000_000, 9_000_000)
        self.trades: deque[str] = deque(maxlen=50)  # recent trade objects (JSON text), oldest first

    def _lots(self) -> int:
        q = self.spec.qty_precision
        lots = self.rng.randint(10 ** max(q - 4, 0), 5 * 10**q)
        if self.rng.random() < 0.4:  # round sizes: the wire then drops trailing zeros
            unit = 10 ** max(q - 2, 0)
            lots = max(unit, lots // unit * unit)
        return lots

    def rank_from_best(self, side: str, price: int) -> int:
        from bisect import bisect_left

        prices = self.ask_prices if side == ASK else self.bid_prices
        i = bisect_left(prices, price)
        return i if side == ASK else len(prices) - 1 - i

    def price_at(self, side: str, rank: int) -> int | None:
        prices = self.ask_prices if side == ASK else self.bid_prices
        if rank >= len(prices):
            return None
        return prices[rank] if side == ASK else prices[-1 - rank]

    def _pick_rank(self, n: int) -> int:
        if self.rng.random() < self.near_top:
            r = int(self.rng.expovariate(1.0 / self.near_top_mean))
        else:
            r = self.rng.randrange(n)
        return min(r, n - 1)

    def change(self, side: str, price: int, lots: int) -> tuple[str, int, int, int, str]:
        """Set ``price`` to ``lots`` (0 deletes). Returns (side, price, lots, rank, kind) where rank is
        the level's rank from the best (after an insert, before a delete)."""
        from bisect import bisect_left, insort

        levels = self.asks if side == ASK else self.bids
        prices = self.ask_prices if side == ASK else self.bid_prices
        if lots == 0:
            rank = self.rank_from_best(side, price)
            del levels[price]
            del prices[bisect_left(prices, price)]
            return side, price, 0, rank, "delete"
        kind = "set" if price in levels else "insert"
        if kind == "insert":
            insort(prices, price)
        levels[price] = lots
        return side, price, lots, self.rank_from_best(side, price), kind

    def random_change(self) -> tuple[str, int, int, int, str]:
        """One random change: a size change (55%), a delete or an insert (the split steers each side
        back towards ``target`` levels), at a rank drawn near the top or anywhere."""
        rng = self.rng
        for _ in range(100):
            side = ASK if rng.random() < 0.5 else BID
            levels = self.asks if side == ASK else self.bids
            n = len(levels)
            roll = rng.random()
            delete_share = 0.225 + 0.2 * max(-1.0, min(1.0, (n - self.target) / (0.05 * self.target)))
            if roll < 0.55:  # size change
                price = self.price_at(side, self._pick_rank(n))
                if price is None or price in self.hold:
                    continue
                return self.change(side, price, self._lots())
            if roll < 0.55 + delete_share and n > 20:  # delete
                price = self.price_at(side, self._pick_rank(n))
                if price is None or price in self.hold:
                    continue
                return self.change(side, price, 0)
            # insert at a free tick next to a level at the chosen rank: behind it (towards the deep
            # end) or, at the top, in front of it as long as the book does not cross
            rank = self._pick_rank(n)
            anchor = self.price_at(side, rank)
            if anchor is None:
                continue
            away = 1 if side == ASK else -1  # direction of worse prices
            if rank == 0 and rng.random() < 0.5:
                price = anchor - away * rng.randint(1, 3)  # a better price: the spread narrows
            else:
                price = anchor + away * rng.randint(1, 2)
            if side == ASK and self.bid_prices and price <= self.bid_prices[-1]:
                continue
            if side == BID and self.ask_prices and price >= self.ask_prices[0]:
                continue
            if price in levels or price in self.hold or price <= 0:
                continue
            return self.change(side, price, self._lots())
        # nothing found in 100 tries (a pathological book): change the worst ask's size
        price = self.ask_prices[-1]
        return self.change(ASK, price, self._lots())

    def changes(self, rng: random.Random, max_changes: int) -> Any:
        """This step's changes, each applied as it is taken (so a view of it is computed right after)."""
        for _ in range(rng.randint(1, max_changes)):
            yield self.random_change()

    def tick_hold(self) -> None:
        for p in list(self.hold):
            self.hold[p] -= 1
            if self.hold[p] <= 0:
                del self.hold[p]

    def checksum(self) -> int:
        """Kraken's CRC32 of the top 10: integer ticks and lots are the stripped fixed-precision texts."""
        asks = self.ask_prices[:10]
        bids = self.bid_prices[-1:-11:-1]
        a, b = self.asks, self.bids
        text = "".join(f"{p}{a[p]}" for p in asks) + "".join(f"{p}{b[p]}" for p in bids)
        return zlib.crc32(text.encode()) & 0xFFFFFFFF

    def level_json(self, price: int, lots: int) -> str:
        s = self.spec
        return f'{{"price":{number_text(price, s.price_precision)},"qty":{number_text(lots, s.qty_precision)}}}'

    def top(self, side: str, n: int) -> list[tuple[int, int]]:
        if side == ASK:
            return [(p, self.asks[p]) for p in self.ask_prices[:n]]
        return [(p, self.bids[p]) for p in self.bid_prices[-1 : -n - 1 : -1]]

    def view_floats(self, depth: int) -> tuple[dict[float, float], dict[float, float]]:
        """The top ``depth`` of each side as a client parses them (floats of the wire text)."""
        s = self.spec

        def conv(levels: list[tuple[int, int]]) -> dict[float, float]:
            return {float(number_text(p, s.price_precision)): float(number_text(q, s.qty_precision)) for p, q in levels}

        return conv(self.top(BID, depth)), conv(self.top(ASK, depth))

    def snapshot_message(self, depth: int, checksum: int | None = None) -> str:
        bids = ",".join(self.level_json(p, q) for p, q in self.top(BID, depth))
        asks = ",".join(self.level_json(p, q) for p, q in self.top(ASK, depth))
        crc = self.checksum() if checksum is None else checksum
        return (
            f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"{self.spec.v2}","bids":[{bids}],'
            f'"asks":[{asks}],"checksum":{crc},"timestamp":"{rfc3339_now()}"}}]}}'
        )

    def view_of_change(self, change: tuple[str, int, int, int, str], depth: int) -> list[str]:
        """The level texts a subscription at ``depth`` is sent for one change, computed right after it
        was applied: nothing outside the window; for a delete inside it, the deletion and the level now
        at the window's last rank (it came into scope: Kraken republishes it). A level pushed out by an
        insert is not sent: the client truncates."""
        side, price, lots, rank, kind = change
        if rank >= depth:
            return []
        out = [self.level_json(price, lots)]
        if kind == "delete":
            promoted = self.price_at(side, depth - 1)
            if promoted is not None:
                levels = self.asks if side == ASK else self.bids
                out.append(self.level_json(promoted, levels[promoted]))
        return out


class ReplayedBook(TrueBook):
    """A true book driven by a recording (``marketfeed.simulate.replayed``): each step is the recording's
    next book message, its levels applied one by one; the recording loops at its end."""

    def __init__(self, spec: PairSpec, rng: random.Random, source: Any) -> None:
        self.spec = spec
        self.rng = rng
        self.hold = {}
        ps, qs = 10**spec.price_precision, 10**spec.qty_precision
        self.bids = {round(p * ps): round(q * qs) for p, q in source.bids.items()}
        self.asks = {round(p * ps): round(q * qs) for p, q in source.asks.items()}
        self.bid_prices = sorted(self.bids)
        self.ask_prices = sorted(self.asks)
        self.steps = [([(round(p * ps), round(q * qs)) for p, q in b], [(round(p * ps), round(q * qs)) for p, q in a])
                      for b, a in source.looped_steps()]
        self.position = 0
        self.target = len(self.bids)
        self.trade_id = rng.randint(1_000_000, 9_000_000)
        self.trades = deque(maxlen=50)

    def changes(self, rng: random.Random, max_changes: int) -> Any:
        if not self.steps:
            return
        bids, asks = self.steps[self.position]
        self.position = (self.position + 1) % len(self.steps)
        for side, levels, step in ((BID, self.bids, bids), (ASK, self.asks, asks)):
            for price, lots in step:
                if lots == 0 and price not in levels:
                    continue  # a level the recording deletes that this book no longer has
                yield self.change(side, price, lots)

    def random_change(self) -> tuple[str, int, int, int, str]:
        raise NotImplementedError("a replayed book changes only as the recording does")


def pair_spec(symbol: str, price_precision: int, qty_precision: int) -> PairSpec:
    """The spec of a normalised pair (BTC-USD): Kraken's own names where we know them."""
    v2 = symbol.replace("-", "/")
    for p in DEFAULT_PAIRS:
        if p.v2 == v2:
            return PairSpec(p.v2, p.rest_key, p.wsname, p.base, p.quote, p.v2_base, p.v2_quote, price_precision, qty_precision, 0)
    base, quote = symbol.split("-")[:2]
    return PairSpec(v2, base + quote, v2, base, quote, base, quote, price_precision, qty_precision, 0)


def update_message(symbol: str, bids: list[str], asks: list[str], checksum: int, timestamp: str) -> str:
    return (
        f'{{"channel":"book","type":"update","data":[{{"symbol":"{symbol}","bids":[{",".join(bids)}],'
        f'"asks":[{",".join(asks)}],"checksum":{checksum},"timestamp":"{timestamp}"}}]}}'
    )


@dataclass(eq=False)
class SimConnection:
    id: int
    ws: web.WebSocketResponse
    request: web.Request
    books: dict[str, int] = field(default_factory=dict)  # v2 symbol -> subscribed depth
    trades: set[str] = field(default_factory=set)
    instrument: bool = False
    received: list[str] = field(default_factory=list)  # client frames, in order
    frames_sent: int = 0
    last_sent: float = field(default_factory=time.monotonic)
    stalled: bool = False
    closed: bool = False
    close_reason: str | None = None

    def requests(self, method: str, channel: str | None = None) -> list[dict[str, Any]]:
        out = []
        for text in self.received:
            try:
                obj = json.loads(text)
            except ValueError:
                continue
            if obj.get("method") == method and (channel is None or (obj.get("params") or {}).get("channel") == channel):
                out.append(obj)
        return out


class KrakenSimulator(LoopbackServer):
    """``await sim.start()`` / ``await sim.stop()``; configure ``ws_url`` and ``rest_url`` as the base URLs."""

    def __init__(self, pairs: list[PairSpec] | None = None, seed: int = 1, interval: float = 0.05,
                 heartbeat_interval: float = 1.0, trade_probability: float = 0.3, levels: int = 1200,
                 max_changes: int = 3) -> None:
        self.rng = random.Random(seed)
        self.specs = {p.v2: p for p in (pairs if pairs is not None else DEFAULT_PAIRS)}
        self.books = {v2: TrueBook(spec, self.rng, levels) for v2, spec in self.specs.items()}
        self.interval = interval
        self.heartbeat_interval = heartbeat_interval
        self.trade_probability = trade_probability
        self.max_changes = max_changes
        self.connections: list[SimConnection] = []
        self.rest_requests = 0
        self.paused = False
        self.rejected: set[str] = set()
        self._drop: dict[str, int] = {}
        self._corrupt: dict[str, int] = {}
        self.dropped = 0
        self.corrupted = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.app = web.Application()
        self.app.router.add_get("/0/public/AssetPairs", self._asset_pairs)
        self.app.router.add_get("/v2", self._serve_ws)
        self.app.on_startup.append(self._on_startup)
        self.app.on_shutdown.append(self._on_shutdown)
        self.app.on_cleanup.append(self._on_cleanup)

    @classmethod
    def from_capture(cls, paths: list[Any], **kwargs: Any) -> "KrakenSimulator":
        """A server whose books replay a recording (any Kraken protocol version our adapter reads):
        served as v2 messages built from the replayed book, checksums from the true book."""
        from marketfeed.simulate.replayed import load_capture

        symbols = load_capture(paths)
        if not symbols:
            raise ValueError(f"{paths}: no book in this recording")
        specs = [pair_spec(name, src.price_places, src.qty_places) for name, src in symbols.items()]
        sim = cls(pairs=specs, **kwargs)
        sim.books = {spec.v2: ReplayedBook(spec, sim.rng, src) for spec, src in zip(specs, symbols.values(), strict=True)}
        return sim

    # -- lifecycle -----------------------------------------------------------------------------------


    async def _on_startup(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._market_loop()), loop.create_task(self._heartbeat_loop())]

    async def _on_shutdown(self, app: web.Application) -> None:
        for conn in self.open_connections():
            conn.stalled = False
            await self._close(conn, 1001, "server stopping")


    # -- truth and fault hooks -----------------------------------------------------------------------

    def open_connections(self) -> list[SimConnection]:
        return [c for c in self.connections if not c.closed]

    def true_view(self, v2: str, depth: int) -> tuple[int, dict[float, float], dict[float, float]]:
        """(checksum, bids, asks) of the true book's top ``depth``, as floats a client would hold."""
        book = self.books[v2]
        bids, asks = book.view_floats(depth)
        return book.checksum(), bids, asks

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def drop_next_update(self, v2: str) -> None:
        """The next step changes the best ask's size and sends it to nobody (a lost message); that
        price is then left alone for a while, so the client's stale level stays visible to the checksum."""
        self._drop[v2] = self._drop.get(v2, 0) + 1

    def corrupt_next_checksum(self, v2: str) -> None:
        self._corrupt[v2] = self._corrupt.get(v2, 0) + 1

    def reject(self, v2: str) -> None:
        """Subscriptions for ``v2`` fail from now on."""
        self.rejected.add(v2)

    def kill_connections(self) -> int:
        """Drop every open TCP connection without a close frame."""
        n = 0
        for c in self.open_connections():
            n += kill(c)
        return n

    def stall(self) -> list[SimConnection]:
        """The open connections go silent (no data, heartbeats or answers) with TCP still up."""
        conns = self.open_connections()
        for c in conns:
            c.stalled = True
        return conns

    # -- REST ----------------------------------------------------------------------------------------

    async def _asset_pairs(self, request: web.Request) -> web.Response:
        self.rest_requests += 1
        result = {
            s.rest_key: {
                "altname": s.rest_key, "wsname": s.wsname, "aclass_base": "currency", "base": s.base,
                "aclass_quote": "currency", "quote": s.quote, "lot": "unit", "pair_decimals": s.price_precision,
                "lot_decimals": s.qty_precision, "lot_multiplier": 1, "status": "online",
            }
            for s in self.specs.values()
        }
        return web.json_response({"error": [], "result": result})

    # -- the market ----------------------------------------------------------------------------------

    async def _market_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.paused:
                continue
            for v2 in self.books:
                await self._step(v2)

    async def _step(self, v2: str) -> None:
        book = self.books[v2]
        book.tick_hold()
        if self._drop.get(v2):
            self._drop[v2] -= 1
            best = book.ask_prices[0]
            lots = book.asks[best] + 10 ** book.spec.qty_precision // 100 + 1
            book.change(ASK, best, lots)
            book.hold[best] = 50
            self.dropped += 1
            return
        conns = [c for c in self.open_connections() if v2 in c.books and not c.stalled]
        views: dict[int, tuple[list[str], list[str]]] = {c.books[v2]: ([], []) for c in conns}
        for change in book.changes(self.rng, self.max_changes):
            for depth, (bids, asks) in views.items():
                (asks if change[0] == ASK else bids).extend(book.view_of_change(change, depth))
        crc = book.checksum()
        if self._corrupt.get(v2):
            self._corrupt[v2] -= 1
            self.corrupted += 1
            crc ^= 0x5A5A5A5A
        ts = rfc3339_now()
        for conn in conns:
            bids, asks = views[conn.books[v2]]
            if bids or asks:
                await self._send(conn, update_message(v2, bids, asks, crc, ts))
        if self.rng.random() < self.trade_probability:
            trades = self._trades(book, ts)
            msg = '{"channel":"trade","type":"update","data":[' + ",".join(trades) + "]}"
            for conn in self.open_connections():
                if v2 in conn.trades and not conn.stalled:
                    await self._send(conn, msg)

    def _trades(self, book: TrueBook, ts: str) -> list[str]:
        buy = self.rng.random() < 0.5
        price = book.ask_prices[0] if buy else book.bid_prices[-1]
        out = []
        for _ in range(self.rng.randint(1, 3)):
            book.trade_id += 1
            s = book.spec
            text = (
                f'{{"symbol":"{s.v2}","side":"{"buy" if buy else "sell"}","price":{number_text(price, s.price_precision)},'
                f'"qty":{number_text(book._lots(), s.qty_precision)},"ord_type":"market","trade_id":{book.trade_id},'
                f'"timestamp":"{ts}"}}'
            )
            book.trades.append(text)
            out.append(text)
        return out

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval / 4)
            now = time.monotonic()
            for conn in self.open_connections():
                if conn.stalled or not (conn.books or conn.trades):
                    continue
                if now - conn.last_sent >= self.heartbeat_interval:
                    await self._send(conn, '{"channel":"heartbeat"}')

    # -- WebSocket -----------------------------------------------------------------------------------

    async def _send(self, conn: SimConnection, text: str) -> None:
        if conn.closed or conn.stalled:
            return
        if await send_frame(conn, text):  # a client gone away: its handler cleans up
            conn.last_sent = time.monotonic()

    async def _close(self, conn: SimConnection, code: int, reason: str) -> None:
        await close_conn(conn, code, reason)

    async def _serve_ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = SimConnection(id=len(self.connections) + 1, ws=ws, request=request)
        self.connections.append(conn)
        await self._send(conn, json.dumps({"channel": "status", "type": "update", "data": [{
            "api_version": "v2", "connection_id": 10_000 + conn.id, "system": "online", "version": "2.0.9"}]}))
        try:
            while True:
                msg = await ws.receive()
                if conn.stalled:
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR, WSMsgType.CLOSING):
                        break
                    continue
                if msg.type is WSMsgType.TEXT:
                    conn.received.append(msg.data)
                    for reply in self._control(conn, msg.data):
                        await self._send(conn, reply)
                elif msg.type is WSMsgType.CLOSE:
                    conn.close_reason = conn.close_reason or f"client closed: {msg.data} {msg.extra}"
                    await ws.close()
                    break
                elif msg.type in (WSMsgType.CLOSED, WSMsgType.CLOSING, WSMsgType.ERROR):
                    break
        finally:
            conn.closed = True
        return ws

    def _ack(self, method: str, req_id: Any, result: dict[str, Any] | None = None, error: str | None = None,
             symbol: str | None = None) -> str:
        now = rfc3339_now()
        body: dict[str, Any] = {"method": method}
        if error is None:
            body["result"] = result or {}
            body["success"] = True
        else:
            body["error"] = error
            body["success"] = False
            if symbol is not None:
                body["symbol"] = symbol
        body.update({"time_in": now, "time_out": now})
        if req_id is not None:
            body["req_id"] = req_id
        return json.dumps(body, separators=(",", ":"))

    def _control(self, conn: SimConnection, text: str) -> list[str]:
        try:
            req = json.loads(text)
            method = req["method"]
        except (ValueError, KeyError, TypeError):
            return [json.dumps({"error": "Malformed request", "success": False})]
        req_id = req.get("req_id")
        if method == "ping":
            now = rfc3339_now()
            return [json.dumps({"method": "pong", "req_id": req_id, "time_in": now, "time_out": now})]
        params = req.get("params") or {}
        channel = params.get("channel")
        if method not in ("subscribe", "unsubscribe"):
            return [self._ack(method, req_id, error="Method not found")]
        if channel == "instrument":
            return self._instrument(conn, method, req_id, params)
        if channel not in ("book", "trade"):
            return [self._ack(method, req_id, error="Channel not found")]
        symbols = params.get("symbol") or []
        out: list[str] = []
        depth = params.get("depth", 10)
        snapshot = params.get("snapshot", True)
        if channel == "book" and depth not in DEPTHS:
            return [self._ack(method, req_id, error=f"Invalid depth {depth}")]
        for v2 in symbols:
            if v2 not in self.books or (method == "subscribe" and v2 in self.rejected):
                out.append(self._ack(method, req_id, error=f"Currency pair not supported {v2}", symbol=v2))
                continue
            book = self.books[v2]
            if method == "unsubscribe":
                if channel == "book":
                    if conn.books.get(v2) != depth:
                        out.append(self._ack(method, req_id, error="Subscription Not Found", symbol=v2))
                        continue
                    del conn.books[v2]
                    out.append(self._ack(method, req_id, {"channel": "book", "depth": depth, "symbol": v2}))
                else:
                    conn.trades.discard(v2)
                    out.append(self._ack(method, req_id, {"channel": "trade", "symbol": v2}))
                continue
            if channel == "book":
                if v2 in conn.books:
                    out.append(self._ack(method, req_id, error="Already subscribed", symbol=v2))
                    continue
                conn.books[v2] = depth
                out.append(self._ack(method, req_id, {"channel": "book", "depth": depth, "snapshot": snapshot, "symbol": v2}))
                if snapshot:
                    out.append(book.snapshot_message(depth))
            else:
                conn.trades.add(v2)
                out.append(self._ack(method, req_id, {"channel": "trade", "snapshot": snapshot, "symbol": v2}))
                if snapshot and book.trades:
                    out.append('{"channel":"trade","type":"snapshot","data":[' + ",".join(book.trades) + "]}")
        return out

    def _instrument(self, conn: SimConnection, method: str, req_id: Any, params: dict[str, Any]) -> list[str]:
        if method == "unsubscribe":
            conn.instrument = False
            return [self._ack(method, req_id, {"channel": "instrument"})]
        conn.instrument = True
        out = [self._ack(method, req_id, {"channel": "instrument", "snapshot": True})]
        pairs = [
            {"symbol": s.v2, "base": s.v2_base, "quote": s.v2_quote, "status": "online",
             "price_precision": s.price_precision, "qty_precision": s.qty_precision,
             "price_increment": float(f"1e-{s.price_precision}"), "qty_increment": float(f"1e-{s.qty_precision}"),
             "marginable": False, "has_index": True}
            for s in self.specs.values()
        ]
        assets = sorted({a for s in self.specs.values() for a in (s.v2_base, s.v2_quote)})
        out.append(json.dumps({"channel": "instrument", "type": "snapshot", "data": {
            "assets": [{"id": a, "status": "enabled", "precision": 8, "precision_display": 5} for a in assets],
            "pairs": pairs}}))
        return out


def asset_pairs_body(specs: list[PairSpec] | None = None) -> str:
    """The REST AssetPairs response the server gives, as text (for tests and benchmarks)."""
    specs = specs if specs is not None else DEFAULT_PAIRS
    return json.dumps({"error": [], "result": {
        s.rest_key: {"altname": s.rest_key, "wsname": s.wsname, "base": s.base, "quote": s.quote,
                     "pair_decimals": s.price_precision, "lot_decimals": s.qty_precision, "status": "online"}
        for s in specs}})


def book_frames(spec: PairSpec, depth: int, count: int, seed: int = 1, levels: int | None = None,
                near_top: float = 0.7, max_changes: int = 3) -> tuple[TrueBook, str, list[str]]:
    """Offline: a true book, its snapshot frame at ``depth`` and ``count`` update frames (each with at
    least one level), exactly as the server would send them to one subscription."""
    rng = random.Random(seed)
    book = TrueBook(spec, rng, levels if levels is not None else depth + depth // 5 + 20, near_top=near_top)
    snapshot = book.snapshot_message(depth)
    frames: list[str] = []
    ts = "2026-11-21T12:00:00.000000Z"
    while len(frames) < count:
        bids: list[str] = []
        asks: list[str] = []
        for _ in range(rng.randint(1, max_changes)):
            change = book.random_change()
            (asks if change[0] == ASK else bids).extend(book.view_of_change(change, depth))
        if bids or asks:
            frames.append(update_message(spec.v2, bids, asks, book.checksum(), ts))
    return book, snapshot, frames
