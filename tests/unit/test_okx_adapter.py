"""The OKX adapter as a pure state machine: frames in, events and commands out (no sockets).

A small test-side venue (``FakeVenue``) keeps each instrument's book as price text -> size text and
computes the checksum with the reference function, so every assertion compares the adapter's output
with an independent truth: the consumer-side book rebuilt from our events must equal the venue's.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from marketfeed.adapters.okx.adapter import (
    OPS_PER_HOUR,
    PING_AFTER,
    PONG_WITHIN,
    SECOND,
    OkxAdapter,
)
from marketfeed.adapters.okx.checksum import okx_checksum
from marketfeed.config import VenueConfig
from marketfeed.events import BOOK_INVALID, Book, Status, Trade
from marketfeed.protocol import Connect, Disconnect, Fetch, Send
from tests.helpers import ConsumerBooks

T0 = 1_700_000_000 * SECOND


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


SPOT = {"code": "0", "msg": "", "data": [
    {"instType": "SPOT", "instId": "BTC-USDT", "baseCcy": "BTC", "quoteCcy": "USDT", "tickSz": "0.1", "lotSz": "0.00000001", "state": "live"},
    {"instType": "SPOT", "instId": "ETH-USDT", "baseCcy": "ETH", "quoteCcy": "USDT", "tickSz": "0.01", "lotSz": "0.000001", "state": "live"},
]}
SWAP = {"code": "0", "msg": "", "data": [
    {"instType": "SWAP", "instId": "BTC-USDT-SWAP", "ctType": "linear", "ctVal": "0.01", "ctMult": "1", "ctValCcy": "BTC",
     "settleCcy": "USDT", "lotSz": "1", "tickSz": "0.1", "uly": "BTC-USDT", "state": "live"},
    {"instType": "SWAP", "instId": "BTC-USD-SWAP", "ctType": "inverse", "ctVal": "100", "ctMult": "1", "ctValCcy": "USD",
     "settleCcy": "BTC", "lotSz": "1", "tickSz": "0.1", "uly": "BTC-USD", "state": "live"},
]}


class FakeVenue:
    """Books as OKX keeps them (exact text), and the frames OKX would send."""

    def __init__(self) -> None:
        self.books: dict[str, tuple[dict[str, str], dict[str, str]]] = {}
        self.seq: dict[str, int] = {}

    def set(self, inst: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> None:
        b, a = self.books.setdefault(inst, ({}, {}))
        for side, levels in ((b, bids), (a, asks)):
            for p, s in levels:
                if s == "0":
                    side.pop(p, None)
                else:
                    side[p] = s

    def checksum(self, inst: str) -> int:
        b, a = self.books[inst]
        bids = sorted(b.items(), key=lambda x: Decimal(x[0]), reverse=True)
        asks = sorted(a.items(), key=lambda x: Decimal(x[0]))
        return okx_checksum(bids, asks)

    def snapshot(self, inst, bids, asks, seq=100, checksum=True, channel="books"):
        self.books[inst] = ({}, {})
        self.set(inst, bids, asks)
        self.seq[inst] = seq
        return dumps({"arg": {"channel": channel, "instId": inst}, "action": "snapshot", "data": [{
            "asks": [[p, s, "0", "1"] for p, s in asks], "bids": [[p, s, "0", "1"] for p, s in bids],
            "ts": "1700000000123", "checksum": self.checksum(inst) if checksum else 0, "prevSeqId": -1, "seqId": seq}]})

    def update(self, inst, bids=(), asks=(), step=2, checksum=True, prev=None, channel="books", corrupt=False):
        self.set(inst, list(bids), list(asks))
        p = self.seq[inst] if prev is None else prev
        self.seq[inst] = p + step
        value = self.checksum(inst) if checksum else 0
        if corrupt:
            value += 1
        return dumps({"arg": {"channel": channel, "instId": inst}, "action": "update", "data": [{
            "asks": [[p_, s, "0", "1"] for p_, s in asks], "bids": [[p_, s, "0", "1"] for p_, s in bids],
            "ts": "1700000000456", "checksum": value, "prevSeqId": p, "seqId": self.seq[inst]}]})

    def rest(self, inst, seq):
        b, a = self.books[inst]
        bids = sorted(b.items(), key=lambda x: Decimal(x[0]), reverse=True)
        asks = sorted(a.items(), key=lambda x: Decimal(x[0]))
        return dumps({"code": "0", "msg": "", "data": [{
            "asks": [[p, s, "0", "1"] for p, s in asks], "bids": [[p, s, "0", "1"] for p, s in bids],
            "ts": "1700000000000", "seqId": seq}]})


def ack(inst, channel="books", op="subscribe", rid=None):
    m = {"event": op, "arg": {"channel": channel, "instId": inst}, "connId": "x"}
    if rid is not None:
        m["id"] = rid
    return dumps(m)


def okx_text(x: float) -> str:
    """A float from our events back in OKX's text form (shortest repr, no exponent, no trailing zeros)."""
    s = format(Decimal(repr(x)), "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


fmt = okx_text


class Harness:
    def __init__(self, symbols=("BTC-USDT", "ETH-USDT"), **cfg) -> None:
        self.adapter = OkxAdapter("okx", VenueConfig(symbols=list(symbols), **cfg))
        self.venue = FakeVenue()
        self.consumer = ConsumerBooks()
        self.events: list = []
        self.commands: list = []
        self.ts = T0
        a = self.adapter
        a.start(self.ts)
        fetches = self.take_commands()
        assert [type(c) for c in fetches] == [Fetch, Fetch]
        a.on_rest(self.tick(), fetches[0].url, 200, dumps(SPOT))
        a.on_rest(self.tick(), fetches[1].url, 200, dumps(SWAP))
        self.connects = [c for c in self.take_commands() if isinstance(c, Connect)]

    def tick(self, ns: int = 1_000_000) -> int:
        self.ts += ns
        return self.ts

    def take_commands(self):
        cmds = self.adapter.take_commands()
        self.commands.extend(cmds)
        return cmds

    def drain(self):
        evs = self.adapter.take_events()
        for e in evs:
            self.consumer.apply(e)
        self.events.extend(evs)
        return evs

    def open(self, conn="c1", plan=None):
        self.adapter.on_open(conn, self.tick(), "wss://ws.okx.com:8443/ws/v5/public", plan or self.connects[0].plan)
        self.drain()
        return self.take_commands()

    def frame(self, data, conn="c1"):
        self.adapter.on_frame(conn, self.tick(), data)
        return self.drain()

    def consumer_checksum(self, symbol):
        """The checksum of the book a consumer built from our events, in OKX's text form."""
        book = self.consumer.books[("okx", symbol)]
        bids = [(fmt(p), fmt(s)) for p, s in book.bids.top(25)]
        asks = [(fmt(p), fmt(s)) for p, s in book.asks.top(25)]
        return okx_checksum(bids, asks)


BIDS = [("100.5", "1.5"), ("100.4", "2"), ("100", "3")]
ASKS = [("100.6", "0.7"), ("100.8", "4"), ("101", "5")]


def subscribed(h: Harness, inst="BTC-USDT", conn="c1"):
    h.frame(ack(inst), conn)
    h.frame(ack(inst, "trades"), conn)


def test_plan_subscribes_in_one_batch_with_ids():
    h = Harness()
    assert len(h.connects) == 1
    sends = h.open()
    assert len(sends) == 1 and isinstance(sends[0], Send)
    body = json.loads(sends[0].data)
    assert body["op"] == "subscribe" and body["id"]
    assert {(a["channel"], a["instId"]) for a in body["args"]} == {
        ("books", "BTC-USDT"), ("trades", "BTC-USDT"), ("books", "ETH-USDT"), ("trades", "ETH-USDT")}
    assert len(sends[0].data) <= 4096


def test_many_symbols_spread_over_connections_and_batches_stay_small():
    # 40 symbols: 80 channels -> 3 connections of < 30 channels
    spot = {"code": "0", "data": [{"instType": "SPOT", "instId": f"C{i}-USDT", "baseCcy": f"C{i}", "quoteCcy": "USDT"} for i in range(40)]}
    b = OkxAdapter("okx", VenueConfig(symbols=[f"C{i}-USDT" for i in range(40)]))
    b.on_rest(T0, "https://www.okx.com/api/v5/public/instruments?instType=SPOT", 200, dumps(spot))
    b.on_rest(T0, "https://www.okx.com/api/v5/public/instruments?instType=SWAP", 200, dumps({"code": "0", "data": []}))
    connects = [c for c in b.take_commands() if isinstance(c, Connect)]
    assert len(connects) == 3 and all(len(c.plan["args"]) < 30 for c in connects)
    assert sum(len(c.plan["args"]) for c in connects) == 80
    for i, c in enumerate(connects):
        sends = []
        b.on_open(f"c{i}", T0, c.url, c.plan)
        sends = [json.loads(x.data) for x in b.take_commands() if isinstance(x, Send)]
        assert all(len(json.dumps(m, separators=(",", ":"))) <= 4096 for m in sends)
        assert sum(len(m["args"]) for m in sends) == len(c.plan["args"])


def test_unknown_and_inverse_symbols_are_not_subscribed():
    h = Harness(symbols=("BTC-USDT", "NOPE-USDT", "BTC-USD-PERP"))
    body = json.loads(h.open()[0].data)
    assert [a["instId"] for a in body["args"]] == ["BTC-USDT", "BTC-USDT"]
    assert h.adapter.counters["unknown_symbol"] == 1 and h.adapter.counters["refused_symbol"] == 1


def test_refusals_are_status_events():
    a = OkxAdapter("okx", VenueConfig(symbols=["NOPE-USDT", "BTC-USD-PERP"]))
    a.on_rest(T0, "https://www.okx.com/api/v5/public/instruments?instType=SPOT", 200, dumps(SPOT))
    a.on_rest(T0, "https://www.okx.com/api/v5/public/instruments?instType=SWAP", 200, dumps(SWAP))
    st = {e.symbol: e for e in a.events if isinstance(e, Status)}
    assert st["NOPE-USDT"].state == "error" and "unknown symbol" in st["NOPE-USDT"].reason
    assert st["BTC-USD-PERP"].state == "error" and "inverse" in st["BTC-USD-PERP"].reason
    assert not [c for c in a.commands if isinstance(c, Connect)]


def test_ws_snapshot_then_updates_verified_and_consumer_matches():
    h = Harness()
    h.open()
    subscribed(h)
    v = h.venue
    evs = h.frame(v.snapshot("BTC-USDT", BIDS, ASKS, seq=100))
    snap = [e for e in evs if isinstance(e, Book)]
    assert len(snap) == 1 and snap[0].snapshot and snap[0].seq == 100 and snap[0].checksum == v.checksum("BTC-USDT")
    assert snap[0].bids[0] == (100.5, 1.5) and snap[0].asks[0] == (100.6, 0.7)
    for make in (
        lambda: v.update("BTC-USDT", bids=[("100.5", "0"), ("100.55", "0.25")]),
        lambda: v.update("BTC-USDT", asks=[("100.6", "3366")], bids=[("99", "1")]),
        lambda: v.update("BTC-USDT", step=0),  # keep-alive: prevSeqId == seqId == last
    ):
        evs = h.frame(make())
        books = [e for e in evs if isinstance(e, Book)]
        assert len(books) == 1 and not books[0].snapshot
        assert h.consumer_checksum("BTC-USDT") == v.checksum("BTC-USDT") == books[0].checksum
    assert h.adapter.counters["checksums_verified"] == 4
    assert not h.consumer.violations


def test_seq_reset_after_maintenance_is_accepted():
    h = Harness()
    h.open()
    subscribed(h)
    v = h.venue
    h.frame(v.snapshot("BTC-USDT", BIDS, ASKS, seq=15))
    evs = h.frame(v.update("BTC-USDT", bids=[("100.1", "1")], step=-12))  # 15 -> 3
    assert [e.seq for e in evs if isinstance(e, Book)] == [3]
    evs = h.frame(v.update("BTC-USDT", bids=[("100.2", "1")], step=2))  # 3 -> 5
    assert [e.seq for e in evs if isinstance(e, Book)] == [5]
    assert h.adapter.counters["gaps"] == 0


def test_zero_checksum_is_ignored_and_seq_still_checked():
    h = Harness()
    h.open()
    subscribed(h)
    v = h.venue
    evs = h.frame(v.snapshot("BTC-USDT", BIDS, ASKS, seq=100, checksum=False))
    assert [e.checksum for e in evs if isinstance(e, Book)] == [None]
    evs = h.frame(v.update("BTC-USDT", bids=[("100.5", "9")], checksum=False))
    assert [e.checksum for e in evs if isinstance(e, Book)] == [None]
    assert h.adapter.counters["checksums_verified"] == 0 and h.adapter.counters["checksum_failures"] == 0
    evs = h.frame(v.update("BTC-USDT", bids=[("100.5", "8")], checksum=False, prev=999))
    assert [(e.state, e.symbol) for e in evs if isinstance(e, Status)] == [(BOOK_INVALID, "BTC-USDT")]


def _two_books(h: Harness):
    h.open()
    subscribed(h, "BTC-USDT")
    subscribed(h, "ETH-USDT")
    v = h.venue
    h.frame(v.snapshot("BTC-USDT", BIDS, ASKS, seq=100))
    h.frame(v.snapshot("ETH-USDT", [("2000.01", "1")], [("2000.02", "2")], seq=500))
    h.take_commands()


@pytest.mark.parametrize("fault", ["gap", "checksum"])
def test_fault_invalidates_and_resubscribes_that_symbol_only(fault):
    h = Harness()
    _two_books(h)
    v = h.venue
    if fault == "gap":
        v.update("BTC-USDT", bids=[("100.5", "7")])  # sent by the venue, lost on the way
        bad = v.update("BTC-USDT", bids=[("100.4", "6")])
    else:
        bad = v.update("BTC-USDT", bids=[("100.4", "6")], corrupt=True)
    evs = h.frame(bad)
    assert [(e.state, e.symbol) for e in evs if isinstance(e, Status)] == [(BOOK_INVALID, "BTC-USDT")]
    assert not [e for e in evs if isinstance(e, Book)]
    assert h.adapter.counters["gaps" if fault == "gap" else "checksum_failures"] == 1
    cmds = h.take_commands()
    ops = [json.loads(c.data) for c in cmds if isinstance(c, Send)]
    assert [(o["op"], o["args"]) for o in ops] == [
        ("unsubscribe", [{"channel": "books", "instId": "BTC-USDT"}]),
        ("subscribe", [{"channel": "books", "instId": "BTC-USDT"}]),
    ]
    assert not [c for c in cmds if isinstance(c, Disconnect)]
    # the other book keeps flowing
    evs = h.frame(v.update("ETH-USDT", asks=[("2000.03", "1")]))
    assert [e.symbol for e in evs if isinstance(e, Book)] == ["ETH-USDT"]
    # the old subscription's tail is dropped until the new one is acknowledged
    assert h.frame(v.update("BTC-USDT", bids=[("100.3", "1")])) == []
    h.frame(ack("BTC-USDT", op="unsubscribe"))
    h.frame(ack("BTC-USDT"))
    evs = h.frame(v.snapshot("BTC-USDT", [("100.5", "1")], [("100.7", "1")], seq=900))
    books = [e for e in evs if isinstance(e, Book)]
    assert len(books) == 1 and books[0].snapshot
    assert h.consumer_checksum("BTC-USDT") == v.checksum("BTC-USDT")
    assert not h.consumer.violations


def test_rest_snapshot_mode_buffers_refetches_old_snapshot_and_stitches():
    h = Harness()
    h.open()
    subscribed(h)
    v = h.venue
    v.books["BTC-USDT"] = ({}, {})
    v.seq["BTC-USDT"] = 1000
    v.set("BTC-USDT", BIDS, ASKS)
    old_rest = v.rest("BTC-USDT", 990)  # too old: older than the first update's prevSeqId
    evs = h.frame(v.update("BTC-USDT", bids=[("100.5", "2")], checksum=False))  # 1000 -> 1002
    assert not [e for e in evs if isinstance(e, Book)]
    fetches = [c for c in h.take_commands() if isinstance(c, Fetch)]
    assert len(fetches) == 1 and "/api/v5/market/books?instId=BTC-USDT&sz=400" in fetches[0].url
    rest_at_1003 = None
    h.frame(v.update("BTC-USDT", asks=[("100.6", "1")], step=1, checksum=False))  # 1002 -> 1003
    rest_at_1003 = v.rest("BTC-USDT", 1003)
    h.frame(v.update("BTC-USDT", asks=[("100.8", "0")], step=3, checksum=False))  # 1003 -> 1006
    h.adapter.on_rest(h.tick(), fetches[0].url, 200, old_rest)
    assert not [e for e in h.drain() if isinstance(e, Book)]
    again = [c for c in h.take_commands() if isinstance(c, Fetch)]
    assert len(again) == 1 and h.adapter.counters["snapshot_too_old"] == 1
    h.adapter.on_rest(h.tick(), again[0].url, 200, rest_at_1003)
    books = [e for e in h.drain() if isinstance(e, Book)]
    # snapshot at 1003, then only the buffered update after it (1003 -> 1006)
    assert [(e.snapshot, e.seq) for e in books] == [(True, 1003), (False, 1006)]
    assert h.consumer_checksum("BTC-USDT") == v.checksum("BTC-USDT")
    evs = h.frame(v.update("BTC-USDT", bids=[("100.45", "1")], checksum=True))
    assert [e.seq for e in evs if isinstance(e, Book)] == [1008]
    # a gap in REST mode: a new REST snapshot, no resubscription
    v.update("BTC-USDT", bids=[("100.45", "2")])
    evs = h.frame(v.update("BTC-USDT", bids=[("100.45", "3")]))
    assert [e.state for e in evs if isinstance(e, Status)] == [BOOK_INVALID]
    h.frame(v.update("BTC-USDT", bids=[("100.45", "4")]))
    cmds = h.take_commands()
    assert [type(c) for c in cmds] == [Fetch]


def test_rest_snapshot_straddling_an_aggregated_update():
    """A REST snapshot whose seqId falls inside an update's (prevSeqId, seqId] range."""
    h = Harness()
    h.open()
    subscribed(h)
    v = h.venue
    v.books["BTC-USDT"] = ({}, {})
    v.seq["BTC-USDT"] = 50
    v.set("BTC-USDT", BIDS, ASKS)
    v.set("BTC-USDT", [("100.5", "9")], [])
    snap = v.rest("BTC-USDT", 53)  # the venue's state part-way through the next aggregated update
    h.frame(v.update("BTC-USDT", bids=[("100.5", "9"), ("100.4", "1")], step=5, checksum=False))  # 50 -> 55
    fetch = [c for c in h.take_commands() if isinstance(c, Fetch)][0]
    h.adapter.on_rest(h.tick(), fetch.url, 200, snap)
    books = [e for e in h.drain() if isinstance(e, Book)]
    assert [(e.snapshot, e.seq) for e in books] == [(True, 53), (False, 55)]
    assert h.consumer_checksum("BTC-USDT") == v.checksum("BTC-USDT")


def test_ping_when_idle_and_stale_without_pong():
    h = Harness()
    h.open()
    a = h.adapter
    h.take_commands()
    a.on_tick(h.ts + PING_AFTER - SECOND)
    assert a.take_commands() == []
    a.on_tick(h.ts + PING_AFTER)
    assert a.take_commands() == [Send("c1", "ping")]
    a.on_frame("c1", h.ts + PING_AFTER + SECOND, "pong")
    a.on_tick(h.ts + PING_AFTER + PONG_WITHIN + SECOND)
    assert a.take_commands() == []
    # idle again; this time no pong
    t = h.ts + PING_AFTER + SECOND + PING_AFTER
    a.on_tick(t)
    assert a.take_commands() == [Send("c1", "ping")]
    a.on_tick(t + PONG_WITHIN)
    cmds = a.take_commands()
    assert len(cmds) == 1 and isinstance(cmds[0], Disconnect) and cmds[0].reason.startswith("stale")
    a.on_close("c1", t + PONG_WITHIN + 1, None, cmds[0].reason)
    states = [e.state for e in a.take_events()]
    assert states[:2] == ["stale", "disconnected"]


def test_disconnect_invalidates_books_of_that_connection():
    h = Harness()
    _two_books(h)
    h.adapter.on_close("c1", h.tick(), 1006, "connection reset")
    evs = h.drain()
    assert [(e.state, e.symbol) for e in evs] == [
        ("disconnected", None), (BOOK_INVALID, "BTC-USDT"), (BOOK_INVALID, "ETH-USDT")]


def test_notice_64008_replaces_make_before_break_with_silent_handover():
    h = Harness()
    _two_books(h)
    v = h.venue
    evs = h.frame(dumps({"event": "notice", "code": "64008", "msg": "The connection will soon be closed", "connId": "x"}))
    assert evs == []
    cmds = h.take_commands()
    assert len(cmds) == 1 and isinstance(cmds[0], Connect) and cmds[0].replaces == "c1"
    sends = h.open("c2", cmds[0].plan)
    body = json.loads(sends[0].data)
    for arg in body["args"]:
        h.frame(ack(arg["instId"], arg["channel"], rid=body["id"]), "c2")
    # c2's snapshots arrive while c1 keeps streaming; the same venue messages reach both
    h.frame(v.snapshot("BTC-USDT", list(_sorted(v, "BTC-USDT")[0]), list(_sorted(v, "BTC-USDT")[1]), seq=v.seq["BTC-USDT"]), "c2")
    u = v.update("BTC-USDT", bids=[("100.5", "3")])
    evs = h.frame(u, "c1") + h.frame(u, "c2")
    assert len([e for e in evs if isinstance(e, Book)]) == 1
    eth = v.snapshot("ETH-USDT", [("2000.01", "1")], [("2000.02", "2")], seq=v.seq["ETH-USDT"])
    h.frame(eth, "c2")
    cmds = h.take_commands()
    assert [c for c in cmds if isinstance(c, Disconnect)] == [Disconnect("c1", "replaced by c2", True)]
    h.adapter.on_close("c1", h.tick(), 1000, "replaced by c2")
    evs = h.drain()
    assert [e.state for e in evs if isinstance(e, Status)] == ["disconnected"]
    # the books go on from c2 without a break
    evs = h.frame(v.update("BTC-USDT", asks=[("100.6", "2")]), "c2")
    assert [(e.symbol, e.snapshot) for e in evs if isinstance(e, Book)] == [("BTC-USDT", False)]
    assert h.consumer_checksum("BTC-USDT") == v.checksum("BTC-USDT")
    assert not h.consumer.violations


def _sorted(v: FakeVenue, inst):
    b, a = v.books[inst]
    return (sorted(b.items(), key=lambda x: Decimal(x[0]), reverse=True), sorted(a.items(), key=lambda x: Decimal(x[0])))


def test_trades_once_with_side_and_swap_sizes_in_base_units():
    h = Harness(symbols=("BTC-USDT", "BTC-USDT-PERP"))
    h.open()
    t1 = dumps({"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [
        {"instId": "BTC-USDT", "tradeId": "11", "px": "30000.1", "sz": "0.00000015", "side": "sell", "ts": "1700000000001", "count": "1"}]})
    t2 = dumps({"arg": {"channel": "trades", "instId": "BTC-USDT-SWAP"}, "data": [
        {"instId": "BTC-USDT-SWAP", "tradeId": "7", "px": "30010", "sz": "7", "side": "buy", "ts": "1700000000002"}]})
    evs = h.frame(t1) + h.frame(t1) + h.frame(t2)
    trades = [e for e in evs if isinstance(e, Trade)]
    assert [(t.symbol, t.trade_id, t.price, t.size, t.side, t.ts_exchange) for t in trades] == [
        ("BTC-USDT", "11", 30000.1, 1.5e-07, "sell", 1700000000001000000),
        ("BTC-USDT-PERP", "7", 30010.0, 0.07, "buy", 1700000000002000000),
    ]
    assert h.adapter.counters["duplicate_trades"] == 1


