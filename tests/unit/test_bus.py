"""The bus: fan-out in order, publish never waits, a stuck sink loses only its own events (counted),
and a consumer of a sink that lost book data is told so and never gets a diff for a book with a hole."""

from __future__ import annotations

import asyncio

import pytest

from marketfeed.bus import Bus, SinkChannel
from marketfeed.events import BOOK_INVALID, Book, Event, Status, Trade
from marketfeed.sinks.base import Sink
from tests.helpers import ConsumerBooks


class CollectingSink(Sink):
    """Keeps what it is given. ``gate`` (when set) makes write wait until it is opened."""

    def __init__(self, name: str, gate: asyncio.Event | None = None, fail_on: set[int] | None = None) -> None:
        self.name = name
        self.gate = gate
        self.fail_on = fail_on or set()  # numbers of write calls (from 1) that raise
        self.batches: list[list[Event]] = []
        self.calls: list[str] = []
        self.writing = asyncio.Event()
        self.writes = 0

    @property
    def events(self) -> list[Event]:
        return [e for batch in self.batches for e in batch]

    async def start(self) -> None:
        self.calls.append("start")

    async def write(self, events: list[Event]) -> None:
        self.writes += 1
        self.calls.append("write")
        self.writing.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.writes in self.fail_on:
            raise OSError("disk full")
        self.batches.append(list(events))

    async def flush(self) -> None:
        self.calls.append("flush")

    async def close(self) -> None:
        self.calls.append("close")


def trade(i: int) -> Trade:
    return Trade("binance", "BTC-USDT", 1_000 + i, None, str(i), 100.0 + i, 1.0, "buy")


def book(seq: int, snapshot: bool = False, symbol: str = "BTC-USDT") -> Book:
    """The book at ``seq`` is one bid at seq and one ask at seq + 1; a diff moves it up from seq - 1.
    A consumer that misses a diff keeps a stale level and ends up crossed: the hole is visible."""
    p = float(seq)
    if snapshot:
        return Book("binance", symbol, seq, None, seq, True, [(p, 1.0)], [(p + 1, 1.0)])
    return Book("binance", symbol, seq, None, seq, False, [(p, 1.0), (p - 1, 0.0)], [(p, 0.0), (p + 1, 1.0)])


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_every_sink_gets_every_batch_in_order() -> None:
    bus = Bus()
    a, b = CollectingSink("a"), CollectingSink("b")
    bus.add_sink(a)
    bus.add_sink(b)
    await bus.start()
    published = [[trade(i), trade(i + 1)] for i in range(0, 200, 2)]
    for batch in published:
        bus.publish(batch)
        if len(batch) % 3 == 0:
            await asyncio.sleep(0)
    assert await bus.close(timeout=10) is True
    flat = [e for batch in published for e in batch]
    assert a.events == flat and b.events == flat
    assert a.calls[0] == "start" and a.calls[-2:] == ["flush", "close"]
    assert bus.counters() == {
        "a": {"queued": 200, "written": 200, "dropped": 0, "errors": 0, "depth": 0},
        "b": {"queued": 200, "written": 200, "dropped": 0, "errors": 0, "depth": 0},
    }


async def test_publish_never_waits_for_a_stuck_sink_and_the_others_get_everything() -> None:
    bus = Bus()
    gate = asyncio.Event()
    stuck = CollectingSink("stuck", gate=gate)
    fast = CollectingSink("fast")
    stuck_channel = bus.add_sink(stuck, queue_size=10)
    bus.add_sink(fast, queue_size=10)
    await bus.start()
    bus.publish([trade(0)])
    await stuck.writing.wait()  # the stuck sink holds batch 0 and will not return
    for i in range(1, 101):
        bus.publish([trade(i)])  # a plain call: no await anywhere, so it cannot wait
        await asyncio.sleep(0)
    assert [e.trade_id for e in fast.events] == [str(i) for i in range(101)]
    # the stuck sink's queue kept the newest 10; the 90 before them were dropped and counted
    assert stuck_channel.depth == 10
    assert stuck_channel.dropped == 90
    gate.set()
    assert await bus.close(timeout=10) is True
    assert [e.trade_id for e in stuck.events] == ["0"] + [str(i) for i in range(91, 101)]
    c = bus.counters()["stuck"]
    assert c == {"queued": 101, "written": 11, "dropped": 90, "errors": 0, "depth": 0}
    assert c["queued"] == c["written"] + c["dropped"]


async def test_drop_newest_keeps_what_is_queued() -> None:
    bus = Bus()
    gate = asyncio.Event()
    sink = CollectingSink("s", gate=gate)
    bus.add_sink(sink, queue_size=5, on_full="drop_newest")
    await bus.start()
    bus.publish([trade(0)])
    await sink.writing.wait()
    for i in range(1, 21):
        bus.publish([trade(i)])
    gate.set()
    await bus.close(timeout=10)
    assert [e.trade_id for e in sink.events] == [str(i) for i in range(6)]
    assert bus.counters()["s"]["dropped"] == 15


async def test_a_batch_larger_than_the_queue_is_still_delivered() -> None:
    bus = Bus()
    sink = CollectingSink("s")
    bus.add_sink(sink, queue_size=3)
    await bus.start()
    big = [trade(i) for i in range(10)]
    bus.publish(big)
    await bus.close(timeout=10)
    assert sink.events == big


