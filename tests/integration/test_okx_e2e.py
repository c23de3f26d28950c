"""End to end over real sockets: the live runtime (VenueRunner) and the OKX adapter against the loopback
OKX server (marketfeed.simulate.okx), whose true book is the oracle.

Every wait is a poll with a deadline; nothing sleeps and then asserts, nothing asserts on timing. The
server pushes every 20 ms; stale after 1 s (0.5 s in the silent-socket test); backoff 50-200 ms.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from marketfeed.adapters.okx.checksum import okx_checksum
from marketfeed.events import BOOK_INVALID, CONNECTED, DISCONNECTED, ERROR, STALE, Book, Trade
from marketfeed.recorder import Recorder
from marketfeed.replay import replay_events
from marketfeed.simulate.okx import OkxServer
from tests.integration.live import LiveVenue, wait_until

pytestmark = pytest.mark.timeout(60)

SYMBOLS = {"BTC-USDT": "BTC-USDT", "ETH-USDT": "ETH-USDT", "BTC-USDT-PERP": "BTC-USDT-SWAP"}
CT_VAL = {"BTC-USDT-PERP": Decimal("0.01")}


def okx_text(x: float, ct: Decimal | None = None) -> str:
    d = Decimal(repr(x))
    if ct is not None:
        d = d / ct  # back to contracts, the text OKX hashes
    s = format(d, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


class Live(LiveVenue):
    """The OKX venue live against the loopback server; every checksummed book event is checked again
    on the consumer's book, in OKX's text form."""

    def __init__(
        self, server: OkxServer, symbols: tuple[str, ...] = tuple(SYMBOLS), recorder: Recorder | None = None, **config: object
    ) -> None:
        super().__init__("okx", symbols, server.ws_url, server.rest_url, recorder, **config)
        self.server = server
        self.checked = 0
        self.mismatches: list[str] = []

    def on_book(self, event: Book, book: object) -> None:
        if event.checksum is not None and book is not None:
            ct = CT_VAL.get(event.symbol)
            bids = [(okx_text(p), okx_text(s, ct)) for p, s in book.bids.top(25)]
            asks = [(okx_text(p), okx_text(s, ct)) for p, s in book.asks.top(25)]
            self.checked += 1
            if okx_checksum(bids, asks) != event.checksum:
                self.mismatches.append(f"{event.symbol} seq={event.seq}")

    async def synced_to_truth(self, symbol: str) -> None:
        """Freeze the market, wait until the consumer's book reaches the true seqId, compare every level."""
        await wait_until(lambda: self.valid(symbol), f"{symbol} has a valid book")
        self.server.pause()
        try:
            seq, bids, asks = self.server.true_book(SYMBOLS[symbol])
            await wait_until(lambda: self.valid(symbol) and self.seq.get(symbol) == seq, f"{symbol} at seqId {seq}")
            book = self.books.books[("okx", symbol)]
            assert book.bids.levels == bids
            assert book.asks.levels == asks
        finally:
            self.server.resume()

    async def all_synced(self) -> None:
        for symbol in SYMBOLS:
            await self.synced_to_truth(symbol)


@pytest.fixture
async def server():
    s = OkxServer(seed=3, interval=0.02, trade_probability=0.5)
    await s.start()
    yield s
    await s.stop()


def book_ops(server: OkxServer, inst: str) -> list[str]:
    return [o["op"] for o in server.ops if any(a.get("instId") == inst and a["channel"] != "trades" for a in o["args"])]


async def test_subscribe_sync_equals_true_book_and_checksums_hold(server: OkxServer) -> None:
    async with Live(server) as live:
        await live.all_synced()
        await wait_until(lambda: {e.symbol for e in live.events if isinstance(e, Trade)} >= set(SYMBOLS), "trades for every symbol")
        await wait_until(lambda: live.checked >= 50, "50 checksummed book events")
    assert live.mismatches == []
    assert live.books.violations == []
    assert server.connections == 1
    assert len(server.ops) == 1 and server.ops[0]["op"] == "subscribe" and len(server.ops[0]["args"]) == 6
    trades = [e for e in live.events if isinstance(e, Trade)]
    assert len({(t.symbol, t.trade_id) for t in trades}) == len(trades)
    assert all(t.side in ("buy", "sell") for t in trades)
    # swap sizes are base units: whole contracts times ctVal 0.01
    perp = [t.size for t in trades if t.symbol == "BTC-USDT-PERP"]
    assert perp and all(abs(round(s / 0.01) * 0.01 - s) < 1e-12 for s in perp)
    assert live.adapter.counters["gaps"] == 0 and live.adapter.counters["checksum_failures"] == 0
    assert [e.reason for e in live.statuses(DISCONNECTED)] == ["shutdown"]


