"""Bots that read the daemon's events from Redis Streams or NATS JetStream instead of its WebSocket.

```python
async with RedisSource("redis://127.0.0.1:6379/0", ["book:binance:BTC-USDT", "status:binance:*"]) as feed:
    async for event in feed:                     # Trade, Book, Top, Status (marketfeed.events)
        book = feed.book("binance", "BTC-USDT")  # None while the book is not valid
    resume_from = feed.position                  # {stream key: last id}, give it back as ``start``

async with NatsSource("nats://127.0.0.1:4222", ["book:binance:*"], start=feed.position + 1) as feed: ...
```

Channels are ``type:venue:symbol`` as for StreamClient, ``*`` for any part; they become Redis key
patterns (``marketfeed:book:binance:*``, from the sink's key template) or JetStream subject filters
(``marketfeed.book.binance.*``). Books per (venue, symbol) follow the same validity rules as
StreamClient (marketfeed.client.BookKeeping). Both sources read stored streams, so after the server
went away they reconnect with backoff (full jitter) and go on from the last position they delivered:
nothing lost, nothing twice, and the books stay valid (no re-snapshot is needed, unlike the WebSocket).

Order. JetStream stores every subject in one stream with one sequence, so one consumer over all the
filters gets the daemon's order. Redis has one stream per (type, venue, symbol): a symbol's ``book``
and its ``status`` are two streams, and ``book_invalid`` must come between the right diffs. The
source reads all keys with XREAD and merges the entries by their Redis id's milliseconds (the sink
XADDs in the daemon's order, and ids follow the server clock), then by the event's ``ts_recv`` (within
one venue the daemon emits in receive order), keeping each stream's own order; entries are released
only up to the point every stream has been read to (a stream whose XREAD batch was full may have
older entries left), so a batch limit never reorders. What stays uncertain is entries of different
streams with the same millisecond and the same ``ts_recv``.
"""

from __future__ import annotations

import asyncio
import heapq
import random
from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec
import structlog

from marketfeed.client import BookKeeping
from marketfeed.events import BOOK_INVALID, Book, Event, Status, Top, Trade

log = structlog.get_logger("marketfeed.sources")

_CLOSED = object()
_TYPES = ("trade", "book", "top", "status")
_TYPE_OF = {Trade: "trade", Book: "book", Top: "top", Status: "status"}


def parse_channel(channel: str) -> tuple[str, str, str]:
    parts = channel.split(":")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"channel {channel!r} is not type:venue:symbol (use * for any)")
    if parts[0] != "*" and parts[0] not in _TYPES:
        raise ValueError(f"channel {channel!r}: type must be one of {', '.join(_TYPES)} or *")
    return parts[0], parts[1], parts[2]


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _decoder(format: str) -> Any:
    if format == "json":
        return msgspec.json.Decoder(Event).decode
    if format == "msgpack":
        return msgspec.msgpack.Decoder(Event).decode
    raise ValueError("format must be json or msgpack")