async def test_lost_book_data_is_announced_and_diffs_wait_for_the_next_snapshot() -> None:
    """Dropping diffs silently would leave a consumer with a wrong book. The sink that lost data gets a
    book_invalid for that book first, then no diff until a snapshot: the consumer's book is never wrong."""
    bus = Bus()
    gate = asyncio.Event()
    slow = CollectingSink("slow", gate=gate)
    fast = CollectingSink("fast")
    bus.add_sink(slow, queue_size=4)
    bus.add_sink(fast, queue_size=1000)
    await bus.start()
    bus.publish([book(1, snapshot=True), book(1, snapshot=True, symbol="ETH-USDT")])
    await slow.writing.wait()
    for seq in range(2, 20):  # diffs; the slow sink can keep only 4 of them
        bus.publish([book(seq)])
    bus.publish([trade(1)])
    bus.publish([book(20, snapshot=True)])  # a resync snapshot (a real adapter sends one after a gap)
    bus.publish([book(21), book(2, symbol="ETH-USDT")])
    gate.set()
    await bus.close(timeout=10)

    invalid = [e for e in slow.events if isinstance(e, Status)]
    assert [(e.symbol, e.state) for e in invalid] == [("BTC-USDT", BOOK_INVALID)]
    consumer = ConsumerBooks()
    for e in slow.events:
        consumer.apply(e)
    assert consumer.violations == []
    # after the announcement, the only BTC book events are the snapshot at 20 and the diff after it
    after = slow.events[slow.events.index(invalid[0]) + 1 :]
    assert [(e.seq, e.snapshot) for e in after if isinstance(e, Book) and e.symbol == "BTC-USDT"] == [(20, True), (21, False)]
    # ETH lost nothing and is untouched
    assert consumer.valid[("binance", "ETH-USDT")] is True
    assert consumer.books[("binance", "ETH-USDT")].best_bid() == (2.0, 1.0)
    # the consumer of the slow sink ends with the same BTC book as the one that lost nothing
    fast_consumer = ConsumerBooks()
    for e in fast.events:
        fast_consumer.apply(e)
    key = ("binance", "BTC-USDT")
    assert fast_consumer.violations == []
    assert consumer.books[key].top(10) == fast_consumer.books[key].top(10)
    c = bus.counters()["slow"]
    assert c["errors"] == 0 and c["dropped"] > 0


async def test_a_failing_write_is_counted_and_the_sink_carries_on() -> None:
    bus = Bus()
    sink = CollectingSink("s", fail_on={2})
    bus.add_sink(sink)
    await bus.start()
    bus.publish([book(1, snapshot=True), trade(1)])
    await settle()
    bus.publish([book(2)])  # this write fails: the consumer must not get book 3 on top of a hole
    await settle()
    bus.publish([book(3), trade(3)])
    await settle()
    bus.publish([book(4, snapshot=True), book(5)])
    await bus.close(timeout=10)
    c = bus.counters()["s"]
    assert c["errors"] == 1
    assert c["written"] + c["dropped"] == c["queued"] + 1  # + the book_invalid status the bus added
    consumer = ConsumerBooks()
    for e in sink.events:
        consumer.apply(e)
    assert consumer.violations == []
    seqs = [(type(e).__name__, getattr(e, "seq", None)) for e in sink.events]
    assert seqs == [("Book", 1), ("Trade", None), ("Status", None), ("Trade", None), ("Book", 4), ("Book", 5)]


async def test_flush_interval_zero_flushes_after_every_write() -> None:
    bus = Bus()
    sink = CollectingSink("s")
    sink.flush_interval = 0.0
    bus.add_sink(sink)
    await bus.start()
    bus.publish([trade(1)])
    await settle()
    bus.publish([trade(2)])
    await settle()
    await bus.close(timeout=10)
    assert sink.calls == ["start", "write", "flush", "write", "flush", "flush", "close"]


async def test_an_idle_sink_is_flushed_after_its_interval() -> None:
    class FlushSignal(CollectingSink):
        flushed = asyncio.Event()

        async def flush(self) -> None:
            await super().flush()
            self.flushed.set()

    bus = Bus()
    sink = FlushSignal("s")
    sink.flush_interval = 0.05
    sink.flushed = asyncio.Event()
    bus.add_sink(sink)
    await bus.start()
    bus.publish([trade(1)])
    await asyncio.wait_for(sink.flushed.wait(), 30)  # no further publish: the idle timer flushes
    assert sink.calls[:3] == ["start", "write", "flush"]
    await bus.close(timeout=10)


async def test_close_gives_up_on_a_sink_that_never_finishes() -> None:
    bus = Bus()
    never = CollectingSink("never", gate=asyncio.Event())
    fine = CollectingSink("fine")
    bus.add_sink(never)
    bus.add_sink(fine)
    await bus.start()
    bus.publish([trade(1)])
    await never.writing.wait()
    bus.publish([trade(2)])
    assert await bus.close(timeout=0.2) is False
    assert [e.trade_id for e in fine.events] == ["1", "2"] and fine.calls[-1] == "close"
    c = bus.counters()["never"]
    assert c["written"] == 0 and c["dropped"] == 1 and c["depth"] == 0
    # after close, publishing is counted as dropped, never an error
    bus.publish([trade(3)])
    assert bus.counters()["fine"]["dropped"] == 1


async def test_a_sink_that_cannot_start_stops_the_bus_from_starting() -> None:
    class Broken(CollectingSink):
        async def start(self) -> None:
            raise OSError("no such directory")

    bus = Bus()
    ok = CollectingSink("ok")
    bus.add_sink(ok)
    bus.add_sink(Broken("broken"))
    with pytest.raises(OSError):
        await bus.start()
    assert ok.calls == ["start", "close"]  # the sink that did start was closed again


def test_bad_channel_settings() -> None:
    with pytest.raises(ValueError):
        SinkChannel(CollectingSink("s"), queue_size=0)
    with pytest.raises(ValueError):
        SinkChannel(CollectingSink("s"), on_full="sometimes")
