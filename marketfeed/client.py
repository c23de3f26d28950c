"""``marketfeed.client``: what a trading bot uses to consume the daemon's WebSocket stream.

```python
async with StreamClient("ws://127.0.0.1:8765/v1/stream", ["book:binance:BTC-USDT", "trade:binance:*"]) as feed:
    async for event in feed:                     # Trade, Book, Top, Status (marketfeed.events)
        book = feed.book("binance", "BTC-USDT")  # None while the book is not valid
```

The client keeps a book per (venue, symbol) from the ``book`` events with the rules of EVENTS.md: a
snapshot makes it valid, ``book_invalid`` (or losing the connection) makes it invalid until the next
snapshot, a diff for an invalid book is ignored (and counted). It reconnects with backoff (full
jitter) and resubscribes; on every subscription to a book the server sends a snapshot first, so
books become valid again without waiting for the venue. Events are decoded by msgspec straight into
the marketfeed.events types.

A background task reads the socket into a bounded queue: a bot that stops iterating stops reading,
and the server's slow-client policy (re-snapshot or close) applies rather than unbounded memory.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Iterable
from typing import Any

import aiohttp
import msgspec
import structlog

from marketfeed.book import L2Book
from marketfeed.events import BOOK_INVALID, Book, Event, Status, Top, Trade
from marketfeed.stream.messages import Ack, Error, Hello, Message, Pong, Snapshot

log = structlog.get_logger("marketfeed.client")

_CLOSED = object()


class StreamError(Exception):
    """A structured error from the server (``code`` as in marketfeed.stream.messages.Error)."""

    def __init__(self, code: str, message: str, channel: str | None = None) -> None:
        super().__init__(f"{code}: {message}" + (f" ({channel})" if channel else ""))
        self.code = code
        self.channel = channel


class BookKeeping:
    """The consumer's books per (venue, symbol) with a validity flag, shared by every client (the
    WebSocket StreamClient and the Redis/NATS readers in marketfeed.sources): a snapshot makes a
    book valid, ``book_invalid`` makes it invalid (and empties it) until the next snapshot, a diff for
    an invalid book is ignored and counted in ``ignored_diffs``."""

    books: dict[tuple[str, str], L2Book]
    valid: dict[tuple[str, str], bool]
    seq: dict[tuple[str, str], int | None]
    ignored_diffs: int

    def _init_books(self) -> None:
        self.books = {}
        self.valid = {}
        self.seq = {}
        self.ignored_diffs = 0  # diffs for a book with no valid snapshot (never expected from the daemon)

    def book(self, venue: str, symbol: str) -> L2Book | None:
        """The book of (venue, symbol) when it is valid, else None."""
        key = (venue, symbol)
        return self.books.get(key) if self.valid.get(key) else None

    def _apply(self, event: Event) -> None:
        t = type(event)
        if t is Book:
            key = (event.venue, event.symbol)  # type: ignore[union-attr]
            if event.snapshot:  # type: ignore[union-attr]
                book = self.books.get(key)
                if book is None:
                    book = self.books[key] = L2Book(window=64)
                book.apply_snapshot(event.bids, event.asks)  # type: ignore[union-attr]
                self.valid[key] = True
            elif self.valid.get(key):
                self.books[key].apply(event.bids, event.asks)  # type: ignore[union-attr]
            else:
                self.ignored_diffs += 1
                return
            self.seq[key] = event.seq  # type: ignore[union-attr]
        elif t is Status and event.state == BOOK_INVALID and event.symbol is not None:  # type: ignore[union-attr]
            key = (event.venue, event.symbol)  # type: ignore[assignment]
            self.valid[key] = False
            book = self.books.get(key)
            if book is not None:
                book.clear()


class StreamClient(BookKeeping):
    def __init__(
        self,
        url: str,
        channels: Iterable[str] = (),
        token: str | None = None,
        format: str = "json",
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        heartbeat: float | None = 20.0,
        queue_size: int = 100_000,
        ssl: Any = None,
        keep_books: bool = True,
    ) -> None:
        if format not in ("json", "msgpack"):
            raise ValueError("format must be json or msgpack")
        self.url = url
        self.channels: list[str] = list(dict.fromkeys(channels))
        self.token = token
        self.format = format
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.heartbeat = heartbeat
        self.ssl = ssl
        self.keep_books = keep_books
        self._init_books()
        self.connected = asyncio.Event()
        self.connects = 0
        self._wire_books: set[tuple[str, str]] = set()  # books that had data on the current connection
        self._queue: asyncio.Queue[Any] = asyncio.Queue(queue_size)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        if format == "json":
            self._decode = msgspec.json.Decoder(Message).decode
            self._encode = msgspec.json.Encoder().encode
        else:
            self._decode = msgspec.msgpack.Decoder(Message).decode
            self._encode = msgspec.msgpack.Encoder().encode

    # -- lifecycle -----------------------------------------------------------------------------------

    async def __aenter__(self) -> StreamClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        if self._task is None:
            self._session = aiohttp.ClientSession()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="marketfeed client")

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()
        self._fail_pending(StreamError("closed", "client closed"))
        if not self._queue.full():  # ends an iteration in progress
            self._queue.put_nowait(_CLOSED)

    # -- requests ------------------------------------------------------------------------------------

    async def subscribe(self, channels: Iterable[str], timeout: float = 10.0) -> list[str]:
        """Subscribe (remembered for reconnects); returns the concrete channels the server granted.
        Raises StreamError when the server refuses (unknown channel, forbidden)."""
        channels = list(channels)
        for c in channels:
            if c not in self.channels:
                self.channels.append(c)
        try:
            reply = await self._request({"op": "subscribe", "channels": channels}, timeout)
        except StreamError:
            self.channels = [c for c in self.channels if c not in channels]
            raise
        return list(reply.channels)

    async def unsubscribe(self, channels: Iterable[str], timeout: float = 10.0) -> list[str]:
        channels = list(channels)
        self.channels = [c for c in self.channels if c not in channels]
        reply = await self._request({"op": "unsubscribe", "channels": channels}, timeout)
        return list(reply.channels)

    async def snapshot(self, channel: str, timeout: float = 10.0) -> Book:
        """The server's current book for one ``book:venue:symbol`` channel."""
        reply = await self._request({"op": "snapshot", "channel": channel}, timeout)
        return reply.book  # type: ignore[no-any-return]

    async def ping(self, timeout: float = 10.0) -> int:
        """Round trip to the server; returns the server's time (ns)."""
        reply = await self._request({"op": "ping"}, timeout)
        return reply.ts  # type: ignore[no-any-return]

    async def auth(self, token: str, timeout: float = 10.0) -> None:
        """Send a (fresh) token on the live connection; used again after reconnects."""
        self.token = token
        await self._request({"op": "auth", "token": token}, timeout)

    async def _request(self, msg: dict[str, Any], timeout: float) -> Any:
        await asyncio.wait_for(self.connected.wait(), timeout)
        ws = self._ws
        assert ws is not None
        req_id = next(self._ids)
        msg["id"] = req_id
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[req_id] = future
        try:
            await self._send(ws, msg)
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(req_id, None)

    async def _send(self, ws: aiohttp.ClientWebSocketResponse, msg: dict[str, Any]) -> None:
        data = self._encode(msg)
        if self.format == "json":
            await ws.send_str(data.decode())
        else:
            await ws.send_bytes(data)

    # -- iteration -----------------------------------------------------------------------------------

    def __aiter__(self) -> StreamClient:
        return self

    async def __anext__(self) -> Event:
        item = await self._queue.get()
        if item is _CLOSED:
            self._queue.put_nowait(_CLOSED)
            raise StopAsyncIteration
        if self.keep_books:
            self._apply(item)
        return item  # type: ignore[no-any-return]

    async def next_event(self, timeout: float | None = None) -> Event:
        """The next event (``asyncio.TimeoutError`` after ``timeout`` seconds)."""
        return await asyncio.wait_for(self.__anext__(), timeout)

    # -- the connection ------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        while not self._closed:
            healthy = False
            try:
                healthy = await self._connect_once()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("stream connection failed", url=self.url, error=repr(exc))
            except StreamError as exc:
                log.warning("stream refused", url=self.url, error=str(exc))
            finally:
                self.connected.clear()
                self._ws = None
                self._fail_pending(StreamError("disconnected", "connection lost"))
                await self._invalidate_books("stream disconnected")
            if self._closed:
                return
            attempt = 0 if healthy else attempt + 1
            delay = random.uniform(0, min(self.backoff_cap, self.backoff_base * 2**attempt))
            await asyncio.sleep(delay)

    async def _connect_once(self) -> bool:
        """One connection until it ends; True when it got as far as subscribing."""
        assert self._session is not None
        url = self.url + (("&" if "?" in self.url else "?") + "format=msgpack" if self.format == "msgpack" else "")
        async with self._session.ws_connect(url, heartbeat=self.heartbeat, ssl=self.ssl if self.ssl is not None else True, max_msg_size=0) as ws:
            self._ws = ws
            subscribed = False
            self.connects += 1
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    data: bytes | str = msg.data
                elif msg.type is aiohttp.WSMsgType.BINARY:
                    data = msg.data
                else:
                    break
                try:
                    item = self._decode(data)
                except msgspec.DecodeError as exc:
                    log.warning("undecodable stream message", error=str(exc))
                    continue
                t = type(item)
                if t is Trade or t is Book or t is Top or t is Status:
                    if t is Book:
                        self._wire_books.add((item.venue, item.symbol))
                    await self._queue.put(item)
                elif t is Hello:
                    if item.auth == "required" or self.token is not None:
                        if self.token is None:
                            raise StreamError("unauthorized", "the server needs a token")
                        await self._send(ws, {"op": "auth", "token": self.token, "id": 0})
                    if self.channels:
                        await self._send(ws, {"op": "subscribe", "channels": list(self.channels), "id": 0})
                    subscribed = True
                    self.connected.set()
                elif t is Error:
                    future = self._pending.get(item.id) if item.id is not None else None
                    if future is not None and not future.done():
                        future.set_exception(StreamError(item.code, item.message, item.channel))
                    elif item.id == 0 and item.code == "unauthorized":
                        raise StreamError(item.code, item.message)
                    else:
                        log.warning("stream error", code=item.code, message=item.message, channel=item.channel)
                elif t is Ack or t is Pong or t is Snapshot:
                    future = self._pending.get(item.id)
                    if future is not None and not future.done():
                        future.set_result(item)
            return subscribed

    async def _invalidate_books(self, reason: str) -> None:
        """Losing the connection invalidates every book: say so in the event stream, as the daemon
        does after a venue disconnect; the snapshots after resubscribing make them valid again."""
        now = time.time_ns()
        books, self._wire_books = self._wire_books, set()
        for venue, symbol in sorted(books):
            await self._queue.put(Status(venue, symbol, now, BOOK_INVALID, reason))

    def _fail_pending(self, exc: StreamError) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(exc)
        self._pending.clear()
