"""The stream server on its own (real sockets, raw aiohttp WebSocket clients), fed by a DerivedFeed
with hand-made events, so each protocol rule is checked exactly: acks and errors with the request's
id, snapshots before deltas, book_invalid, slow clients, limits, authentication, Origin, TLS."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from marketfeed.config import Config, ConfigError, VenueConfig, parse_config
from marketfeed.events import BOOK_INVALID, Book, Status, Trade
from marketfeed.options import JwtConfig, ServerConfig, TokenConfig
from marketfeed.stream.auth import make_hs256_jwt
from marketfeed.stream.server import StreamServer
from marketfeed.top import DerivedFeed
from tests.integration.live import wait_until

pytestmark = pytest.mark.timeout(30)

V = "binance"
SECRET = "k" * 40
STATIC = "static-secret-token-1"


class Harness:
    def __init__(self, **server: Any) -> None:
        venue = VenueConfig(symbols=["BTC-USDT", "ETH-USDT"])
        self.config = Config(venues={V: venue, "okx": VenueConfig(symbols=["BTC-USDT"])}, sinks=[], server=ServerConfig(port=0, **server))
        self.feed = DerivedFeed(self.config)
        self.server = StreamServer(self.config, self.feed.books)
        self.feed.outputs.append(self.server.publish)
        self.session: aiohttp.ClientSession | None = None
        self.seq = 100

    async def __aenter__(self) -> Harness:
        await self.server.start()
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()
        await self.server.stop()

    async def connect(self, query: str = "", hello: bool = True, **kw: Any) -> aiohttp.ClientWebSocketResponse:
        assert self.session is not None
        url = f"ws://127.0.0.1:{self.server.port}/v1/stream" + (f"?{query}" if query else "")
        ws = await self.session.ws_connect(url, **kw)
        if hello:
            assert (await recv(ws))["type"] == "hello"
        return ws

    def snapshot(self, symbol: str = "BTC-USDT") -> Book:
        self.seq += 1
        book = Book(V, symbol, time.time_ns(), None, self.seq, True, [(100.0, 1.0), (99.0, 2.0)], [(101.0, 1.0), (102.0, 3.0)])
        self.feed.publish([book])
        return book

    def diff(self, symbol: str = "BTC-USDT", price: float = 99.5) -> Book:
        self.seq += 1
        book = Book(V, symbol, time.time_ns(), None, self.seq, False, [(price, float(self.seq))], [])
        return book


async def recv(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> Any:
    msg = await ws.receive(timeout)
    if msg.type is aiohttp.WSMsgType.TEXT:
        return json.loads(msg.data)
    if msg.type is aiohttp.WSMsgType.BINARY:
        return msgspec.msgpack.decode(msg.data)
    return msg  # a close


async def request(ws: aiohttp.ClientWebSocketResponse, **msg: Any) -> Any:
    await ws.send_str(json.dumps(msg))
    return await recv(ws)


async def test_ping_subscribe_ack_and_errors_carry_the_request_id() -> None:
    async with Harness() as h:
        ws = await h.connect()
        pong = await request(ws, op="ping", id="p1")
        assert pong["type"] == "pong" and pong["id"] == "p1"
        ack = await request(ws, op="subscribe", channels=["trade:*:BTC-USDT"], id=1)
        assert ack == {"type": "ack", "op": "subscribe", "id": 1, "channels": ["trade:binance:BTC-USDT", "trade:okx:BTC-USDT"]}
        err = await request(ws, op="subscribe", channels=["book:kraken:BTC-USD"], id=2)
        assert (err["type"], err["code"], err["id"], err["channel"]) == ("error", "unknown_channel", 2, "book:kraken:BTC-USD")
        err = await request(ws, op="subscribe", channels=["candles:binance:BTC-USDT"], id=3)
        assert (err["code"], err["id"]) == ("unknown_channel", 3)
        err = await request(ws, op="fly", id=4)
        assert (err["code"], err["id"]) == ("unknown_op", 4)
        err = await request(ws, op="subscribe", channels=5, id=5)
        assert (err["code"], err["id"]) == ("bad_request", 5)
        await ws.send_str("{not json")
        assert (await recv(ws))["code"] == "bad_json"
        # the trade arrives as the EVENTS.md JSON, unchanged
        trade = Trade(V, "BTC-USDT", 1, 2, "42", 100.5, 0.25, "buy")
        h.feed.publish([trade, Trade(V, "ETH-USDT", 1, 2, "43", 1.0, 1.0, "sell")])
        assert (await ws.receive(5)).data == msgspec.json.encode(trade).decode()
        ack = await request(ws, op="unsubscribe", channels=["trade:okx:*"], id=6)
        assert ack["channels"] == ["trade:okx:BTC-USDT"]
        await ws.close()


async def test_book_subscription_snapshot_first_then_deltas_and_invalid_until_the_next_snapshot() -> None:
    async with Harness() as h:
        ws = await h.connect()
        # no book yet: the client is told, and gets the venue's snapshot when it comes
        await request(ws, op="subscribe", channels=["book:binance:BTC-USDT"], id=1)
        status = await recv(ws)
        assert (status["type"], status["state"], status["symbol"]) == ("status", BOOK_INVALID, "BTC-USDT")
        err = await request(ws, op="snapshot", channel="book:binance:BTC-USDT", id=9)
        assert (err["type"], err["code"], err["id"]) == ("error", "book_invalid", 9)
        first = h.snapshot()
        assert msgspec.json.decode((await ws.receive(5)).data.encode(), type=Book) == first
        d1 = h.diff()
        h.feed.publish([d1])
        assert (await recv(ws))["seq"] == d1.seq
        # a second client joins late: the daemon's current book, then the next delta
        late = await h.connect()
        await request(late, op="subscribe", channels=["book:binance:*"], id=1)
        snaps = [await recv(late), await recv(late)]
        btc = next(s for s in snaps if s["symbol"] == "BTC-USDT")
        eth = next(s for s in snaps if s["symbol"] == "ETH-USDT")
        assert btc["snapshot"] is True and btc["seq"] == d1.seq
        assert sorted(map(tuple, btc["bids"]), reverse=True) == [(100.0, 1.0), (99.5, float(d1.seq)), (99.0, 2.0)]
        assert eth["type"] == "status" and eth["state"] == BOOK_INVALID
        d2 = h.diff(price=98.0)
        h.feed.publish([d2])
        assert (await recv(late))["seq"] == d2.seq
        assert (await recv(ws))["seq"] == d2.seq
        # request-response snapshot: the current book, with the request's id
        reply = await request(late, op="snapshot", channel="book:binance:BTC-USDT", id=7)
        assert reply["type"] == "snapshot" and reply["id"] == 7 and reply["book"]["seq"] == d2.seq
        assert reply["book"]["bids"] == [[100.0, 1.0], [99.5, float(d1.seq)], [99.0, 2.0], [98.0, float(d2.seq)]]
        # the venue's book goes invalid: both are told, the next snapshot makes it valid again
        h.feed.publish([Status(V, "BTC-USDT", 5, BOOK_INVALID, "gap")])
        assert (await recv(ws))["state"] == BOOK_INVALID
        assert (await recv(late))["state"] == BOOK_INVALID
        err = await request(late, op="snapshot", channel="book:binance:BTC-USDT", id=8)
        assert (err["code"], err["id"]) == ("book_invalid", 8)
        again = h.snapshot()
        assert (await recv(ws))["seq"] == again.seq


async def test_msgpack_on_request() -> None:
    async with Harness() as h:
        ws = await h.connect("format=msgpack")
        await ws.send_bytes(msgspec.msgpack.encode({"op": "subscribe", "channels": ["book:binance:BTC-USDT"], "id": 1}))
        assert (await recv(ws))["type"] == "ack"
        assert (await recv(ws))["state"] == BOOK_INVALID
        snap = h.snapshot()
        msg = await ws.receive(5)
        assert msg.type is aiohttp.WSMsgType.BINARY
        assert msgspec.msgpack.decode(msg.data, type=Book) == snap


async def test_bad_input_is_answered_then_closed_when_repeated() -> None:
    async with Harness(max_errors=3, max_message_bytes=1000) as h:
        ws = await h.connect()
        big = json.dumps({"op": "ping", "pad": "x" * 2000})
        assert (await request(ws, op="nope"))["code"] == "unknown_op"
        await ws.send_str(big)
        assert (await recv(ws))["code"] == "too_large"
        await ws.send_bytes(b"\xff\x00garbage")
        assert (await recv(ws))["code"] == "bad_json"
        closed = await recv(ws)
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 1008
        # the server is fine: a new client is served
        ws2 = await h.connect()
        assert (await request(ws2, op="ping", id=1))["type"] == "pong"


async def test_rate_limit_on_client_messages() -> None:
    async with Harness(rate_limit=1.0, rate_burst=5, max_errors=100) as h:
        ws = await h.connect()
        for i in range(10):
            await ws.send_str(json.dumps({"op": "ping", "id": i}))
        replies = [await recv(ws) for _ in range(10)]
        assert [r["type"] for r in replies].count("pong") == 5
        assert all(r["code"] == "rate_limited" for r in replies if r["type"] == "error")


def flood(n: int = 300) -> list[Status]:
    """Large events, more than the kernel's socket buffers and the transport's limit take at once:
    a client that does not read while they are published falls behind."""
    return [Status(V, "BTC-USDT", i, "stale", "x" * 100_000) for i in range(n)]


async def test_slow_client_is_closed_1013_and_others_are_served() -> None:
    async with Harness(send_queue=10, on_slow="close") as h:
        slow = await h.connect()
        await request(slow, op="subscribe", channels=["status:binance:BTC-USDT"], id=1)
        # one synchronous batch: the client cannot read any of it meanwhile
        h.feed.publish(flood())
        while True:
            m = await recv(slow)
            if not isinstance(m, dict):
                break
            assert m["state"] == "stale"
        assert m.type is aiohttp.WSMsgType.CLOSE and m.data == 1013
        assert h.server.counters["slow_clients"] == 1
        await wait_until(lambda: not h.server.clients, "slow client removed")
        # others are served
        ok = await h.connect()
        await request(ok, op="subscribe", channels=["trade:binance:BTC-USDT"], id=1)
        h.feed.publish([Trade(V, "BTC-USDT", 99, None, "99", 1.0, 1.0, None)])
        assert (await recv(ok))["trade_id"] == "99"


async def test_slow_client_is_resnapshotted_consistently() -> None:
    async with Harness(send_queue=10, on_slow="resnapshot") as h:
        h.snapshot()
        ws = await h.connect()
        await request(ws, op="subscribe", channels=["book:binance:BTC-USDT"], id=1)
        assert (await recv(ws))["snapshot"] is True
        diffs = [h.diff(price=90.0 + i) for i in range(5)]
        h.feed.publish([*flood(), *diffs])  # a book channel carries its symbol's statuses
        while (m := await recv(ws))["type"] == "status":  # what the kernel took before the overflow
            assert m["state"] == "stale"
        assert (m["type"], m.get("code")) == ("error", "slow_consumer"), m
        assert (await recv(ws))["state"] == BOOK_INVALID
        snap = await recv(ws)
        # the re-snapshot is the book after the whole batch: nothing in it is sent again
        truth = h.feed.books.get(V, "BTC-USDT").snapshot()
        assert snap["snapshot"] is True and snap["seq"] == diffs[-1].seq == truth.seq
        assert snap["bids"] == [list(level) for level in truth.bids]
        nxt = h.diff(price=50.0)
        h.feed.publish([nxt])
        assert (await recv(ws))["seq"] == nxt.seq
        assert h.server.counters["resnapshots"] == 1


async def test_static_tokens_query_header_first_message_and_permissions() -> None:
    tokens = [TokenConfig(token=STATIC, channels=["trade:binance:*"])]
    async with Harness(tokens=tokens, auth_timeout=0.3) as h:
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await h.connect("token=wrong-token-0000000")
        assert exc.value.status == 401
        ws = await h.connect(f"token={STATIC}")
        assert (await request(ws, op="subscribe", channels=["trade:binance:BTC-USDT"], id=1))["type"] == "ack"
        err = await request(ws, op="subscribe", channels=["book:binance:BTC-USDT"], id=2)
        assert (err["code"], err["id"]) == ("forbidden", 2)
        ws2 = await h.connect(headers={"Authorization": f"Bearer {STATIC}"})
        assert (await request(ws2, op="ping", id=1))["type"] == "pong"
        # first message auth
        ws3 = await h.connect(hello=False)
        assert (await recv(ws3))["auth"] == "required"
        assert (await request(ws3, op="subscribe", channels=["trade:binance:*"], id=1))["code"] == "unauthorized"
        assert (await request(ws3, op="auth", token=STATIC, id=2)) == {"type": "ack", "op": "auth", "id": 2, "channels": []}
        assert (await request(ws3, op="subscribe", channels=["trade:binance:*"], id=3))["type"] == "ack"
        # a wrong first-message token closes; so does silence past auth_timeout
        ws4 = await h.connect()
        assert (await request(ws4, op="auth", token="nope", id=1))["code"] == "unauthorized"
        assert (await recv(ws4)).data == 1008
        ws5 = await h.connect()
        closed = await recv(ws5, timeout=10)
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 1008


async def test_jwt_expiry_closes_and_a_later_auth_refreshes() -> None:
    async with Harness(jwt=JwtConfig(hs256_secret=SECRET)) as h:
        claims = {"sub": "bot", "channels": ["book:binance:*", "trade:*:*"]}
        expired = make_hs256_jwt({**claims, "exp": time.time() - 1}, SECRET)
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await h.connect(f"token={expired}")
        # valid for one second, refreshed before then: stays open past the first expiry
        ws = await h.connect(f"token={make_hs256_jwt({**claims, 'exp': time.time() + 1.0}, SECRET)}")
        assert (await request(ws, op="subscribe", channels=["trade:okx:*"], id=1))["type"] == "ack"
        fresh = make_hs256_jwt({"sub": "bot", "channels": ["trade:okx:*"], "exp": time.time() + 60}, SECRET)
        assert (await request(ws, op="auth", token=fresh, id=2))["type"] == "ack"
        # the refreshed token allows less: book channels are refused now
        assert (await request(ws, op="subscribe", channels=["book:binance:BTC-USDT"], id=3))["code"] == "forbidden"
        other = await h.connect(f"token={make_hs256_jwt({**claims, 'exp': time.time() + 1.0}, SECRET)}")
        # the unrefreshed one is closed when its token expires
        note = await recv(other, timeout=10)
        assert note["code"] == "token_expired"
        assert (await recv(other)).data == 1008
        assert (await request(ws, op="ping", id=4))["type"] == "pong"


async def test_origin_check() -> None:
    async with Harness(allowed_origins=["https://desk.example"]) as h:
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await h.connect(headers={"Origin": "https://evil.example"})
        assert exc.value.status == 403
        ws = await h.connect(headers={"Origin": "https://desk.example"})
        assert (await request(ws, op="ping"))["type"] == "pong"


async def test_tls_from_certificate_paths(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    async with Harness(tls_cert=str(cert), tls_key=str(key)) as h:
        assert h.server.url.startswith("wss://")
        ctx = ssl.create_default_context(cafile=str(cert))
        assert h.session is not None
        ws = await h.session.ws_connect(h.server.url, ssl=ctx)
        assert (await recv(ws))["type"] == "hello"
        with pytest.raises(aiohttp.ClientError):  # plain ws to a TLS port
            await h.session.ws_connect(h.server.url.replace("wss://", "ws://"))


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[server]\nhost = "0.0.0.0"', "server.host: '0.0.0.0' is not loopback: configure tokens or jwt (or allow_anonymous = true)"),
        ('[server]\non_slow = "wait"', "server.on_slow: 'wait' is not one of resnapshot, close"),
        ('[server]\ntls_cert = "c.pem"', "server.tls_cert: set both tls_cert and tls_key, or neither"),
        ('[[server.tokens]]\ntoken = "short"', "server.tokens[0].token: must be at least 16 characters"),
        ('[[server.tokens]]\ntoken = "long-enough-token-1"\nchannels = ["book"]', "server.tokens[0].channels: 'book' is not kind:venue:symbol (e.g. book:binance:BTC-USDT, trade:okx:*)"),
        ('[server.jwt]\nleeway = 1', "server.jwt.hs256_secret: configure hs256_secret, hs256_secret_env or rs256_public_key"),
    ],
)
def test_server_config_errors_are_one_line(toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(f'[venues.binance]\nsymbols = ["BTC-USDT"]\n{toml}\n')
    assert str(exc.value) == f"<config>: {message}"


async def test_idle_and_dead_clients_are_cleaned_up() -> None:
    async with Harness(idle_timeout=0.3, heartbeat=0.2) as h:
        idle = await h.connect()
        closed = await recv(idle, timeout=10)
        assert closed.type is aiohttp.WSMsgType.CLOSE and closed.data == 1000
        # a client that subscribed but never answers the server's pings is dropped by the heartbeat
        dead = await h.connect(autoping=False)
        await request(dead, op="subscribe", channels=["trade:binance:*"], id=1)
        await wait_until(lambda: not h.server.clients, "dead client removed")
        # a live one (autoping answers) stays
        live = await h.connect()
        await request(live, op="subscribe", channels=["trade:binance:*"], id=1)
        await asyncio.sleep(0)
        h.feed.publish([Trade(V, "BTC-USDT", 1, None, "7", 1.0, 1.0, None)])
        assert (await recv(live))["trade_id"] == "7"
        assert len(h.server.clients) == 1


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_client_with_token_requests_and_typed_events(fmt: str) -> None:
    from marketfeed.client import StreamClient, StreamError

    tokens = [TokenConfig(token=STATIC, channels=["book:binance:*", "trade:binance:*"])]
    async with Harness(tokens=tokens) as h:
        first = h.snapshot()
        async with StreamClient(h.server.url, ["book:binance:BTC-USDT"], token=STATIC, format=fmt) as client:
            event = await client.next_event(5)
            assert event == first
            assert client.book(V, "BTC-USDT").top(1) == ([(100.0, 1.0)], [(101.0, 1.0)])  # type: ignore[union-attr]
            assert await client.snapshot("book:binance:BTC-USDT") == first
            assert await client.ping() > 0
            with pytest.raises(StreamError) as exc:
                await client.subscribe(["top:binance:*"])
            assert exc.value.code in ("unknown_channel", "forbidden")
            with pytest.raises(StreamError, match="forbidden"):
                await client.subscribe(["status:binance:*"])
            assert await client.subscribe(["trade:binance:ETH-USDT"]) == ["trade:binance:ETH-USDT"]
            trade = Trade(V, "ETH-USDT", 1, 2, "9", 3.0, 4.0, "sell")
            d = h.diff()
            h.feed.publish([d, trade, Status(V, "BTC-USDT", 3, BOOK_INVALID, "gap")])
            assert await client.next_event(5) == d
            assert await client.next_event(5) == trade
            invalid = await client.next_event(5)
            assert isinstance(invalid, Status) and client.book(V, "BTC-USDT") is None
            h.snapshot()
            assert (await client.next_event(5)).snapshot  # type: ignore[union-attr]
            assert client.book(V, "BTC-USDT") is not None
            assert client.channels == ["book:binance:BTC-USDT", "trade:binance:ETH-USDT"]


def test_missing_token_variable_and_key_file_are_config_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MF_NO_SUCH_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="server.tokens\\[0\\].token_env: environment variable MF_NO_SUCH_TOKEN is not set"):
        Harness(tokens=[TokenConfig(token_env="MF_NO_SUCH_TOKEN")])
    with pytest.raises(ConfigError, match="server.jwt.rs256_public_key: .*No such file"):
        Harness(jwt=JwtConfig(rs256_public_key=str(tmp_path / "missing.pem")))


async def test_update_venues_after_a_reload() -> None:
    async with Harness() as h:
        ws = await h.connect()
        assert (await request(ws, op="subscribe", channels=["trade:kraken:BTC-USD"], id=1))["code"] == "unknown_channel"
        h.server.update_venues(Config(venues={"kraken": VenueConfig(symbols=["BTC-USD"])}, sinks=[]))
        assert (await request(ws, op="subscribe", channels=["trade:kraken:BTC-USD"], id=2))["type"] == "ack"


async def test_status_channels_and_connection_level_statuses() -> None:
    async with Harness() as h:
        statuses = await h.connect()
        book = await h.connect()
        assert (await request(statuses, op="subscribe", channels=["status:binance:*"], id=1))["channels"] == [
            "status:binance:*", "status:binance:BTC-USDT", "status:binance:ETH-USDT",
        ]
        await request(book, op="subscribe", channels=["book:binance:ETH-USDT"], id=1)
        assert (await recv(book))["state"] == BOOK_INVALID  # no book yet
        h.feed.publish([
            Status(V, None, 1, "connected"),
            Status(V, "ETH-USDT", 2, "subscribed"),
            Status("okx", None, 3, "connected"),
        ])
        got = [await recv(statuses), await recv(statuses)]
        assert [(m["symbol"], m["state"]) for m in got] == [(None, "connected"), ("ETH-USDT", "subscribed")]
        # the book channel carries its symbol's statuses only, once
        assert (await recv(book))["state"] == "subscribed"
        assert (await request(book, op="ping", id=2))["type"] == "pong"
        assert (await request(statuses, op="ping", id=2))["type"] == "pong"