def test_swap_book_sizes_converted_checksum_on_contract_text():
    h = Harness(symbols=("BTC-USDT-PERP",))
    h.open()
    h.frame(ack("BTC-USDT-SWAP"))
    v = h.venue
    evs = h.frame(v.snapshot("BTC-USDT-SWAP", [("30000.1", "7"), ("30000", "30")], [("30000.2", "3")]))
    book = [e for e in evs if isinstance(e, Book)][0]
    assert book.symbol == "BTC-USDT-PERP" and book.bids == [(30000.1, 0.07), (30000.0, 0.3)] and book.asks == [(30000.2, 0.03)]
    assert book.checksum == v.checksum("BTC-USDT-SWAP")


def test_subscription_rejected_is_an_error_for_that_symbol():
    h = Harness()
    body = json.loads(h.open()[0].data)
    h.frame(ack("BTC-USDT", rid=body["id"]))
    evs = h.frame(dumps({"id": body["id"], "event": "error", "code": "60018", "msg": "ETH-USDT doesn't exist", "connId": "x"}))
    errs = [e for e in evs if isinstance(e, Status)]
    assert [(e.state, e.symbol) for e in errs] == [("error", "ETH-USDT")] and "60018" in errs[0].reason


def test_resubscriptions_held_by_circuit_breaker_then_sent_on_tick():
    h = Harness()
    _two_books(h)
    v = h.venue
    a = h.adapter
    sent = 0
    for i in range(10):
        h.frame(v.update("BTC-USDT", bids=[("100.4", str(i + 1))], corrupt=True))
        sent += len([c for c in h.take_commands() if isinstance(c, Send)])
        h.frame(ack("BTC-USDT"))
        h.frame(v.snapshot("BTC-USDT", BIDS, ASKS, seq=100 + i))
    assert sent == 2 * 10
    h.frame(v.update("BTC-USDT", bids=[("100.4", "77")], corrupt=True))
    assert [c for c in h.take_commands() if isinstance(c, Send)] == []  # the 11th within 10 min waits
    assert a.counters["resyncs_held"] == 1
    a.on_tick(h.ts + 60 * SECOND)
    assert [c for c in a.take_commands() if c.data != "ping"] == []
    a.on_tick(h.ts + 601 * SECOND)
    assert len([c for c in a.take_commands() if isinstance(c, Send)]) == 2


