"""Sink types come from the ``marketfeed.sinks`` entry points: the built-ins, and a user's own sink
installed as a distribution (a real ``.dist-info`` on sys.path, found by importlib.metadata)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from marketfeed.bus import Bus
from marketfeed.config import ConfigError, parse_config
from marketfeed.events import Book, Trade
from marketfeed.sinks import make_sink, registry

VENUE = '[venues.binance]\nsymbols = ["BTC-USDT"]\n'

USER_SINK = '''
import msgspec
from marketfeed.config import SinkOptions
from marketfeed.sinks.base import Sink


class ListOptions(SinkOptions):
    label: str = "list"
    limit: int = 10

    def __post_init__(self):
        super().__post_init__()
        if self.limit <= 0:
            raise ValueError("limit: must be positive")


class ListSink(Sink):
    """Keeps what it is given, for the test to look at."""
    Options = ListOptions
    made = []

    def __init__(self, options):
        self.name = "list:" + options.label
        self.options = options
        self.events = []
        ListSink.made.append(self)

    @classmethod
    def from_options(cls, options):
        return cls(options)

    async def write(self, events):
        self.events.extend(events)
'''


@pytest.fixture
def user_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install a distribution ``mysinks`` with the entry point ``listsink`` the way pip would lay it
    out (module + dist-info with entry_points.txt), on sys.path for this test only."""
    (tmp_path / "mysinks.py").write_text(USER_SINK)
    info = tmp_path / "mysinks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mysinks\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[marketfeed.sinks]\nlistsink = mysinks:ListSink\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.forget()
    yield
    registry.forget()
    sys.modules.pop("mysinks", None)


def test_builtin_sink_types_are_entry_points() -> None:
    types = registry.sink_types()
    for name in ("stdout", "jsonl", "redis", "nats", "postgres", "kafka"):
        assert name in types
        plugin = registry.load(name)
        assert plugin is not None and plugin.Options is not None


async def test_a_users_installed_sink_is_configured_and_fed_by_the_bus(user_sink: None) -> None:
    assert "listsink" in registry.sink_types()
    config = parse_config(VENUE + '[[sinks]]\ntype = "listsink"\nlabel = "mine"\nqueue_size = 50\n')
    (options,) = config.sinks
    assert (options.label, options.queue_size, options.on_full) == ("mine", 50, "drop_oldest")
    sink = make_sink(options)
    assert type(sink).__name__ == "ListSink" and sink.name == "list:mine"
    bus = Bus()
    bus.add_sink(sink, options.queue_size, options.on_full)
    await bus.start()
    events = [Trade("binance", "BTC-USDT", i, None, str(i), 1.0 + i, 0.5, "buy") for i in range(20)]
    bus.publish(events[:10])
    bus.publish(events[10:])
    assert await bus.close()
    assert sink.events == events


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('label = 3', "sinks[0].label: expected `str`, got `int`"),
        ('limit = 0', "sinks[0].limit: must be positive"),
        ('colour = "red"', "sinks[0].colour: unknown key"),
        ('on_full = "sometimes"', "sinks[0].on_full: 'sometimes' is not one of"),
    ],
)
def test_a_users_sink_options_are_validated_naming_the_key(user_sink: None, table: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(VENUE + f'[[sinks]]\ntype = "listsink"\n{table}\n', "f.toml")
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"f.toml: {message}")


def test_an_unknown_sink_type_lists_the_installed_ones() -> None:
    with pytest.raises(ConfigError, match=r"sinks\[0\]\.type: unknown sink type 'nope' \(expected one of .*redis"):
        parse_config(VENUE + '[[sinks]]\ntype = "nope"\n')


class Gate:
    """A sink whose writes wait until the test opens the gate."""

    name = "gate"
    flush_interval = 0.0

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.events: list = []

    async def start(self) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...

    async def write(self, events: list) -> None:
        await self.open.wait()
        self.events.extend(events)


async def test_block_policy_makes_a_waiting_producer_wait_and_loses_nothing() -> None:
    bus = Bus()
    gate = Gate()
    fast = Gate()
    fast.open.set()
    channel = bus.add_sink(gate, queue_size=10, on_full="block")  # type: ignore[arg-type]
    bus.add_sink(fast, queue_size=10, on_full="drop_oldest")  # type: ignore[arg-type]
    await bus.start()
    batches = [[Trade("binance", "BTC-USDT", i * 5 + j, None, str(i * 5 + j), 1.0, 1.0, None) for j in range(5)] for i in range(8)]

    async def produce() -> None:
        for batch in batches:
            await bus.publish_wait(batch)

    producer = asyncio.create_task(produce())
    # the gate's writer holds its first batch; two more fill its queue; the producer then waits
    while channel.depth < 10:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    assert not producer.done() and channel.dropped == 0
    gate.open.set()
    await producer
    assert await bus.close()
    everything = [e for b in batches for e in b]
    assert gate.events == everything and channel.dropped == 0


async def test_block_policy_never_makes_the_live_publish_wait() -> None:
    bus = Bus()
    gate = Gate()
    channel = bus.add_sink(gate, queue_size=10, on_full="block")  # type: ignore[arg-type]
    await bus.start()
    books = [Book("binance", "BTC-USDT", i, None, i, i == 0, [(1.0, 1.0)], []) for i in range(40)]
    for i in range(0, 40, 5):
        bus.publish(books[i : i + 5])  # a plain call: returns at once even with the sink stuck
    await asyncio.sleep(0)
    assert channel.dropped > 0  # kept what was queued, dropped the newest
    gate.open.set()
    assert await bus.close()
    # the consumer is told the book lost data and gets no diff after the hole
    statuses = [e for e in gate.events if type(e).__name__ == "Status"]
    assert len(statuses) == 1 and statuses[0].state == "book_invalid"
    seqs = [e.seq for e in gate.events if type(e) is Book]
    assert seqs == list(range(len(seqs)))