class _Source(BookKeeping):
    """The common part: a reader task feeding a bounded queue, async iteration applying books,
    reconnects with backoff around ``_read_once``."""

    def __init__(self, channels: Iterable[str], format: str, backoff_base: float, backoff_cap: float,
                 queue_size: int, keep_books: bool) -> None:
        self.channels = list(dict.fromkeys(channels))
        if not self.channels:
            raise ValueError("no channels")
        self.patterns = [parse_channel(c) for c in self.channels]
        self.format = format
        self._decode = _decoder(format)
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.keep_books = keep_books
        self.connects = 0
        self.undecodable = 0
        self.connected = asyncio.Event()
        self._queue: asyncio.Queue[Any] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._init_books()

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"marketfeed {type(self).__name__}")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._disconnect()
        if not self._queue.full():
            self._queue.put_nowait(_CLOSED)

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Event:
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)
            raise StopAsyncIteration
        event, position = item
        self._delivered(position)
        if self.keep_books:
            self._apply(event)
        return event  # type: ignore[no-any-return]

    async def next_event(self, timeout: float | None = None) -> Event:
        return await asyncio.wait_for(self.__anext__(), timeout)

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            healthy = False
            try:
                await self._connect()
                self.connects += 1
                self.connected.set()
                healthy = True
                await self._read_forever()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  (the server went away or refused: reconnect with backoff)
                if not self._is_outage(exc):
                    log.warning("source failed", source=type(self).__name__, error=repr(exc))
                else:
                    log.info("source disconnected", source=type(self).__name__, error=repr(exc))
            finally:
                self.connected.clear()
                await self._disconnect()
            if self._closed:
                return
            attempt = 0 if healthy else attempt + 1
            await asyncio.sleep(random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt)))

    def _wanted(self, event: Event) -> bool:
        name = _TYPE_OF[type(event)]
        symbol = event.symbol or "_"
        return any((t == "*" or t == name) and (v == "*" or v == event.venue) and (s == "*" or s == symbol)
                   for t, v, s in self.patterns)

    # subclasses
    async def _connect(self) -> None: ...
    async def _read_forever(self) -> None: ...
    async def _disconnect(self) -> None: ...
    def _delivered(self, position: Any) -> None: ...
    def _is_outage(self, exc: Exception) -> bool:
        return isinstance(exc, (OSError, TimeoutError))