async def test_gap_resubscribes_that_symbol_only(server: OkxServer) -> None:
    async with Live(server) as live:
        await live.all_synced()
        mark = len(live.events)
        server.drop_next_update("BTC-USDT")
        await wait_until(lambda: live.statuses(BOOK_INVALID, "BTC-USDT", mark), "book_invalid for BTC-USDT")
        assert live.statuses(BOOK_INVALID, "BTC-USDT", mark)[0].reason.startswith("gap")
        await live.synced_to_truth("BTC-USDT")
        assert live.statuses(BOOK_INVALID, "ETH-USDT", mark) == []
        assert live.statuses(BOOK_INVALID, "BTC-USDT-PERP", mark) == []
        eth_after = [e for e in live.events[mark:] if isinstance(e, Book) and e.symbol == "ETH-USDT"]
        assert eth_after and not any(e.snapshot for e in eth_after)
        await live.synced_to_truth("ETH-USDT")
    assert book_ops(server, "BTC-USDT") == ["subscribe", "unsubscribe", "subscribe"]
    assert book_ops(server, "ETH-USDT") == ["subscribe"]
    assert server.connections == 1
    assert live.mismatches == [] and live.books.violations == []


async def test_checksum_corruption_resubscribes_that_symbol_only(server: OkxServer) -> None:
    async with Live(server) as live:
        await live.all_synced()
        mark = len(live.events)
        server.corrupt_next_checksum("BTC-USDT-SWAP")
        await wait_until(lambda: live.statuses(BOOK_INVALID, "BTC-USDT-PERP", mark), "book_invalid for the swap")
        assert "checksum mismatch" in live.statuses(BOOK_INVALID, "BTC-USDT-PERP", mark)[0].reason
        await live.synced_to_truth("BTC-USDT-PERP")
        assert live.statuses(BOOK_INVALID, "BTC-USDT", mark) == [] == live.statuses(BOOK_INVALID, "ETH-USDT", mark)
    assert book_ops(server, "BTC-USDT-SWAP") == ["subscribe", "unsubscribe", "subscribe"]
    assert live.adapter.counters["checksum_failures"] == 1
    assert server.connections == 1
    assert live.mismatches == [] and live.books.violations == []


async def test_killed_socket_reconnects_and_resyncs(server: OkxServer) -> None:
    async with Live(server) as live:
        await live.all_synced()
        mark = len(live.events)
        assert server.kill_connections() == 1
        await wait_until(lambda: live.statuses(DISCONNECTED, since=mark), "disconnected")
        await wait_until(lambda: all(live.statuses(BOOK_INVALID, s, mark) for s in SYMBOLS), "book_invalid for every symbol")
        await wait_until(lambda: server.connections == 2, "a new connection")
        await live.all_synced()
        assert len(live.statuses(CONNECTED)) == 2
    assert live.mismatches == [] and live.books.violations == []


async def test_silent_socket_goes_stale_and_reconnects(server: OkxServer) -> None:
    async with Live(server, stale_after=0.5) as live:
        await live.all_synced()
        mark = len(live.events)
        assert len(server.stall()) == 1
        await wait_until(lambda: live.statuses(STALE, since=mark), "stale")
        assert live.statuses(STALE, since=mark)[0].reason.startswith("stale")
        await wait_until(lambda: all(live.statuses(BOOK_INVALID, s, mark) for s in SYMBOLS), "book_invalid for every symbol")
        await wait_until(lambda: server.connections == 2, "a new connection")
        await live.all_synced()
    assert live.mismatches == [] and live.books.violations == []


