"""The bot-facing WebSocket stream (``[server]``): an aiohttp endpoint, fed synchronously by the
daemon's ``DerivedFeed`` (marketfeed.top) with every event batch.

Channels are ``kind:venue:symbol`` with kind ``book``, ``trade``, ``top`` or ``status``; venue and
symbol may be patterns (``trade:okx:*``), expanded against the configured venues and symbols when
subscribing. A ``book`` channel also carries the statuses of its symbol (``book_invalid`` above all);
``status:venue:*`` also carries the venue's connection-level statuses.

Gap-free late joiners: ``publish`` runs on the event loop between client messages, right after the
event books (marketfeed.eventbooks) applied the batch. A subscription to a book therefore queues the
book's current state as a ``snapshot`` book event, then joins the route, so the client gets exactly
the events after that state. While the book is invalid the client gets a ``book_invalid`` status
instead, and the venue's next snapshot (always the next book event after ``book_invalid``) follows.

Each connection has a bounded send queue and its own writer task; ``publish`` only appends encoded
frames (each event is encoded once per format, whatever the number of clients). A client whose
queue is full is re-snapshotted (its queue dropped, ``book_invalid`` then a snapshot for each of its
books; trades and tops lost are reported) or closed with 1013, by ``on_slow``; one that keeps
falling behind is closed too. Nothing a client does waits on another one.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from fnmatch import fnmatchcase
from typing import Any

import msgspec
import structlog
from aiohttp import WSMsgType, web

from marketfeed.config import Config, ConfigError
from marketfeed.eventbooks import EventBooks
from marketfeed.events import BOOK_INVALID, Book, Event, Status, Top, Trade
from marketfeed.logging import RateLimitedLog
from marketfeed.options import STREAM_KINDS, ServerConfig
from marketfeed.stream.auth import OPEN, Authenticator, AuthError, Grant
from marketfeed.stream.messages import Ack, Error, Hello, Pong, Snapshot

log = structlog.get_logger("marketfeed.stream")

PROTOCOL_VERSION = 1
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013  # slow consumer
Key = tuple[str, str, str | None]  # (kind, venue, symbol); symbol None: connection-level statuses

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()
_json_decode = msgspec.json.Decoder()
_msgpack_decode = msgspec.msgpack.Decoder()


WRITE_LIMIT = 256 * 1024  # bytes in a connection's transport buffer before frames wait in its queue


def ws_frame(payload: bytes, binary: bool) -> bytes:
    """A complete, final, unmasked WebSocket frame (RFC 6455 5.2): what a server sends. Built once per
    event and written as is to every subscriber's transport, instead of framing it per client."""
    n = len(payload)
    first = 0x82 if binary else 0x81
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def channel_name(key: Key) -> str:
    return f"{key[0]}:{key[1]}:{key[2] if key[2] is not None else '*'}"


