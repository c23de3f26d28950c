"""NATS JetStream: subjects ``marketfeed.{type}.{venue}.{symbol}``, asynchronous publishes whose acks
are awaited per batch, the stream created (or checked) at start.

The stream (``stream``, default ``MARKETFEED``) must capture ``{subject_prefix}.>``; at start it is
created with ``max_age``/``max_bytes`` limits when missing, and an existing stream that does not
capture our subjects stops the start with a message saying so. Every message carries a
``Nats-Msg-Id`` made of this sink's run id and the event's position in its output, so a batch that is
sent again after an outage (marketfeed.sinks.network) is stored once: JetStream drops duplicates
within the stream's ``duplicate_window``.

Symbols become one subject token (``BTC-USDT``); ``_`` for connection-level statuses. Payload: the event
as EVENTS.md JSON, or MessagePack with ``format = "msgpack"``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import msgspec

from marketfeed.events import Event
from marketfeed.sinks.network import (
    Names,
    NetworkSink,
    NetworkSinkOptions,
    check_format,
    encoder,
)


class NatsSinkConfig(NetworkSinkOptions):
    servers: list[str] = msgspec.field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    stream: str = "MARKETFEED"
    subject_prefix: str = "marketfeed"
    create_stream: bool = True
    max_age: float = 86_400.0  # seconds kept, for a stream we create
    max_bytes: int = -1  # for a stream we create; -1: unlimited
    duplicate_window: float = 120.0  # seconds, for a stream we create
    ack_timeout: float = 10.0  # seconds to wait for a batch's acks before it counts as failed
    format: str = "json"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_format(self.format)
        if not self.servers:
            raise ValueError("servers: must not be empty")
        if not self.stream or any(c in self.stream for c in " .*>"):
            raise ValueError(f"stream: {self.stream!r} is not a valid stream name")
        if not self.subject_prefix or any(c in self.subject_prefix for c in " *>"):
            raise ValueError(f"subject_prefix: {self.subject_prefix!r} is not a subject prefix")
        if self.ack_timeout <= 0:
            raise ValueError("ack_timeout: must be positive")


class NatsSink(NetworkSink):
    Options = NatsSinkConfig

    @classmethod
    def from_options(cls, options: NatsSinkConfig) -> NatsSink:
        return cls(options)

    def __init__(self, options: NatsSinkConfig) -> None:
        super().__init__(options)
        self.options: NatsSinkConfig = options
        self.name = f"nats:{options.servers[0]}/{options.stream}"
        self._subject = Names(options.subject_prefix + ".{type}.{venue}.{symbol}")
        self._encode = encoder(options.format)
        self._run_id = os.urandom(6).hex()  # message ids are unique across daemon runs
        self._nc: Any = None
        self._js: Any = None
        self._stream_checked = False
        self._inbox = ""
        self._batch = 0
        self._expected = self._acked = 0
        self._nacks: list[str] = []
        self._all_acked = asyncio.Event()

    async def _connect(self) -> None:
        import nats

        # no reconnecting inside the client: a failed batch drops the connection and the sink's own
        # retry loop reconnects, so there is one place that decides about outages
        nc = await nats.connect(
            servers=self.options.servers,
            connect_timeout=self.options.connect_timeout,
            allow_reconnect=False,
            max_reconnect_attempts=0,
        )
        try:
            js = nc.jetstream()
            if not self._stream_checked:
                await self._ensure_stream(js)
                self._stream_checked = True
        except BaseException:
            await nc.close()
            raise
        # acks come back on our own inbox: one subscription, replies numbered by batch
        inbox = nc.new_inbox()
        await nc.subscribe(f"{inbox}.>", cb=self._on_ack)
        self._nc, self._js, self._inbox = nc, js, inbox

    async def _ensure_stream(self, js: Any) -> None:
        from nats.js.api import StreamConfig
        from nats.js.errors import NotFoundError

        wanted = f"{self.options.subject_prefix}.>"
        try:
            info = await js.stream_info(self.options.stream)
        except NotFoundError:
            if not self.options.create_stream:
                raise RuntimeError(f"JetStream stream {self.options.stream!r} does not exist (create_stream = false)") from None
            await js.add_stream(StreamConfig(
                name=self.options.stream,
                subjects=[wanted],
                max_age=self.options.max_age,
                max_bytes=self.options.max_bytes,
                duplicate_window=self.options.duplicate_window,
            ))
            return
        subjects = info.config.subjects or []
        if wanted not in subjects and ">" not in subjects:
            raise RuntimeError(
                f"JetStream stream {self.options.stream!r} captures {subjects}, not {wanted!r}"
            )

    async def _send(self, events: list[Event], first: int) -> None:
        """Publish the whole batch with the reply subject ``<inbox>.<batch>`` and wait for every
        JetStream ack. The client buffers the publishes and writes them in large socket writes (its
        ``publish_async`` yields to the loop per message, one write each: 5x slower)."""
        nc, subject, encode, run, inbox = self._nc, self._subject, self._encode, self._run_id, self._inbox
        self._batch += 1
        batch = self._batch
        self._expected, self._acked, self._nacks = len(events), 0, []
        self._all_acked = asyncio.Event()
        reply = f"{inbox}.{batch}"
        for i, e in enumerate(events, first):
            await nc.publish(subject(e), encode(e), reply=reply, headers={"Nats-Msg-Id": f"{run}-{i}"})
        try:
            await asyncio.wait_for(self._all_acked.wait(), self.options.ack_timeout)
        except TimeoutError:
            raise TimeoutError(
                f"{self._expected - self._acked} of {self._expected} publishes not acknowledged in {self.options.ack_timeout} s"
            ) from None
        if self._nacks:
            raise RuntimeError(f"JetStream refused {len(self._nacks)} messages, e.g. {self._nacks[0]}")

    async def _on_ack(self, msg: Any) -> None:
        if msg.subject != f"{self._inbox}.{self._batch}":
            return  # a late ack of a batch that already failed (it is being sent again)
        data = msg.data
        if b'"error"' in data:
            self._nacks.append(data.decode(errors="replace"))
        self._acked += 1
        if self._acked >= self._expected:
            self._all_acked.set()

    def _is_disconnect(self, exc: Exception) -> bool:
        from nats import errors

        return isinstance(exc, (errors.ConnectionClosedError, errors.StaleConnectionError, errors.NoServersError,
                                errors.ConnectionReconnectingError, errors.OutboundBufferLimitError))

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()
