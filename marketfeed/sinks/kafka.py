"""Kafka (aiokafka): one topic per event type (``marketfeed.trade``, ``marketfeed.book``,
``marketfeed.top``, ``marketfeed.status``; ``topic`` to change), keyed ``venue:symbol`` so that one
book's events stay in one partition, in order. Each batch is sent without waiting per message and then
awaited as a whole (the producer batches by partition); ``acks`` as configured (default ``all``).
Payload: EVENTS.md JSON, or MessagePack with ``format = "msgpack"``. At-least-once after an outage
(marketfeed.sinks.network); ``idempotence = true`` adds the producer's own exactly-once retries
where the broker supports them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from marketfeed.events import Event
from marketfeed.sinks.network import (
    NO_SYMBOL,
    TYPE_NAMES,
    Names,
    NetworkSink,
    NetworkSinkOptions,
    check_format,
    encoder,
)


class KafkaSinkConfig(NetworkSinkOptions):
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = "marketfeed.{type}"
    acks: str = "all"  # "0", "1" or "all"
    linger_ms: int = 5
    create_topics: bool = True  # create the four per-type topics at start when missing ({type}-only templates)
    partitions: int = 1  # ... with this many partitions
    replication_factor: int = 1
    idempotence: bool = False  # the producer's own exactly-once retries (brokers that support InitProducerId)
    compression: str | None = None  # "gzip", "lz4", "zstd", "snappy" (their libraries must be installed)
    format: str = "json"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_format(self.format)
        if self.acks not in ("0", "1", "all"):
            raise ValueError(f"acks: {self.acks!r} is not one of 0, 1, all")
        try:
            Names(self.topic)
        except ValueError as exc:
            raise ValueError(f"topic: {exc}") from None


class KafkaSink(NetworkSink):
    Options = KafkaSinkConfig

    @classmethod
    def from_options(cls, options: KafkaSinkConfig) -> KafkaSink:
        return cls(options)

    def __init__(self, options: KafkaSinkConfig) -> None:
        super().__init__(options)
        self.options: KafkaSinkConfig = options
        self.name = f"kafka:{options.bootstrap_servers}"
        self._topic = Names(options.topic)
        self._encode = encoder(options.format)
        self._keys: dict[tuple[str, str | None], bytes] = {}
        self._producer: Any = None

    async def _connect(self) -> None:
        from aiokafka import AIOKafkaProducer

        acks: Any = "all" if self.options.acks == "all" else int(self.options.acks)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.options.bootstrap_servers,
            acks=acks,
            linger_ms=self.options.linger_ms,
            compression_type=self.options.compression,
            enable_idempotence=self.options.idempotence,
            request_timeout_ms=int(self.options.connect_timeout * 1000) * 6,
        )
        try:
            if self.options.create_topics and "{venue}" not in self.options.topic and "{symbol}" not in self.options.topic:
                await self._create_topics()
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer

    async def _create_topics(self) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=self.options.bootstrap_servers)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            wanted = [self.options.topic.format(type=t) for t in TYPE_NAMES.values()]
            missing = [NewTopic(t, self.options.partitions, self.options.replication_factor) for t in wanted if t not in existing]
            if missing:
                await admin.create_topics(missing)
        finally:
            await admin.close()

    def _key(self, e: Event) -> bytes:
        k = (e.venue, e.symbol)
        key = self._keys.get(k)
        if key is None:
            key = self._keys[k] = f"{e.venue}:{e.symbol or NO_SYMBOL}".encode()
        return key

    async def _send(self, events: list[Event], first: int) -> None:
        producer, topic, encode, key = self._producer, self._topic, self._encode, self._key
        futures: list[asyncio.Future[Any]] = []
        try:
            for e in events:
                futures.append(await producer.send(topic(e), encode(e), key=key(e)))
        except BaseException:
            for f in futures:  # their failures are this one: no "exception never retrieved" noise
                f.add_done_callback(_retrieve)
            raise
        # every future awaited (a failed batch fails many at once); the first failure is raised
        for result in await asyncio.gather(*futures, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    def _is_disconnect(self, exc: Exception) -> bool:
        from aiokafka.errors import KafkaConnectionError

        return isinstance(exc, KafkaConnectionError) or bool(getattr(exc, "retriable", False))

    async def _disconnect(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
