"""A loopback Coinbase Advanced Trade server for tests: part of ``marketfeed simulate``.

It speaks the public market-data protocol as EXCHANGES.md 4.1 describes it:

* REST ``GET /api/v3/brokerage/market/products`` (spot products and one future, which clients must
  keep out of the spot namespace);
* WebSocket on ``/``: ``{"type":"subscribe","product_ids":[...],"channel":...}`` with ONE channel per
  message (``level2``, ``market_trades``, ``heartbeats``); a message with the old ``channels`` list or
  an unknown product or channel is answered with ``{"type":"error",...}``; every subscribe or
  unsubscribe is answered with a ``subscriptions`` message listing what is subscribed; a connection
  that has not subscribed within ``subscribe_deadline`` (5 s) is closed;
* every frame is an envelope ``{"channel","client_id","timestamp","sequence_num","events"}`` whose
  ``sequence_num`` counts per connection across every channel from 0;
* ``level2`` answers with ``l2_data`` events: a ``snapshot`` of the full book (sides ``bid`` and
  ``offer``), then ``update`` events with the new absolute quantity ("0" deletes); ``market_trades``
  with a ``snapshot`` of recent trades, then ``update`` batches; ``heartbeats`` once per
  ``heartbeat_interval`` with a rising ``heartbeat_counter``.

Each product has a TRUE book (``true_book``) in integer ticks and lots that evolves by a seeded random
process every ``interval``, whether or not anyone listens; every subscribed connection gets each change
in order, so a client that applies the snapshot and every update holds exactly the true book.

Fault hooks for tests: ``drop_next_update`` (a lost message: its sequence number is skipped),
``duplicate_next_update`` (the same message and number twice), ``send_malformed`` (a garbage frame),
``stall`` (the socket stays open and silent, heartbeats included), ``stop_heartbeats`` (everything
but heartbeats keeps flowing), ``kill_connections`` (TCP dropped
without a close frame), ``reject_next_subscription`` (an error instead of the subscription), ``pause``.
Coinbase has no book checksum, so there is no checksum fault.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from marketfeed.simulate.faults import close_conn, kill, send_frame
from marketfeed.simulate.loopback import LoopbackServer

log = structlog.get_logger("marketfeed.simulate.coinbase")

PRODUCTS_PATH = "/api/v3/brokerage/market/products"
CHANNELS = ("level2", "market_trades", "heartbeats")
DATA_CHANNEL = {"level2": "l2_data", "market_trades": "market_trades", "heartbeats": "heartbeats"}
TRADES_IN_SNAPSHOT = 50


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _now_text(ns: int | None = None) -> str:
    """RFC 3339 with nanoseconds, as Coinbase stamps its envelopes."""
    ns = time.time_ns() if ns is None else ns
    seconds, frac = divmod(ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{frac:09d}Z"


@dataclass
class ProductSpec:
    product_id: str
    base: str
    quote: str
    tick: str = "0.01"
    step: str = "0.00000001"
    mid: float = 90000.0
    levels: int = 200  # target levels per side
    mean_lots: int = 5_000_000


DEFAULT_PRODUCTS = [
    ProductSpec("BTC-USD", "BTC", "USD", "0.01", "0.00000001", 90000.0),
    ProductSpec("ETH-USD", "ETH", "USD", "0.01", "0.00000001", 3000.0, mean_lots=50_000_000),
]


def _places(unit: str) -> int:
    return len(unit.partition(".")[2])


class TrueBook:
    """One product's real book: integer ticks -> integer lots, never crossed."""

    def __init__(self, spec: ProductSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self.tick_places = _places(spec.tick)
        self.lot_places = _places(spec.step)
        mid = round(spec.mid / float(spec.tick))
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        for i in range(spec.levels):
            self.bids[mid - 1 - i - i // 5] = self._lots()
            self.asks[mid + 1 + i + i // 5] = self._lots()
        self.trade_id = rng.randint(100_000_000, 900_000_000)
        self.trades: list[dict[str, Any]] = []  # the most recent trades, oldest first

    def _lots(self) -> int:
        return 1 + int(self.rng.expovariate(1 / self.spec.mean_lots))

    def price(self, ticks: int) -> str:
        if not self.tick_places:
            return str(ticks)
        scale = 10**self.tick_places
        unit = round(float(self.spec.tick) * scale)
        v = ticks * unit
        return f"{v // scale}.{v % scale:0{self.tick_places}d}"

    def size(self, lots: int) -> str:
        if not self.lot_places:
            return str(lots)
        scale = 10**self.lot_places
        unit = round(float(self.spec.step) * scale)
        v = lots * unit
        return f"{v // scale}.{v % scale:0{self.lot_places}d}"

    def evolve(self) -> list[tuple[str, int, int]]:
        """Change a few levels; returns (side, ticks, lots) in order, lots 0 for a deletion."""
        rng = self.rng
        changes: list[tuple[str, int, int]] = []
        for _ in range(rng.randint(1, 4)):
            is_bid = rng.random() < 0.5
            levels = self.bids if is_bid else self.asks
            side = "bid" if is_bid else "offer"
            best_bid, best_ask = max(self.bids), min(self.asks)
            ordered = sorted(levels, reverse=is_bid)
            r = rng.random()
            if r < 0.5:
                price = ordered[min(len(ordered) - 1, int(abs(rng.gauss(0, 20))))]
                levels[price] = lots = self._lots()
            elif r < 0.75 and len(levels) > 20:
                price = ordered[min(len(ordered) - 1, int(abs(rng.gauss(0, 20))))]
                del levels[price]
                lots = 0
            else:
                if rng.random() < 0.2 and best_ask - best_bid > 1:
                    price = rng.randint(best_bid + 1, best_ask - 1)
                else:
                    offset = 1 + int(abs(rng.gauss(0, 30)))
                    price = best_bid - offset if is_bid else best_ask + offset
                if price <= 0 or (is_bid and price >= best_ask) or (not is_bid and price <= best_bid):
                    continue
                levels[price] = lots = self._lots()
            changes.append((side, price, lots))
        return changes

    def trade(self, time_text: str) -> dict[str, Any]:
        """A taker order filling at the inside; ``side`` is the taker's side."""
        buy = self.rng.random() < 0.5
        self.trade_id += 1
        trade = {
            "trade_id": str(self.trade_id), "product_id": self.spec.product_id,
            "price": self.price(min(self.asks) if buy else max(self.bids)),
            "size": self.size(1 + int(self.rng.expovariate(1 / 1000))), "side": "BUY" if buy else "SELL",
            "time": time_text,
        }
        self.trades.append(trade)
        del self.trades[:-TRADES_IN_SNAPSHOT]
        return trade

    def snapshot_updates(self) -> list[dict[str, str]]:
        stamp = "1970-01-01T00:00:00Z"  # as the venue's own snapshots show
        out = [{"side": "bid", "event_time": stamp, "price_level": self.price(p), "new_quantity": self.size(q)}
               for p, q in sorted(self.bids.items(), reverse=True)]
        out += [{"side": "offer", "event_time": stamp, "price_level": self.price(p), "new_quantity": self.size(q)}
                for p, q in sorted(self.asks.items())]
        return out

    def as_floats(self) -> tuple[dict[float, float], dict[float, float]]:
        return (
            {float(self.price(p)): float(self.size(q)) for p, q in self.bids.items()},
            {float(self.price(p)): float(self.size(q)) for p, q in self.asks.items()},
        )


class ReplayedBook(TrueBook):
    """A true book driven by a recording (``marketfeed.simulate.replayed``): each ``evolve`` is the
    recording's next book message; the recording loops at its end."""

    def __init__(self, spec: ProductSpec, rng: random.Random, source: Any) -> None:
        self.spec = spec
        self.rng = rng
        self.tick_places = _places(spec.tick)
        self.lot_places = _places(spec.step)
        ps, qs = 10**self.tick_places, 10**self.lot_places
        self.bids = {round(p * ps): round(q * qs) for p, q in source.bids.items()}
        self.asks = {round(p * ps): round(q * qs) for p, q in source.asks.items()}
        self.steps = [([(round(p * ps), round(q * qs)) for p, q in b], [(round(p * ps), round(q * qs)) for p, q in a])
                      for b, a in source.looped_steps()]
        self.position = 0
        self.trade_id = rng.randint(100_000_000, 900_000_000)
        self.trades = []

    def evolve(self) -> list[tuple[str, int, int]]:
        if not self.steps:
            return []
        bids, asks = self.steps[self.position]
        self.position = (self.position + 1) % len(self.steps)
        out = []
        for side, levels, step in (("bid", self.bids, bids), ("offer", self.asks, asks)):
            for price, lots in step:
                if lots:
                    levels[price] = lots
                elif levels.pop(price, None) is None:
                    continue  # a delete of a level this book does not have: nothing to send
                out.append((side, price, lots))
        return out


@dataclass(eq=False)
class SimConnection:
    id: int
    ws: web.WebSocketResponse
    request: web.Request
    opened_at: float = field(default_factory=time.monotonic)
    subscriptions: dict[str, set[str]] = field(default_factory=dict)  # channel -> product ids
    received: list[str] = field(default_factory=list)  # client frames in order
    seq: int = 0  # the next sequence_num
    frames_sent: int = 0
    closed: bool = False
    close_reason: str | None = None
    stalled: bool = False
    drop_updates: int = 0
    duplicate_updates: int = 0
    malformed: int = 0
    heartbeat_counter: int = 0
    outbox: asyncio.Queue[tuple[str, list[Any], bool]] = field(default_factory=asyncio.Queue)
    _unstalled: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, channel: str, product_id: str) -> bool:
        return product_id in self.subscriptions.get(channel, ())


class CoinbaseSimulator(LoopbackServer):
    """The server: ``await sim.start()`` / ``await sim.stop()`` on a free loopback port, or mount
    ``sim.app``. ``ws_url`` / ``rest_url`` are the base URLs to configure."""

    def __init__(
        self,
        products: list[ProductSpec] | None = None,
        seed: int = 1,
        interval: float = 0.05,
        trade_probability: float = 0.3,
        heartbeat_interval: float = 1.0,
        subscribe_deadline: float = 5.0,
    ) -> None:
        self.rng = random.Random(seed)
        specs = products if products is not None else DEFAULT_PRODUCTS
        self.books = {s.product_id: TrueBook(s, self.rng) for s in specs}
        self.interval = interval
        self.trade_probability = trade_probability
        self.heartbeat_interval = heartbeat_interval
        self.subscribe_deadline = subscribe_deadline
        self.connections: list[SimConnection] = []
        self.rest_hits = 0
        self.deadline_disconnects = 0
        self.paused = False
        self.heartbeats_stopped = False
        self._reject: list[str | None] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.app = self._make_app()

    @classmethod
    def from_capture(cls, paths: list[Any], **kwargs: Any) -> "CoinbaseSimulator":
        """A server whose books replay a recording (the legacy ``level2`` feed too): served as Advanced
        Trade ``l2_data`` messages built from the replayed book. Products with an empty side are left out."""
        from marketfeed.simulate.replayed import load_capture

        symbols = {n: s for n, s in load_capture(paths).items() if s.bids and s.asks}
        if not symbols:
            raise ValueError(f"{paths}: no book in this recording")
        sim = cls(products=[], **kwargs)
        for name, src in symbols.items():
            base, quote = name.split("-")[:2]
            tick = f"{10 ** -src.price_places:.{src.price_places}f}" if src.price_places else "1"
            step = f"{10 ** -src.qty_places:.{src.qty_places}f}" if src.qty_places else "1"
            sim.books[name] = ReplayedBook(ProductSpec(name, base, quote, tick, step), sim.rng, src)
        return sim

    # -- lifecycle ----------------------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(PRODUCTS_PATH, self._products)
        app.router.add_get("/", self._serve_ws)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._market_loop()), loop.create_task(self._heartbeat_loop())]

    async def _on_shutdown(self, app: web.Application) -> None:
        for conn in list(self.connections):
            if not conn.closed:
                conn.stalled = False
                conn._unstalled.set()
                await self._close(conn, 1001, "server stopping")


    # -- truth and faults for tests -----------------------------------------------------------------

    def true_book(self, product_id: str) -> tuple[dict[float, float], dict[float, float]]:
        """(bids, asks) of the real book now, price -> size as a client parses them."""
        return self.books[product_id].as_floats()

    def open_connections(self) -> list[SimConnection]:
        return [c for c in self.connections if not c.closed]

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def drop_next_update(self, count: int = 1) -> None:
        """Each open connection loses its next ``count`` l2_data updates: their numbers are skipped."""
        for c in self.open_connections():
            c.drop_updates += count

    def duplicate_next_update(self) -> None:
        for c in self.open_connections():
            c.duplicate_updates += 1

    def send_malformed(self) -> None:
        """Each open connection gets a garbage frame next (it carries no readable sequence_num, so the
        message it stands for is lost: the next number is skipped)."""
        for c in self.open_connections():
            c.malformed += 1

    def stall(self) -> list[SimConnection]:
        stalled = self.open_connections()
        for c in stalled:
            c.stalled = True
            c._unstalled.clear()
        return stalled

    def unstall(self) -> None:
        for c in self.connections:
            c.stalled = False
            c._unstalled.set()

    def stop_heartbeats(self, stopped: bool = True) -> None:
        """Heartbeats stop (or resume) while every other channel keeps flowing."""
        self.heartbeats_stopped = stopped

    def kill_connections(self) -> int:
        """Drop every open connection's TCP stream without a close frame."""
        killed = 0
        for c in self.open_connections():
            kill(c)
            killed += 1
        return killed

    def reject_next_subscription(self, channel: str | None = None) -> None:
        """The next subscribe (to ``channel``, or any) is answered with an error and not served."""
        self._reject.append(channel)

    # -- REST ---------------------------------------------------------------------------------------

    async def _products(self, request: web.Request) -> web.Response:
        self.rest_hits += 1
        products = [
            {"product_id": s.spec.product_id, "base_increment": s.spec.step,
             "quote_increment": s.spec.tick, "price_increment": s.spec.tick, "base_currency_id": s.spec.base,
             "quote_currency_id": s.spec.quote, "status": "online", "trading_disabled": False, "product_type": "SPOT",
             "alias": "", "alias_to": []}
            for s in self.books.values()
        ]
        products.append({"product_id": "BIT-28NOV26-CDE", "base_currency_id": "", "quote_currency_id": "USD",
                         "product_type": "FUTURE", "status": "online", "alias": "", "alias_to": []})
        return web.json_response({"products": products, "num_products": len(products)})

    # -- the market -----------------------------------------------------------------------------------

    async def _market_loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.paused:
                continue
            stamp = _now_text()
            for product_id, book in self.books.items():
                changes = book.evolve()
                if changes:
                    updates = [{"side": side, "event_time": stamp[:26] + "Z", "price_level": book.price(p),
                                "new_quantity": book.size(q)} for side, p, q in changes]
                    event = {"type": "update", "product_id": product_id, "updates": updates}
                    for c in self.connections:
                        if not c.closed and c.wants("level2", product_id):
                            c.outbox.put_nowait(("l2_data", [event], True))
                if self.rng.random() < self.trade_probability:
                    trade = book.trade(stamp[:26] + "Z")
                    for c in self.connections:
                        if not c.closed and c.wants("market_trades", product_id):
                            c.outbox.put_nowait(("market_trades", [{"type": "update", "trades": [trade]}], False))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if self.heartbeats_stopped:
                continue
            now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")
            for c in self.connections:
                if not c.closed and "heartbeats" in c.subscriptions:
                    c.heartbeat_counter += 1
                    c.outbox.put_nowait(("heartbeats", [{"current_time": now, "heartbeat_counter": c.heartbeat_counter}], False))

    # -- WebSocket --------------------------------------------------------------------------------------

    async def _serve_ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = SimConnection(len(self.connections) + 1, ws, request)
        conn._unstalled.set()
        self.connections.append(conn)
        loop = asyncio.get_running_loop()
        writer = loop.create_task(self._writer(conn))
        deadline = loop.create_task(self._deadline(conn))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                conn.received.append(msg.data)
                self._control(conn, msg.data)
        finally:
            conn.closed = True
            writer.cancel()
            deadline.cancel()
            await asyncio.gather(writer, deadline, return_exceptions=True)
        return ws

    async def _deadline(self, conn: SimConnection) -> None:
        await asyncio.sleep(self.subscribe_deadline)
        if not conn.subscriptions and not conn.closed:
            self.deadline_disconnects += 1
            await self._close(conn, 1008, "no subscribe within the deadline")

    def _error(self, conn: SimConnection, message: str, reason: str) -> None:
        conn.outbox.put_nowait(("error", [{"message": message, "reason": reason}], False))

    def _control(self, conn: SimConnection, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            self._error(conn, "Failed to parse message", "malformed JSON")
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind not in ("subscribe", "unsubscribe"):
            self._error(conn, "Failed to parse message", f"unknown message type {kind!r}")
            return
        channel = msg.get("channel")
        if "channels" in msg or channel not in CHANNELS:
            self._error(conn, "Failure to subscribe", "one channel per message: 'channel' must be level2, market_trades or heartbeats")
            return
        products = msg.get("product_ids") or []
        unknown = [p for p in products if p not in self.books]
        if unknown or (channel != "heartbeats" and not products and kind == "subscribe"):
            self._error(conn, "Failure to subscribe", f"unknown products {unknown}" if unknown else "product_ids missing")
            return
        if kind == "subscribe" and self._reject and self._reject[0] in (None, channel):
            self._reject.pop(0)
            self._error(conn, "Failure to subscribe", f"{channel} rejected")
            return
        new: list[str] = []  # products this message adds: each gets its snapshot
        if kind == "unsubscribe":
            current = conn.subscriptions.get(channel, set())
            current.difference_update(products if products else set(current))
            if not current:
                conn.subscriptions.pop(channel, None)
        else:
            current = conn.subscriptions.setdefault(channel, set())
            if channel == "heartbeats":
                current.add("heartbeats")  # not per product
            else:
                new = [p for p in products if p not in current]
                current.update(products)
        acked = {ch: sorted(ps) for ch, ps in conn.subscriptions.items()}
        conn.outbox.put_nowait(("subscriptions", [{"subscriptions": acked}], False))
        if kind == "subscribe" and channel != "heartbeats":
            # the snapshot goes in the same step as the subscription, so no update can slip between
            for product_id in new:
                book = self.books[product_id]
                if channel == "level2":
                    event = {"type": "snapshot", "product_id": product_id, "updates": book.snapshot_updates()}
                    conn.outbox.put_nowait(("l2_data", [event], False))
                else:
                    trades = list(reversed(book.trades))  # newest first, as the venue lists them
                    conn.outbox.put_nowait(("market_trades", [{"type": "snapshot", "trades": trades}], False))

    async def _writer(self, conn: SimConnection) -> None:
        """Sends the connection's frames in order, numbering them, and carries out the faults."""
        while True:
            channel, events, is_update = await conn.outbox.get()
            if conn.stalled:
                await conn._unstalled.wait()
            if conn.closed:
                return
            if channel == "error":
                await self._send(conn, _dumps({"type": "error", **events[0]}))
                continue
            if conn.malformed:
                conn.malformed -= 1
                conn.seq += 1  # the garbage stands for a lost message
                await self._send(conn, '{"channel":"l2_data","sequence_num":')
            seq = conn.seq
            conn.seq += 1
            if is_update and conn.drop_updates:
                conn.drop_updates -= 1
                continue
            frame = _dumps({"channel": channel, "client_id": "", "timestamp": _now_text(), "sequence_num": seq,
                            "events": events})
            await self._send(conn, frame)
            if is_update and conn.duplicate_updates:
                conn.duplicate_updates -= 1
                await self._send(conn, frame)

    async def _send(self, conn: SimConnection, text: str) -> None:
        await send_frame(conn, text)  # a client gone away: the handler notices and cleans up

    async def _close(self, conn: SimConnection, code: int, reason: str) -> None:
        await close_conn(conn, code, reason)