def test_op_budget_per_connection():
    h = Harness()
    _two_books(h)
    a = h.adapter
    cs = a.conns["c1"]
    cs.ops.extend([h.ts] * (OPS_PER_HOUR - len(cs.ops) - 1))  # one op left: a resync needs two
    h.frame(h.venue.update("ETH-USDT", asks=[("2000.02", "3")], corrupt=True))
    assert [c for c in h.take_commands() if isinstance(c, Send)] == []
    assert a.counters["resyncs_held"] == 1


def test_malformed_and_unknown_input_never_raise():
    h = Harness()
    _two_books(h)
    for junk in ("{not json", "[]", '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"bids":[["x","1"]],"seqId":102,"prevSeqId":100}]}',
                 '{"event":"whatever"}', '{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{}]}', b"\x00\x01"):
        h.frame(junk)
    c = h.adapter.counters
    assert c["malformed"] >= 2 and c["unknown_message"] >= 1 and c["malformed_books"] == 1
    assert [e.state for e in h.events if isinstance(e, Status) and e.symbol == "BTC-USDT"][-1] == BOOK_INVALID


def test_book_channel_and_depth_validated():
    with pytest.raises(ValueError):
        OkxAdapter("okx", VenueConfig(symbols=["BTC-USDT"], book_channel="books5"))
    with pytest.raises(ValueError):
        OkxAdapter("okx", VenueConfig(symbols=["BTC-USDT"], depth=50))
    a = OkxAdapter("okx", VenueConfig(symbols=["BTC-USDT"], book_channel="books50-l2-tbt"))
    assert a.depth == 50