async def test_notice_64008_make_before_break_without_invalidating(server: OkxServer) -> None:
    async with Live(server) as live:
        await live.all_synced()
        mark = len(live.events)
        server.send_notice("64008")
        await wait_until(lambda: server.connections == 2, "a replacement connection")
        await wait_until(lambda: len(server.open_connections()) == 1 and live.statuses(DISCONNECTED, since=mark), "the old connection closed")
        assert live.statuses(DISCONNECTED, since=mark)[0].reason.startswith("replaced by")
        await live.all_synced()
        # the consumers never lost their books
        assert live.statuses(BOOK_INVALID, since=mark) == []
        assert len([o for o in server.ops if o["op"] == "subscribe"]) == 2
    assert live.mismatches == [] and live.books.violations == []
    trades = [e for e in live.events if isinstance(e, Trade)]
    assert len({(t.symbol, t.trade_id) for t in trades}) == len(trades)


async def test_rejected_subscription_is_an_error_for_that_symbol(server: OkxServer) -> None:
    server.reject("ETH-USDT")
    async with Live(server) as live:
        await live.synced_to_truth("BTC-USDT")
        await wait_until(lambda: live.statuses(ERROR, "ETH-USDT"), "an error for ETH-USDT")
        assert "60018" in live.statuses(ERROR, "ETH-USDT")[0].reason
        assert not [e for e in live.events if isinstance(e, Book) and e.symbol == "ETH-USDT"]


async def test_rest_snapshot_mode_when_no_ws_snapshot(server: OkxServer) -> None:
    server.ws_snapshot = False
    server.checksum = False  # OKX since June 2026: checksum 0, seqId only
    server.rest_lag = 3  # the REST cache can lag: the first snapshot may be too old
    async with Live(server) as live:
        await live.all_synced()
        assert live.adapter.counters["rest_snapshots"] >= 3
        mark = len(live.events)
        requests = len([p for p in server.rest_log if "/market/books" in p])
        server.drop_next_update("ETH-USDT")
        await wait_until(lambda: live.statuses(BOOK_INVALID, "ETH-USDT", mark), "book_invalid for ETH-USDT")
        await live.synced_to_truth("ETH-USDT")
        # recovered by a new REST snapshot, not by resubscribing
        assert len([p for p in server.rest_log if "/market/books" in p and "ETH-USDT" in p]) > 0
        assert len([p for p in server.rest_log if "/market/books" in p]) > requests
    assert book_ops(server, "ETH-USDT") == ["subscribe"]
    assert all(e.checksum is None for e in live.events if isinstance(e, Book))
    assert live.books.violations == []
    json.dumps(live.adapter.counters)  # counters stay plain data


@pytest.mark.parametrize("ws_snapshot", [True, False])
async def test_recorded_live_run_replays_to_the_same_events(server: OkxServer, tmp_path: Path, ws_snapshot: bool) -> None:
    """The adapter is pure: a capture of a live run with every fault replays to exactly its events."""
    server.ws_snapshot = ws_snapshot
    recorder = Recorder(tmp_path, ["okx"], rotate_mb=None, rotate_minutes=None, gzip=True)
    try:
        async with Live(server, recorder=recorder, stale_after=0.5) as live:
            await live.all_synced()
            server.drop_next_update("BTC-USDT")
            await wait_until(lambda: live.statuses(BOOK_INVALID, "BTC-USDT"), "book_invalid for BTC-USDT")
            server.corrupt_next_checksum("ETH-USDT")
            await wait_until(lambda: live.statuses(BOOK_INVALID, "ETH-USDT"), "book_invalid for ETH-USDT")
            await live.all_synced()
            server.send_notice("64008")
            await wait_until(lambda: server.connections == 2 and len(server.open_connections()) == 1, "replaced")
            await live.all_synced()
            server.kill_connections()
            await wait_until(lambda: server.connections == 3, "reconnected after a kill")
            await live.all_synced()
            server.stall()
            await wait_until(lambda: server.connections == 4, "reconnected after going stale")
            await live.all_synced()
    finally:
        recorder.close()
    assert live.mismatches == [] and live.books.violations == []
    replayed = list(replay_events(recorder.files))
    assert len(replayed) == len(live.events)
    assert replayed == live.events