class Client:
    """One connection: its grant, subscriptions, bounded send queue and writer task."""

    def __init__(self, server: StreamServer, ws: web.WebSocketResponse, request: web.Request, binary: bool, grant: Grant | None) -> None:
        self.server = server
        self.ws = ws
        self.request = request
        self.binary = binary
        self.grant = grant
        self.keys: dict[Key, set[str]] = {}  # subscribed key -> the channel strings that asked for it
        self.queue: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.closing = False
        self.resync = False  # queue dropped: frames are dropped too until the re-snapshot goes out
        self.errors = 0
        cfg = server.config
        self.tokens = float(cfg.rate_burst)
        self.refilled = time.monotonic()
        self.last_message = time.monotonic()
        self.resnapshots: deque[float] = deque()
        self.sent = 0
        self.pending: list[bytes] = []  # frames to write at the end of this loop iteration
        self.pending_bytes = 0
        self.dropped = 0
        self.writer: asyncio.Task[None] | None = None
        self.close_task: asyncio.Task[None] | None = None
        self.peer = request.remote
        self.transport: asyncio.Transport | None = request.transport  # type: ignore[assignment]

    # -- sending -------------------------------------------------------------------------------------

    def encode(self, obj: Any) -> bytes:
        """``obj`` as a ready WebSocket frame in this client's format."""
        if self.binary:
            return ws_frame(_msgpack.encode(obj), True)
        return ws_frame(_json.encode(obj), False)

    def send(self, obj: Any) -> None:
        """A reply or notice to this client (never dropped while a re-snapshot is pending)."""
        self.push(self.encode(obj), reply=True)

    def push(self, frame: bytes, reply: bool = False) -> None:
        if self.closing:
            return
        if self.resync and not reply:
            self.dropped += 1
            return
        queue = self.queue
        if len(queue) >= self.server.config.send_queue:
            self.overflow()
            if self.closing or (self.resync and not reply):
                if not reply:
                    self.dropped += 1
                return
        if not queue:
            # the common case: nothing waiting and room in the transport. The frame is written at the
            # end of this loop iteration together with any others published meanwhile: one system
            # call per client for everything ready at once (a saturated loop batches by itself), no
            # task switch, and no delay when it is idle.
            transport = self.transport
            if transport is not None and transport.get_write_buffer_size() + self.pending_bytes <= WRITE_LIMIT:
                if not self.pending:
                    self.server.mark_dirty(self)
                self.pending.append(frame)
                self.pending_bytes += len(frame)
                return
        queue.append(frame)
        if len(queue) == 1:
            self.wake.set()

    def overflow(self) -> None:
        cfg = self.server.config
        now = time.monotonic()
        while self.resnapshots and now - self.resnapshots[0] > 60.0:
            self.resnapshots.popleft()
        lost = len(self.queue)
        self.queue.clear()
        self.dropped += lost
        self.server.counters["slow_clients"] += 1
        if cfg.on_slow == "close" or len(self.resnapshots) >= cfg.max_resnapshots:
            self.close(CLOSE_TRY_AGAIN, "slow consumer")
            return
        self.resnapshots.append(now)
        self.server.counters["resnapshots"] += 1
        # The snapshots go out once the batch being published is over: the event books already hold
        # the whole batch, so a snapshot taken now would be followed by events it already contains.
        # Until then everything for this client is dropped; the snapshots cover the books.
        self.resync = True
        asyncio.get_running_loop().call_soon(self._resnapshot)

    def _resnapshot(self) -> None:
        if self.closing:
            return
        self.resync = False
        lost = self.dropped
        self.queue.append(self.encode(Error("slow_consumer", f"too slow: {lost} messages dropped so far; books re-sent")))
        now = time.time_ns()
        for key in self.keys:
            if key[0] == "book":
                self.queue.append(self.encode(Status(key[1], key[2], now, BOOK_INVALID, "slow client: events dropped")))
                self.queue_snapshot(key)
        self.wake.set()

    def queue_snapshot(self, key: Key) -> None:
        """The book's current state, or book_invalid while it has none (the venue's next snapshot
        follows through the route)."""
        state = self.server.books.get(key[1], key[2])  # type: ignore[arg-type]
        snap = state.snapshot() if state is not None else None
        if snap is not None:
            self.queue.append(self.encode(snap))
        else:
            reason = state.reason if state is not None else "no snapshot yet"
            self.queue.append(self.encode(Status(key[1], key[2], time.time_ns(), BOOK_INVALID, f"no valid book: {reason}")))
        self.wake.set()

    def flush(self) -> None:
        """Write the frames held for this loop iteration (in order, before anything queued after them)."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        self.pending_bytes = 0
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        self.sent += len(pending)

    async def write_loop(self) -> None:
        """Writes what waits in the queue, at the pace the client reads (transport flow control)."""
        queue = self.queue
        drain = getattr(self.request.protocol, "_drain_helper", None)
        try:
            while True:
                if not queue:
                    if self.closing:
                        return
                    self.wake.clear()
                    await self.wake.wait()
                    continue
                transport = self.transport
                if transport is None or transport.is_closing():
                    return
                if transport.get_write_buffer_size() > WRITE_LIMIT:
                    if drain is not None:
                        await drain()  # until the transport resumes writing (below its low-water mark)
                    if transport.get_write_buffer_size() > WRITE_LIMIT:
                        await asyncio.sleep(0.005)
                    continue
                self.flush()
                while queue and transport.get_write_buffer_size() <= WRITE_LIMIT:
                    transport.write(queue.popleft())
                    self.sent += 1
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        except Exception as exc:  # never take the server down with one client
            log.warning("stream writer failed", peer=self.peer, error=repr(exc))

    def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.wake.set()
        self.server.detach(self)
        self.close_task = asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        """Send what is queued (the error that explains the close), then the close frame; a client that
        does not read within a second is cut off."""
        try:
            self.flush()
            if self.writer is not None and not self.writer.done():
                await asyncio.wait_for(asyncio.shield(self.writer), 1.0)
            await asyncio.wait_for(self.ws.close(code=code, message=reason.encode()[:120]), 1.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            transport = self.request.transport
            if transport is not None:
                transport.abort()  # a client that does not read cannot receive a close frame either

    # -- receiving -----------------------------------------------------------------------------------

    def strike(self, error: Error) -> None:
        self.errors += 1
        self.server.counters["client_errors"] += 1
        self.send(error)
        if self.errors >= self.server.config.max_errors:
            self.close(CLOSE_POLICY, "too many bad messages")

    def allow_message(self) -> bool:
        cfg = self.server.config
        now = time.monotonic()
        self.tokens = min(float(cfg.rate_burst), self.tokens + (now - self.refilled) * cfg.rate_limit)
        self.refilled = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class StreamServer:
    def __init__(self, config: Config, books: EventBooks, server_config: ServerConfig | None = None) -> None:
        cfg = server_config or config.server
        if cfg is None:
            raise ValueError("no [server] configuration")
        self.config = cfg
        self.books = books
        try:
            self.auth = Authenticator(cfg)
        except ValueError as exc:  # a token variable not set, an unreadable key: the CLI says so, exit 2
            raise ConfigError(str(exc)) from None
        self.routes: dict[Key, set[Client]] = {}
        self.clients: set[Client] = set()
        self.catalog: dict[str, dict[str, list[str]]] = {}
        self.update_venues(config)
        self._dirty: list[Client] = []  # clients with frames held for the end of this iteration
        self.counters = {"connections": 0, "rejected": 0, "client_errors": 0, "slow_clients": 0, "resnapshots": 0, "events": 0}
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self.port: int | None = None
        self._log = RateLimitedLog(log, interval_s=10.0)

    def mark_dirty(self, client: Client) -> None:
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self._flush_dirty)
        self._dirty.append(client)

    def _flush_dirty(self) -> None:
        dirty, self._dirty = self._dirty, []
        for client in dirty:
            try:
                client.flush()
            except Exception as exc:  # one broken transport must not stop the others' writes
                self._log.warning(("flush", type(exc).__name__), time.time_ns(), "stream write failed", peer=client.peer, error=repr(exc))

    def update_venues(self, config: Config) -> None:
        """What can be subscribed (kind -> venue -> symbols), from the venues of ``config``; call it
        again after a reload changed the venues or symbols (existing subscriptions are kept)."""
        catalog: dict[str, dict[str, list[str]]] = {k: {} for k in STREAM_KINDS}
        for venue, vc in config.venues.items():
            if "trades" in vc.channels:
                catalog["trade"][venue] = list(vc.symbols)
            if "book" in vc.channels:
                catalog["book"][venue] = list(vc.symbols)
                tops = [s for s in vc.symbols if (tc := vc.top_symbols.get(s, vc.top)) is not None and tc.enabled]
                if tops:
                    catalog["top"][venue] = tops
            catalog["status"][venue] = list(vc.symbols)
        self.catalog = catalog

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "wss" if self.config.tls_cert else "ws"
        return f"{scheme}://{self.config.host}:{self.port}{self.config.path}"

    async def start(self) -> None:
        cfg = self.config
        ctx: ssl.SSLContext | None = None
        if cfg.tls_cert is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
        app = web.Application()
        app.router.add_get(cfg.path, self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port, ssl_context=ctx)
        await site.start()
        addresses = self._runner.addresses  # the bound port when the config says 0
        self.port = int(addresses[0][1]) if addresses else cfg.port
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        log.info("stream listening", url=self.url, auth="required" if self.auth.required else "open")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for client in list(self.clients):
            client.close(1001, "server shutting down")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _sweep(self) -> None:
        """Close idle connections (no subscriptions and no messages for idle_timeout) and those
        whose token expired."""
        cfg = self.config
        while True:
            await asyncio.sleep(min(1.0, cfg.idle_timeout / 4))
            now = time.monotonic()
            wall = time.time()
            for client in list(self.clients):
                grant = client.grant
                if grant is not None and grant.expires is not None and wall > grant.expires:
                    client.send(Error("token_expired", "the token expired: send a fresh one with {\"op\":\"auth\"}"))
                    client.close(CLOSE_POLICY, "token expired")
                elif not client.keys and now - client.last_message > cfg.idle_timeout:
                    client.close(1000, "idle")
                elif grant is None and now - client.last_message > cfg.auth_timeout:
                    client.close(CLOSE_POLICY, "authentication timeout")

    # -- the feed ------------------------------------------------------------------------------------

    def publish(self, events: list[Event]) -> None:
        """Queue each event to its subscribers. Synchronous, never waits."""
        routes = self.routes
        if not routes:
            return
        for e in events:
            t = type(e)
            if t is Book:
                subs = routes.get(("book", e.venue, e.symbol))
            elif t is Trade:
                subs = routes.get(("trade", e.venue, e.symbol))
            elif t is Top:
                subs = routes.get(("top", e.venue, e.symbol))
            elif t is Status:
                a = routes.get(("status", e.venue, e.symbol))
                b = routes.get(("book", e.venue, e.symbol)) if e.symbol is not None else None
                subs = (a | b) if a and b else (a or b)
            else:
                continue
            if not subs:
                continue
            self.counters["events"] += 1
            text = binary = None  # each event is encoded and framed once per format
            for client in tuple(subs):
                if client.binary:
                    if binary is None:
                        binary = ws_frame(_msgpack.encode(e), True)
                    client.push(binary)
                else:
                    if text is None:
                        text = ws_frame(_json.encode(e), False)
                    client.push(text)

    # -- connections ---------------------------------------------------------------------------------

    def _origin_allowed(self, origin: str | None) -> bool:
        if origin is None:  # not a browser
            return True
        allowed = self.config.allowed_origins
        return "*" in allowed or origin in allowed

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        if not self._origin_allowed(request.headers.get("Origin")):
            self.counters["rejected"] += 1
            raise web.HTTPForbidden(text="origin not allowed\n")
        fmt = request.query.get("format", "json")
        if fmt not in ("json", "msgpack"):
            raise web.HTTPBadRequest(text="format must be json or msgpack\n")
        grant: Grant | None = None if self.auth.required else OPEN
        token = request.query.get("token")
        header = request.headers.get("Authorization", "")
        if token is None and header.lower().startswith("bearer "):
            token = header[7:].strip()
        if token is not None and self.auth.required:
            try:
                grant = self.auth.check(token, time.time())
            except AuthError as exc:
                self.counters["rejected"] += 1
                raise web.HTTPUnauthorized(text=f"{exc}\n") from None
        ws = web.WebSocketResponse(heartbeat=cfg.heartbeat, max_msg_size=4 * cfg.max_message_bytes, compress=False)
        await ws.prepare(request)
        client = Client(self, ws, request, fmt == "msgpack", grant)
        self.clients.add(client)
        self.counters["connections"] += 1
        client.writer = asyncio.get_running_loop().create_task(client.write_loop())
        client.send(Hello(PROTOCOL_VERSION, "ok" if grant is not None else "required", cfg.heartbeat))
        try:
            async for msg in ws:
                if client.closing:
                    break
                if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
                    self._on_message(client, msg.data)
                elif msg.type is WSMsgType.ERROR:
                    break
        except Exception as exc:  # a broken client must not reach aiohttp's error page
            self._log.warning(("read", type(exc).__name__), time.time_ns(), "stream read failed", peer=client.peer, error=repr(exc))
        finally:
            if client.close_task is not None:  # the server closes it: let the close finish
                await client.close_task
            else:
                client.closing = True
                client.queue.clear()
                client.wake.set()
                self.detach(client)
            if client.writer is not None:
                client.writer.cancel()
            if not ws.closed:
                await ws.close()
        return ws

    def detach(self, client: Client) -> None:
        self.clients.discard(client)
        for key in client.keys:
            subs = self.routes.get(key)
            if subs is not None:
                subs.discard(client)
                if not subs:
                    del self.routes[key]
        client.keys = {}

    def _on_message(self, client: Client, data: str | bytes) -> None:
        client.last_message = time.monotonic()
        cfg = self.config
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        if size > cfg.max_message_bytes:
            client.strike(Error("too_large", f"message of {size} bytes is over the limit of {cfg.max_message_bytes}"))
            return
        if not client.allow_message():
            client.strike(Error("rate_limited", f"more than {cfg.rate_limit:g} messages per second"))
            return
        try:
            msg = _json_decode.decode(data) if isinstance(data, str) else _msgpack_decode.decode(data)
        except msgspec.DecodeError:
            client.strike(Error("bad_json", "not a JSON (text) or MessagePack (binary) message"))
            return
        if not isinstance(msg, dict):
            client.strike(Error("bad_request", "expected an object such as {\"op\":\"subscribe\",...}"))
            return
        req_id = msg.get("id")
        if not (req_id is None or isinstance(req_id, (int, str)) and not isinstance(req_id, bool)):
            client.strike(Error("bad_request", "id must be an integer or a string"))
            return
        op = msg.get("op")
        if op == "auth":
            self._op_auth(client, msg, req_id)
            return
        if client.grant is None:
            client.strike(Error("unauthorized", "authenticate first: {\"op\":\"auth\",\"token\":...}", req_id))
            return
        if op == "subscribe":
            self._op_subscribe(client, msg, req_id)
        elif op == "unsubscribe":
            self._op_unsubscribe(client, msg, req_id)
        elif op == "ping":
            client.send(Pong(req_id, time.time_ns()))
        elif op == "snapshot":
            self._op_snapshot(client, msg, req_id)
        else:
            client.strike(Error("unknown_op", f"unknown op {op!r} (auth, subscribe, unsubscribe, ping, snapshot)", req_id))

    def _op_auth(self, client: Client, msg: dict[str, Any], req_id: Any) -> None:
        if not self.auth.required:
            client.send(Ack("auth", req_id))
            return
        try:
            grant = self.auth.check(msg.get("token"), time.time())
        except AuthError as exc:
            self.counters["rejected"] += 1
            client.strike(Error("unauthorized", str(exc), req_id))
            if client.grant is None:
                client.close(CLOSE_POLICY, "authentication failed")
            return
        client.grant = grant
        # a refreshed token may allow less: leave what it no longer allows
        for key in [k for k in client.keys if not self._allowed(grant, k)]:
            self._leave(client, key)
            client.send(Error("forbidden", "no longer permitted by the new token", req_id, channel_name(key)))
        client.send(Ack("auth", req_id))

    def _channels(self, client: Client, msg: dict[str, Any], req_id: Any) -> list[str] | None:
        channels = msg.get("channels")
        if isinstance(channels, str):
            channels = [channels]
        if not isinstance(channels, list) or not channels or not all(isinstance(c, str) for c in channels):
            client.strike(Error("bad_request", "channels must be a non-empty list of strings", req_id))
            return None
        if len(channels) > 1000:
            client.strike(Error("bad_request", "at most 1000 channels per request", req_id))
            return None
        return channels

    def expand(self, channel: str) -> list[Key] | str:
        """The concrete keys of a channel pattern, or why it names nothing."""
        parts = channel.split(":")
        if len(parts) != 3 or not all(parts):
            return f"{channel!r} is not kind:venue:symbol"
        kind, venue_p, symbol_p = parts
        if kind not in self.catalog:
            return f"unknown kind {kind!r} (one of {', '.join(STREAM_KINDS)})"
        keys: list[Key] = []
        for venue, symbols in self.catalog[kind].items():
            if not fnmatchcase(venue, venue_p):
                continue
            keys.extend((kind, venue, s) for s in symbols if fnmatchcase(s, symbol_p))
            if kind == "status" and symbol_p == "*":
                keys.append(("status", venue, None))
        if not keys:
            return f"no {kind} channel matches {channel!r}"
        return keys

    def _allowed(self, grant: Grant, key: Key) -> bool:
        return grant.allows(key[0], key[1], key[2] if key[2] is not None else "*")

    def _op_subscribe(self, client: Client, msg: dict[str, Any], req_id: Any) -> None:
        channels = self._channels(client, msg, req_id)
        if channels is None:
            return
        grant = client.grant
        assert grant is not None
        wanted: list[tuple[str, Key]] = []
        for channel in channels:
            keys = self.expand(channel)
            if isinstance(keys, str):
                client.strike(Error("unknown_channel", keys, req_id, channel))
                return
            permitted = [k for k in keys if self._allowed(grant, k)]
            if not permitted:
                client.strike(Error("forbidden", "this token may not subscribe to it", req_id, channel))
                return
            wanted.extend((channel, k) for k in permitted)
        # all checked: nothing is subscribed when any channel is refused
        client.send(Ack("subscribe", req_id, sorted({channel_name(k) for _, k in wanted})))
        for channel, key in wanted:
            asked = client.keys.get(key)
            if asked is not None:
                asked.add(channel)
                continue
            client.keys[key] = {channel}
            if key[0] == "book":
                client.queue_snapshot(key)  # the snapshot first, then every event after it
            self.routes.setdefault(key, set()).add(client)

    def _leave(self, client: Client, key: Key) -> None:
        client.keys.pop(key, None)
        subs = self.routes.get(key)
        if subs is not None:
            subs.discard(client)
            if not subs:
                del self.routes[key]

    def _op_unsubscribe(self, client: Client, msg: dict[str, Any], req_id: Any) -> None:
        channels = self._channels(client, msg, req_id)
        if channels is None:
            return
        left: list[str] = []
        for channel in channels:
            keys = self.expand(channel)
            if isinstance(keys, str):
                client.strike(Error("unknown_channel", keys, req_id, channel))
                return
            for key in keys:  # everything the channel matches, whichever subscription added it
                if key in client.keys:
                    self._leave(client, key)
                    left.append(channel_name(key))
        client.send(Ack("unsubscribe", req_id, sorted(left)))

    def _op_snapshot(self, client: Client, msg: dict[str, Any], req_id: Any) -> None:
        channel = msg.get("channel")
        if not isinstance(channel, str):
            client.strike(Error("bad_request", "snapshot needs a channel such as book:binance:BTC-USDT", req_id))
            return
        keys = self.expand(channel)
        if isinstance(keys, str) or len(keys) != 1 or keys[0][0] != "book":
            client.strike(Error("unknown_channel", "snapshot needs one book channel (no patterns)", req_id, channel))
            return
        key = keys[0]
        assert client.grant is not None
        if not self._allowed(client.grant, key):
            client.strike(Error("forbidden", "this token may not read it", req_id, channel))
            return
        state = self.books.get(key[1], key[2])  # type: ignore[arg-type]
        snap = state.snapshot() if state is not None else None
        if snap is None:
            reason = state.reason if state is not None else "no snapshot yet"
            client.send(Error("book_invalid", f"no valid book: {reason}", req_id, channel))
        else:
            client.send(Snapshot(req_id, channel, snap))
