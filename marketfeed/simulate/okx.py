"""A loopback OKX v5 public server for tests: the OKX part of ``marketfeed simulate``.

It speaks the protocol as EXCHANGES.md 5.x describes it:

* REST ``/api/v5/public/instruments?instType=SPOT|SWAP`` and ``/api/v5/market/books?instId=&sz=``
  (with ``seqId``; optionally ``rest_lag`` steps old, as OKX's cache nodes can be);
* WebSocket ``/ws/v5/public``: ``subscribe`` / ``unsubscribe`` with one ack per arg (the request ``id``
  echoed), ``error`` 60018 for an unknown or rejected instrument, 60012 for a bad request; text
  ``ping`` -> ``pong``; ``books`` (400), ``books-l2-tbt`` (400), ``books50-l2-tbt`` (50) and
  ``trades``. Book channels send a ``snapshot`` (``prevSeqId`` -1) then ``update``s with
  ``prevSeqId``/``seqId``, the top-25 checksum (or 0 with ``checksum=False``, as OKX since June 2026),
  or no WebSocket snapshot at all (``ws_snapshot=False``, the announced 2026 removal: the client
  stitches a REST snapshot).

Each instrument has a TRUE book (``books[instId]``: price Decimal -> size text, per side) evolving by a
seeded random process on its tick grid, never crossed, at most 400 levels per side; every channel gets
the diff of its own depth window (levels leaving the window are deleted, levels entering it are sent),
as OKX's real ``books`` stream does (the 2022 capture keeps exactly 400 levels per side).

Fault hooks: ``drop_next_update`` (a gap), ``corrupt_next_checksum``, ``kill_connections`` (TCP reset,
no close frame), ``stall`` (the open sockets go silent: nothing sent, pings unanswered), ``reject``
(subscriptions to an instrument fail), ``send_notice`` (64008), ``pause``/``resume`` (freeze the
market to compare with ``true_book``). ``connections`` counts accepted sockets, ``ops`` records every
subscribe/unsubscribe request, ``rest_log`` every REST path.

    server = OkxServer(seed=1); await server.start()   # then ws_url / rest_url as the venue's bases
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aiohttp import WSMsgType, web

from marketfeed.adapters.okx.checksum import okx_checksum
from marketfeed.simulate.faults import kill
from marketfeed.simulate.loopback import LoopbackServer

CHANNEL_DEPTH = {"books": 400, "books-l2-tbt": 400, "books50-l2-tbt": 50}
MAX_LEVELS = 400


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def text(d: Decimal) -> str:
    """OKX's decimal text: no exponent, no trailing zeros (``30000``, ``0.0012``)."""
    s = format(d, "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


@dataclass
class InstrumentSpec:
    inst_id: str
    inst_type: str  # SPOT or SWAP
    base: str
    quote: str
    tick: str = "0.1"
    lot: str = "0.00001"
    mid: str = "30000"
    ct_val: str = ""  # SWAP: base units per contract
    ct_type: str = ""  # SWAP: linear / inverse
    mean_lots: int = 5000

    def metadata(self) -> dict[str, str]:
        if self.inst_type == "SPOT":
            return {
                "instType": "SPOT", "instId": self.inst_id, "baseCcy": self.base, "quoteCcy": self.quote,
                "settleCcy": "", "ctVal": "", "ctMult": "", "ctValCcy": "", "ctType": "", "uly": "",
                "instFamily": "", "tickSz": self.tick, "lotSz": self.lot, "minSz": self.lot, "state": "live",
                "expTime": "", "listTime": "1548133413000",
            }
        linear = self.ct_type == "linear"
        return {
            "instType": "SWAP", "instId": self.inst_id, "baseCcy": "", "quoteCcy": "",
            "settleCcy": self.quote if linear else self.base, "ctVal": self.ct_val, "ctMult": "1",
            "ctValCcy": self.base if linear else self.quote, "ctType": self.ct_type,
            "uly": f"{self.base}-{self.quote}", "instFamily": f"{self.base}-{self.quote}",
            "tickSz": self.tick, "lotSz": self.lot, "minSz": self.lot, "state": "live", "expTime": "",
            "listTime": "1611916828000",
        }


DEFAULT_INSTRUMENTS = [
    InstrumentSpec("BTC-USDT", "SPOT", "BTC", "USDT", "0.1", "0.00000001", "30000", mean_lots=2_000_000),
    InstrumentSpec("ETH-USDT", "SPOT", "ETH", "USDT", "0.01", "0.000001", "2000", mean_lots=500_000),
    InstrumentSpec("BTC-USDT-SWAP", "SWAP", "BTC", "USDT", "0.1", "1", "30010", ct_val="0.01", ct_type="linear", mean_lots=40),
    InstrumentSpec("BTC-USD-SWAP", "SWAP", "BTC", "USD", "0.1", "1", "30005", ct_val="100", ct_type="inverse", mean_lots=40),
]


class TrueBook:
    """One instrument's book as the venue keeps it, evolving by a seeded random walk."""

    def __init__(self, spec: InstrumentSpec, seed: int) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.tick = Decimal(spec.tick)
        self.lot = Decimal(spec.lot)
        self.bids: dict[Decimal, str] = {}
        self.asks: dict[Decimal, str] = {}
        self.seq = self.rng.randint(1_000_000, 9_000_000)
        self.ts_ms = int(time.time() * 1000)
        mid = Decimal(spec.mid)
        for i in range(1, MAX_LEVELS + 1):
            self.bids[mid - i * self.tick] = self._size()
            self.asks[mid + (i - 1) * self.tick + self.tick] = self._size()

    def _size(self) -> str:
        lots = max(1, int(self.rng.expovariate(1.0 / self.spec.mean_lots)))
        return text(lots * self.lot)

    def view(self, depth: int) -> tuple[dict[Decimal, str], dict[Decimal, str]]:
        bids = dict(sorted(self.bids.items(), reverse=True)[:depth])
        asks = dict(sorted(self.asks.items())[:depth])
        return bids, asks

    def levels(self, depth: int) -> tuple[list[list[str]], list[list[str]]]:
        bids, asks = self.view(depth)
        return (
            [[text(p), s, "0", "1"] for p, s in bids.items()],
            [[text(p), s, "0", "1"] for p, s in asks.items()],
        )

    def checksum(self) -> int:
        bids, asks = self.view(25)
        return okx_checksum([(text(p), s) for p, s in bids.items()], [(text(p), s) for p, s in asks.items()])

    def step(self, changes: int = 6) -> int:
        """Change a few levels near the inside; return the new seqId."""
        rng = self.rng
        for _ in range(changes):
            side = self.bids if rng.random() < 0.5 else self.asks
            is_bid = side is self.bids
            best = max(self.bids) if is_bid else min(self.asks)
            r = rng.random()
            offset = int(rng.expovariate(1 / 8.0))
            price = best - offset * self.tick if is_bid else best + offset * self.tick
            if r < 0.25 and price in side and len(side) > 50:
                del side[price]
            elif r < 0.35:
                # improve the inside by a tick, never crossing
                other_best = min(self.asks) if is_bid else max(self.bids)
                price = best + self.tick if is_bid else best - self.tick
                if (is_bid and price < other_best) or (not is_bid and price > other_best):
                    side[price] = self._size()
            else:
                side[price] = self._size()
            # refill the deep end so each side keeps about MAX_LEVELS levels
            while len(side) < MAX_LEVELS:
                worst = min(side) if is_bid else max(side)
                side[worst - self.tick if is_bid else worst + self.tick] = self._size()
            while len(side) > MAX_LEVELS + 20:
                del side[min(side) if is_bid else max(side)]
        self.seq += rng.randint(1, 3)
        self.ts_ms = max(self.ts_ms + 1, int(time.time() * 1000))
        return self.seq


class ReplayedBook(TrueBook):
    """A true book driven by a recording (``marketfeed.simulate.replayed``): each ``step`` is the
    recording's next book message, the seqId the server's own; the recording loops at its end."""

    def __init__(self, spec: InstrumentSpec, seed: int, source: Any) -> None:
        self.spec = spec
        self.rng = random.Random(seed)
        self.tick = Decimal(spec.tick)
        self.lot = Decimal(spec.lot)
        self.bids = {Decimal(repr(p)): text(Decimal(repr(q))) for p, q in source.bids.items()}
        self.asks = {Decimal(repr(p)): text(Decimal(repr(q))) for p, q in source.asks.items()}
        self.steps = [([(Decimal(repr(p)), text(Decimal(repr(q)))) for p, q in b],
                       [(Decimal(repr(p)), text(Decimal(repr(q)))) for p, q in a]) for b, a in source.looped_steps()]
        self.position = 0
        self.seq = self.rng.randint(1_000_000, 9_000_000)
        self.ts_ms = int(time.time() * 1000)

    def step(self, changes: int = 6) -> int:
        if self.steps:
            bids, asks = self.steps[self.position]
            self.position = (self.position + 1) % len(self.steps)
            for levels, step in ((self.bids, bids), (self.asks, asks)):
                for price, size in step:
                    if Decimal(size):
                        levels[price] = size
                    else:
                        levels.pop(price, None)
        self.seq += 1
        self.ts_ms = max(self.ts_ms + 1, int(time.time() * 1000))
        return self.seq


def view_diff(old: dict[Decimal, str], new: dict[Decimal, str], reverse: bool) -> list[list[str]]:
    out = []
    for p in sorted(set(old) | set(new), reverse=reverse):
        a, b = old.get(p), new.get(p)
        if a != b:
            out.append([text(p), b if b is not None else "0", "0", "1" if b is not None else "0"])
    return out


class _Conn:
    def __init__(self, ws: web.WebSocketResponse, request: web.Request, conn_id: str) -> None:
        self.ws = ws
        self.request = request
        self.conn_id = conn_id
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.books: dict[str, str] = {}  # instId -> book channel
        self.trades: set[str] = set()
        self.views: dict[tuple[str, int], tuple[dict, dict]] = {}
        self.stalled = False
        self.closed = False
        self.close_reason: str | None = None


class OkxServer(LoopbackServer):
    def __init__(
        self,
        instruments: list[InstrumentSpec] | None = None,
        *,
        seed: int = 1,
        interval: float = 0.05,
        ws_snapshot: bool = True,
        checksum: bool = True,
        rest_lag: int = 0,
        trade_probability: float = 0.3,
    ) -> None:
        self.specs = {s.inst_id: s for s in (instruments or DEFAULT_INSTRUMENTS)}
        self.books = {inst: TrueBook(spec, seed * 1000 + i) for i, (inst, spec) in enumerate(self.specs.items())}
        self.rng = random.Random(seed)
        self.interval = interval
        self.ws_snapshot = ws_snapshot
        self.checksum = checksum
        self.rest_lag = rest_lag
        self.trade_probability = trade_probability
        self.conns: list[_Conn] = []
        self.connections = 0
        self.ops: list[dict[str, Any]] = []
        self.rest_log: list[str] = []
        self.pings = 0
        self.frames_sent = 0  # every frame sent, on every connection (fault schedules count these)
        self._history: dict[str, list[tuple[int, list, list, str]]] = {inst: [] for inst in self.books}
        self._drop: set[str] = set()
        self._corrupt: set[str] = set()
        self._rejected: set[str] = set()
        self.paused = False
        self._runner: web.AppRunner | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self._trade_id = 1_000_000
        self._task: asyncio.Task[None] | None = None
        self.app = web.Application()
        self.app.router.add_get("/api/v5/public/instruments", self._instruments)
        self.app.router.add_get("/api/v5/market/books", self._rest_books)
        self.app.router.add_get("/ws/v5/public", self._ws)
        self.app.on_startup.append(self._start)
        self.app.on_shutdown.append(self._stop)

    @classmethod
    def from_capture(cls, paths: list[Any], **kwargs: Any) -> "OkxServer":
        """A server whose spot books replay a recording (also one from before OKX added seqId): served
        as today's messages with seqId/prevSeqId and checksums computed from the replayed book.
        Swaps are left out (their sizes are contracts, which a recording in base units cannot give back)."""
        from marketfeed.simulate.replayed import load_capture

        symbols = {n: s for n, s in load_capture(paths).items() if not n.endswith("-PERP") and s.bids and s.asks}
        if not symbols:
            raise ValueError(f"{paths}: no spot book in this recording")
        specs = []
        for name, src in symbols.items():
            base, quote = name.split("-")[:2]
            tick = f"{10 ** -src.price_places:.{src.price_places}f}" if src.price_places else "1"
            lot = f"{10 ** -src.qty_places:.{src.qty_places}f}" if src.qty_places else "1"
            specs.append(InstrumentSpec(name, "SPOT", base, quote, tick, lot, "0"))
        sim = cls(instruments=specs, **kwargs)
        seed = kwargs.get("seed", 1)
        sim.books = {spec.inst_id: ReplayedBook(spec, seed * 1000 + i, src) for i, (spec, src) in enumerate(zip(specs, symbols.values(), strict=True))}
        sim._history = {inst: [] for inst in sim.books}
        return sim

    # -- fault hooks --------------------------------------------------------------------------------

    def drop_next_update(self, inst: str) -> None:
        self._drop.add(inst)

    def corrupt_next_checksum(self, inst: str) -> None:
        self._corrupt.add(inst)

    def reject(self, inst: str) -> None:
        self._rejected.add(inst)

    def stall(self) -> list[_Conn]:
        """The open connections go silent (nothing sent, pings unanswered); new ones are normal."""
        conns = list(self.conns)
        for c in conns:
            c.stalled = True
        return conns

    def kill_connections(self) -> int:
        """Reset every TCP connection without a WebSocket close frame; return how many."""
        n = 0
        for c in list(self.conns):
            n += kill(c)
        return n

    def pause(self) -> None:
        """Freeze the books (no updates, no trades): a still moment to compare a consumer with the truth."""
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def true_book(self, inst: str, depth: int = 400) -> tuple[int, dict[float, float], dict[float, float]]:
        """(seqId, bids, asks) of the book's top ``depth`` now, as floats in base units (contracts
        times ctVal for swaps, rounded to the decimals the two texts carry)."""
        book = self.books[inst]
        spec = self.specs[inst]
        bids, asks = book.view(depth)
        if spec.inst_type == "SWAP":
            ct = Decimal(spec.ct_val)
            conv = lambda s: float(Decimal(s) * ct)
        else:
            conv = float
        return book.seq, {float(p): conv(s) for p, s in bids.items()}, {float(p): conv(s) for p, s in asks.items()}

    def open_connections(self) -> list[_Conn]:
        return list(self.conns)


    def send_notice(self, code: str = "64008") -> None:
        for c in self.conns:
            c.queue.put_nowait(_dumps({
                "event": "notice", "code": code,
                "msg": "The connection will soon be closed for a service upgrade. Please reconnect.",
                "connId": c.conn_id,
            }))

    # -- REST ---------------------------------------------------------------------------------------

    async def _instruments(self, request: web.Request) -> web.Response:
        kind = request.query.get("instType", "")
        self.rest_log.append(str(request.rel_url))
        data = [s.metadata() for s in self.specs.values() if s.inst_type == kind]
        if kind not in ("SPOT", "SWAP", "FUTURES", "OPTION", "MARGIN"):
            return web.json_response({"code": "51000", "msg": "Parameter instType error", "data": []}, status=400)
        return web.json_response({"code": "0", "msg": "", "data": data})

    async def _rest_books(self, request: web.Request) -> web.Response:
        inst = request.query.get("instId", "")
        self.rest_log.append(str(request.rel_url))
        book = self.books.get(inst)
        if book is None:
            return web.json_response({"code": "51001", "msg": "Instrument ID does not exist", "data": []}, status=400)
        sz = min(int(request.query.get("sz", "1") or 1), 400)
        history = self._history[inst]
        if self.rest_lag and len(history) >= self.rest_lag:
            seq, bids, asks, ts = history[-self.rest_lag]
            bids, asks = bids[:sz], asks[:sz]
        else:
            bids, asks = book.levels(sz)
            seq, ts = book.seq, str(book.ts_ms)
        return web.json_response({"code": "0", "msg": "", "data": [{"asks": asks, "bids": bids, "ts": ts, "seqId": seq}]})

    # -- WebSocket ----------------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections += 1
        conn = _Conn(ws, request, f"{self.connections:08x}")
        self.conns.append(conn)
        writer = asyncio.get_running_loop().create_task(self._writer(conn))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                if conn.stalled:
                    continue
                if msg.data == "ping":
                    self.pings += 1
                    conn.queue.put_nowait("pong")
                    continue
                self._on_request(conn, msg.data)
        finally:
            conn.closed = True
            writer.cancel()
            if conn in self.conns:
                self.conns.remove(conn)
        return ws

    async def _writer(self, conn: _Conn) -> None:
        try:
            while True:
                data = await conn.queue.get()
                if conn.stalled:
                    continue  # a silent socket: what it would have sent is lost
                await conn.ws.send_str(data)
                self.frames_sent += 1
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            return

    def _on_request(self, conn: _Conn, data: str) -> None:
        try:
            req = json.loads(data)
            op = req["op"]
            args = req["args"]
            assert isinstance(args, list)
        except (ValueError, KeyError, AssertionError, TypeError):
            conn.queue.put_nowait(_dumps({"event": "error", "code": "60012", "msg": f"Invalid request: {data[:100]}", "connId": conn.conn_id}))
            return
        rid = req.get("id")
        self.ops.append({"conn": conn.conn_id, "op": op, "args": args})
        head = {"id": rid} if rid is not None else {}
        for arg in args:
            channel, inst = arg.get("channel"), arg.get("instId")
            known = channel in CHANNEL_DEPTH or channel == "trades"
            if not known or inst not in self.books or inst in self._rejected:
                conn.queue.put_nowait(_dumps({**head, "event": "error", "code": "60018",
                                              "msg": f"Wrong URL or channel:{channel},instId:{inst} doesn't exist",
                                              "connId": conn.conn_id}))
                continue
            conn.queue.put_nowait(_dumps({**head, "event": op, "arg": {"channel": channel, "instId": inst}, "connId": conn.conn_id}))
            if op == "subscribe":
                if channel == "trades":
                    conn.trades.add(inst)
                else:
                    conn.books[inst] = channel
                    depth = CHANNEL_DEPTH[channel]
                    book = self.books[inst]
                    view = book.view(depth)
                    conn.views[(inst, depth)] = view
                    if self.ws_snapshot:
                        bids, asks = book.levels(depth)
                        conn.queue.put_nowait(_dumps({
                            "arg": {"channel": channel, "instId": inst}, "action": "snapshot",
                            "data": [{"asks": asks, "bids": bids, "ts": str(book.ts_ms),
                                      "checksum": book.checksum() if self.checksum else 0,
                                      "prevSeqId": -1, "seqId": book.seq}],
                        }))
            elif op == "unsubscribe":
                if channel == "trades":
                    conn.trades.discard(inst)
                else:
                    conn.books.pop(inst, None)

    # -- the market ---------------------------------------------------------------------------------

    async def _start(self, app: web.Application) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _stop(self, app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
        for c in list(self.conns):
            c.stalled = True
            await c.ws.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if not self.paused:
                self.tick()

    def tick(self) -> None:
        """One step of every book, pushed to its subscribers; sometimes a trade."""
        for inst, book in self.books.items():
            prev = book.seq
            seq = book.step(self.rng.randint(1, 8))
            bids, asks = book.levels(400)
            history = self._history[inst]
            history.append((seq, bids, asks, str(book.ts_ms)))
            del history[:-20]
            drop = inst in self._drop
            self._drop.discard(inst)
            corrupt = inst in self._corrupt
            self._corrupt.discard(inst)
            checksum = book.checksum() if self.checksum else 0
            if corrupt:
                checksum = (checksum + 12345) if checksum else 12345
            for c in self.conns:
                channel = c.books.get(inst)
                if channel is None:
                    continue
                depth = CHANNEL_DEPTH[channel]
                old_b, old_a = c.views.get((inst, depth), ({}, {}))
                new_b, new_a = book.view(depth)
                c.views[(inst, depth)] = (new_b, new_a)
                if drop:
                    continue
                c.queue.put_nowait(_dumps({
                    "arg": {"channel": channel, "instId": inst}, "action": "update",
                    "data": [{"asks": view_diff(old_a, new_a, False), "bids": view_diff(old_b, new_b, True),
                              "ts": str(book.ts_ms), "checksum": checksum, "prevSeqId": prev, "seqId": seq}],
                }))
            if self.rng.random() < self.trade_probability:
                self._trade_id += 1
                side = "buy" if self.rng.random() < 0.5 else "sell"
                px = min(book.asks) if side == "buy" else max(book.bids)
                spec = self.specs[inst]
                sz = text(Decimal(spec.lot) * self.rng.randint(1, 50))
                msg = _dumps({"arg": {"channel": "trades", "instId": inst}, "data": [{
                    "instId": inst, "tradeId": str(self._trade_id), "px": text(px), "sz": sz, "side": side,
                    "ts": str(book.ts_ms), "count": "1", "source": "0", "seqId": seq,
                }]})
                for c in self.conns:
                    if inst in c.trades:
                        c.queue.put_nowait(msg)