def test_books50_window_truncation_becomes_explicit_deletes():
    h = Harness(book_channel="books50-l2-tbt")
    h.open()
    h.frame(ack("BTC-USDT", "books50-l2-tbt"))
    v = h.venue
    bids = [(str(100 - i), "1") for i in range(50)]
    asks = [(str(200 + i), "1") for i in range(50)]
    h.frame(v.snapshot("BTC-USDT", bids, asks, channel="books50-l2-tbt"))
    # the venue adds a better bid without deleting the 51st (undocumented either way): we cut it
    evs = h.frame(v.update("BTC-USDT", bids=[("100.5", "1")], channel="books50-l2-tbt"))
    book = [e for e in evs if isinstance(e, Book)][0]
    assert book.bids == [(100.5, 1.0), (51.0, 0.0)]
    assert len(h.consumer.books[("okx", "BTC-USDT")].bids) == 50


def test_venue_closes_before_the_hand_over_finishes():
    h = Harness()
    _two_books(h)
    v = h.venue
    h.frame(dumps({"event": "notice", "code": "64008", "msg": "soon closed", "connId": "x"}))
    plan = h.take_commands()[0].plan
    h.open("c2", plan)
    h.take_commands()
    # the old connection ends before c2 is ready: its books are invalid, and it must not come back
    h.adapter.on_close("c1", h.tick(), 1006, "connection reset")
    evs = h.drain()
    assert [(e.state, e.symbol) for e in evs] == [
        ("disconnected", None), (BOOK_INVALID, "BTC-USDT"), (BOOK_INVALID, "ETH-USDT")]
    assert h.take_commands() == [Disconnect("c1", "connection reset (being replaced)", True)]
    # c2 syncs and takes over with a snapshot
    h.frame(ack("BTC-USDT"), "c2")
    bids, asks = _sorted(v, "BTC-USDT")
    evs = h.frame(v.snapshot("BTC-USDT", bids, asks, seq=v.seq["BTC-USDT"]), "c2")
    assert [(e.symbol, e.snapshot) for e in evs if isinstance(e, Book)] == [("BTC-USDT", True)]
    assert h.consumer_checksum("BTC-USDT") == v.checksum("BTC-USDT")
    assert not h.consumer.violations


