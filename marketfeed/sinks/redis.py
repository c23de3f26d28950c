"""Redis Streams: one stream per (type, venue, symbol), ``XADD key MAXLEN ~ N * data <event>``, a
pipeline per batch (one round trip for thousands of events).

Keys: ``marketfeed:{type}:{venue}:{symbol}`` by default (``key`` to change; ``{symbol}`` is ``_`` for
connection-level statuses). Each entry has one field, ``data`` (``field`` to change), holding the event
as EVENTS.md JSON or MessagePack. ``maxlen`` trims each stream approximately (``~``, so Redis trims
whole radix-tree nodes, cheaply); 0 keeps everything.

Delivery is at-least-once: a pipeline that failed after Redis had run it is sent again (see
marketfeed.sinks.network), so a consumer that must not see a repeated entry compares event fields.
"""

from __future__ import annotations

from typing import Any

from marketfeed.events import Event
from marketfeed.sinks.network import (
    Names,
    NetworkSink,
    NetworkSinkOptions,
    check_format,
    encoder,
)


class RedisSinkConfig(NetworkSinkOptions):
    url: str = "redis://127.0.0.1:6379/0"
    key: str = "marketfeed:{type}:{venue}:{symbol}"
    field: str = "data"
    maxlen: int = 1_000_000  # per stream, approximate; 0: no trimming
    format: str = "json"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_format(self.format)
        if "://" not in self.url:
            raise ValueError(f"url: {self.url!r} is not a redis:// URL")
        if self.maxlen < 0:
            raise ValueError("maxlen: must not be negative")
        try:
            Names(self.key)
        except ValueError as exc:
            raise ValueError(f"key: {exc}") from None


class RedisSink(NetworkSink):
    Options = RedisSinkConfig

    @classmethod
    def from_options(cls, options: RedisSinkConfig) -> RedisSink:
        return cls(options)

    def __init__(self, options: RedisSinkConfig) -> None:
        super().__init__(options)
        self.options: RedisSinkConfig = options
        self.name = f"redis:{options.url}"
        self._key = Names(options.key)
        self._encode = encoder(options.format)
        self._client: Any = None

    async def _connect(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.from_url(
            self.options.url,
            socket_connect_timeout=self.options.connect_timeout,
            socket_timeout=30.0,
            retry_on_timeout=False,
        )
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    async def _send(self, events: list[Event], first: int) -> None:
        key, encode, field = self._key, self._encode, self.options.field
        maxlen = self.options.maxlen or None
        pipe = self._client.pipeline(transaction=False)
        for e in events:
            pipe.xadd(key(e), {field: encode(e)}, maxlen=maxlen, approximate=True)
        await pipe.execute()

    def _is_disconnect(self, exc: Exception) -> bool:
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        return isinstance(exc, (RedisConnectionError, RedisTimeoutError))

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