class RedisSource(_Source):
    """Reads the RedisSink's streams. ``start``: ``"0"`` (everything kept), ``"$"`` (only new
    entries), or a ``position`` dict {key: last delivered id} from an earlier run; keys that appear
    later are read from their beginning. ``key`` and ``field`` as configured for the sink."""

    def __init__(self, url: str, channels: Iterable[str], start: str | dict[str, str] = "0",
                 key: str = "marketfeed:{type}:{venue}:{symbol}", field: str = "data", format: str = "json",
                 batch: int = 1000, block: float = 1.0, discover_every: float = 1.0,
                 backoff_base: float = 0.2, backoff_cap: float = 10.0, queue_size: int = 100_000,
                 keep_books: bool = True) -> None:
        super().__init__(channels, format, backoff_base, backoff_cap, queue_size, keep_books)
        self.url = url
        self.key_patterns = [key.format(type=t, venue=v, symbol=s) for t, v, s in self.patterns]
        self.field = field.encode()
        self.batch = batch
        self.block_ms = max(1, int(block * 1000))
        self.discover_every = discover_every
        self._start_all = start if isinstance(start, str) else None
        self.position: dict[str, str] = dict(start) if isinstance(start, dict) else {}  # delivered
        # read from Redis, ahead of position by what is queued or pending; a reconnect goes on from
        # here (queued and pending entries survive it, they are this object's, not the connection's)
        self._read: dict[str, str] = {}
        # entries read but not yet released, per key in stream order: (ms, id, event)
        self._pending: dict[str, deque[tuple[int, str, Event]]] = {}
        self._client: Any = None
        self._discovered = False
        self._trimmed: dict[str, str] = {}  # key -> the first kept id whose loss was already reported
        self._last_event: dict[str, Event] = {}  # key -> the last event read (for a gap's book_invalid)
        self.lost_streams = 0  # times a stream was trimmed past our read position

    def _delivered(self, position: Any) -> None:
        key, entry_id = position
        self.position[key] = entry_id

    def _is_outage(self, exc: Exception) -> bool:
        from redis.exceptions import ConnectionError
        from redis.exceptions import TimeoutError as RedisTimeout

        return isinstance(exc, (ConnectionError, RedisTimeout, OSError, TimeoutError))

    async def _connect(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.from_url(self.url, socket_connect_timeout=5.0, socket_timeout=self.block_ms / 1000 + 10)
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        await self._discover()  # before ``connected`` is set: a "$" start is pinned by then
        await self._check_trimmed()

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def _check_trimmed(self) -> None:
        """Entries after our read position that Redis trimmed (``maxlen``: the bot fell behind or was
        away too long) are lost: count them, and a book stream says ``book_invalid`` at that point so
        its book waits for the next snapshot instead of applying diffs over a hole."""
        for k, read in self._read.items():
            if read in ("0", "0-0"):
                continue  # from the oldest kept entry: nothing we could have had is missing
            # Redis does not record how far MAXLEN trimmed (max-deleted-entry-id is for XDEL only); the
            # first kept entry is after our position exactly when our last entry is gone too, and then
            # entries after it may be gone: counted as a loss (on the safe side: the book waits for a
            # snapshot even when the trim happened to stop right at our position)
            info = await self._client.xinfo_stream(k)
            first = info.get("first-entry")
            if not first:
                continue
            deleted = first[0].decode() if isinstance(first[0], bytes) else str(first[0])
            if _id(deleted) <= _id(read) or self._trimmed.get(k) == deleted:
                continue
            self._trimmed[k] = deleted
            self.lost_streams += 1
            log.warning("redis stream trimmed past the read position", key=k, read=read, deleted=deleted)
            last = self._pending.get(k)
            event = last[-1][2] if last else self._last_event.get(k)
            if event is None:  # resumed from a saved position: any kept entry names the stream's book
                kept = await self._client.xrange(k, count=1)
                if kept:
                    try:
                        event = self._decode(kept[0][1].get(self.field))
                    except (msgspec.DecodeError, TypeError):
                        event = None
            if event is not None and type(event) is Book:
                gap = Status(event.venue, event.symbol, event.ts_recv, BOOK_INVALID,
                             f"redis stream {k} trimmed past the read position {read}")
                self._pending.setdefault(k, deque()).append((_id(deleted)[0], read, gap))

    async def _discover(self) -> None:
        for pattern in self.key_patterns:
            async for raw in self._client.scan_iter(match=pattern, count=1000, _type="stream"):
                k = raw.decode()
                if k not in self._read:
                    start = self.position.get(k) or self._start_all or "0"
                    if start == "$" and not self._discovered:
                        # "$" as a real id, now: a reconnect or a later XREAD skips nothing after it
                        last = (await self._client.xinfo_stream(k))["last-generated-id"]
                        start = last.decode() if isinstance(last, bytes) else str(last)
                    elif start == "$":
                        start = "0"  # a stream that appeared after we started: all of it is new
                    self._read[k] = start
        self._discovered = True

    async def _read_forever(self) -> None:
        loop = asyncio.get_running_loop()
        next_discovery = loop.time() + self.discover_every
        pending = self._pending
        while not self._closed:  # (a client library may swallow the close's cancellation)
            if not self._read:  # no stream matches yet
                await asyncio.sleep(self.discover_every)
                await self._discover()
                continue
            if loop.time() >= next_discovery:  # streams that appeared since (a new symbol); trimming
                await self._discover()
                await self._check_trimmed()
                next_discovery = loop.time() + self.discover_every
            reply = await self._client.xread(self._read, count=self.batch, block=self.block_ms)
            horizon: int | None = None  # entries up to this ms are complete across every stream
            for raw_key, entries in reply or ():
                k = raw_key.decode()
                if not entries:
                    continue
                for raw_id, fields in entries:
                    entry_id = raw_id.decode()
                    data = fields.get(self.field)
                    try:
                        event = self._decode(data)
                    except (msgspec.DecodeError, TypeError):
                        self.undecodable += 1
                        log.warning("undecodable redis entry", key=k, id=entry_id)
                        self.position[k] = entry_id
                        continue
                    ms = int(entry_id.split("-", 1)[0])
                    pending.setdefault(k, deque()).append((ms, entry_id, event))
                    self._last_event[k] = event
                self._read[k] = entries[-1][0].decode()
                if len(entries) >= self.batch:  # maybe more in this stream: later entries may be older than others'
                    last_ms = int(self._read[k].split("-", 1)[0])
                    horizon = last_ms if horizon is None else min(horizon, last_ms)
            await self._release(horizon)

    async def _release(self, horizon: int | None) -> None:
        """K-way merge of the streams' buffered entries by (id ms, ts_recv) of each stream's head, each
        stream keeping its own order; only entries older than ``horizon`` (ms) when some stream may
        have more to read."""
        heads = [(q[0][0], q[0][2].ts_recv, k) for k, q in self._pending.items() if q]
        heapq.heapify(heads)
        while heads:
            ms, _, k = heads[0]
            if horizon is not None and ms >= horizon:
                return
            q = self._pending[k]
            _, entry_id, event = q.popleft()
            await self._queue.put((event, (k, entry_id)))
            if q:
                heapq.heapreplace(heads, (q[0][0], q[0][2].ts_recv, k))
            else:
                heapq.heappop(heads)


class NatsSource(_Source):
    """Reads the NatsSink's JetStream stream through one ephemeral consumer filtered to the channels'
    subjects, so events come in stream order. ``start``: a stream sequence to start at (e.g. the
    ``position`` of an earlier run + 1), None for everything kept, or ``"new"`` for new messages only.
    ``position`` is the stream sequence of the last delivered event."""

    def __init__(self, servers: str | list[str], channels: Iterable[str], start: int | str | None = None,
                 stream: str = "MARKETFEED", subject_prefix: str = "marketfeed", format: str = "json",
                 batch: int = 1000, fetch_timeout: float = 1.0, backoff_base: float = 0.2,
                 backoff_cap: float = 10.0, queue_size: int = 100_000, keep_books: bool = True) -> None:
        super().__init__(channels, format, backoff_base, backoff_cap, queue_size, keep_books)
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.stream = stream
        self.subjects = list(dict.fromkeys(f"{subject_prefix}.{t}.{v}.{s}" for t, v, s in self.patterns))
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self._start = start
        self.position: int | None = None  # stream sequence of the last event delivered
        self._read_seq: int | None = None  # of the last event queued (a reconnect goes on after it)
        self._nc: Any = None
        self._sub: Any = None

    def _delivered(self, position: Any) -> None:
        self.position = position

    def _is_outage(self, exc: Exception) -> bool:
        from nats import errors

        return isinstance(exc, (errors.Error, OSError, TimeoutError))

    async def _connect(self) -> None:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        # no reconnecting inside the client: our loop reconnects and makes a new consumer that starts
        # after the last message we queued
        nc = await nats.connect(servers=self.servers, connect_timeout=5.0, allow_reconnect=False,
                                max_reconnect_attempts=0)
        self._nc = nc
        js = nc.jetstream()
        if self._read_seq is not None:
            policy, seq = DeliverPolicy.BY_START_SEQUENCE, self._read_seq + 1
        elif self._start == "new":
            policy, seq = DeliverPolicy.NEW, None
        elif isinstance(self._start, int):
            policy, seq = DeliverPolicy.BY_START_SEQUENCE, self._start
        else:
            policy, seq = DeliverPolicy.ALL, None
        info = await js.add_consumer(self.stream, ConsumerConfig(
            deliver_policy=policy, opt_start_seq=seq, ack_policy=AckPolicy.NONE,
            # one filter in the long-standing field; several need a 2.10 server (older ones ignore them,
            # which _wanted below catches)
            filter_subject=self.subjects[0] if len(self.subjects) == 1 else None,
            filter_subjects=self.subjects if len(self.subjects) > 1 else None, inactive_threshold=60.0, mem_storage=True,
        ))
        self._sub = await js.pull_subscribe_bind(consumer=info.name, stream=self.stream)

    async def _disconnect(self) -> None:
        nc, self._nc, self._sub = self._nc, None, None
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def _read_forever(self) -> None:
        from nats.errors import TimeoutError as NatsTimeout

        while not self._closed:  # (a client library may swallow the close's cancellation)
            try:
                msgs = await self._sub.fetch(self.batch, timeout=self.fetch_timeout)
            except NatsTimeout:
                if self._nc is None or not self._nc.is_connected:
                    raise ConnectionError("nats connection lost") from None
                continue
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                if self._read_seq is not None and seq <= self._read_seq:
                    continue  # never twice
                self._read_seq = seq
                try:
                    event = self._decode(msg.data)
                except msgspec.DecodeError:
                    self.undecodable += 1
                    log.warning("undecodable nats message", subject=msg.subject, seq=seq)
                    continue
                if self._wanted(event):
                    await self._queue.put((event, seq))