def test_replay_without_metadata_spot_guessed_contracts_refused():
    a = OkxAdapter("okx", None)
    v = FakeVenue()
    a.on_open("c1", T0, "wss://ws.okx.com:8443/ws/v5/public", None)
    a.on_frame("c1", T0, v.snapshot("ETH-USDT", [("2000", "1")], [("2000.5", "2")], channel="books-l2-tbt"))
    a.on_frame("c1", T0, v.snapshot("ETH-USDT-SWAP", [("2000", "1")], [("2000.5", "2")]))
    books = [e for e in a.events if isinstance(e, Book)]
    assert [(b.symbol, b.snapshot) for b in books] == [("ETH-USDT", True)]
    errors = [e for e in a.events if isinstance(e, Status) and e.state == "error"]
    assert len(errors) == 1 and "ctVal" in errors[0].reason
    assert a.counters["checksums_verified"] == 2  # the refused book is still verified


def test_bad_numbers_invalidate_instead_of_corrupting_the_book():
    h = Harness()
    _two_books(h)
    v = h.venue
    for level in (["nan", "1"], ["100.1", "-1"], ["-5", "1"]):
        h.adapter.events.clear()
        frame = json.loads(v.update("BTC-USDT", checksum=False))
        frame["data"][0]["bids"] = [level + ["0", "1"]]
        h.frame(dumps(frame))
        assert [(e.state, e.symbol) for e in h.events[-1:]] == [(BOOK_INVALID, "BTC-USDT")]
        h.frame(ack("BTC-USDT"))
        h.frame(v.snapshot("BTC-USDT", BIDS, ASKS, seq=v.seq["BTC-USDT"] + 10))
    assert h.adapter.counters["malformed_books"] == 3
    assert not h.consumer.violations
