"""What an operator watches: Prometheus metrics, /health and /ready on one small HTTP server.

Nothing here sits on the hot path beyond ``FeedObserver.observe``, a cheap pass over each published
batch (a dict increment per event, a little more for book snapshots and statuses). Everything else —
runner connection state, adapter and runner counters, sink queues — is read from the objects that
already keep it, at scrape time, by ``DaemonCollector``: no metric call per frame or per event.

Endpoints (``[metrics]`` host/port, default 127.0.0.1:9464):

- ``/metrics``: the Prometheus text format; every name starts with ``marketfeed_``.
- ``/health``: 200 while every configured book (venue x symbol with the book channel) is valid, or
  invalid for less than ``[service] health_grace`` seconds (start-up, a resync after a gap); else 503.
  The JSON body names the books that are not valid and since when.
- ``/ready``: 200 once start-up is over (every connection open, or ``ready_timeout`` passed), else 503.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from marketfeed.events import BOOK_INVALID, Book, Event, Status, Top, Trade

log = structlog.get_logger("marketfeed.metrics")

_TYPE_NAMES = {Trade: "trade", Book: "book", Top: "top", Status: "status"}
CONNECTION_STATES = ("connecting", "open", "closed")


def invalidation_cause(reason: str | None) -> str:
    """A book_invalid reason as a small label set: gap, checksum, crossed, disconnect, snapshot,
    sink, other. The adapters' reasons are free text; these words are how they all say it."""
    text = (reason or "").lower()
    if "checksum" in text:
        return "checksum"
    if "gap" in text or "sequence" in text or "out of order" in text:
        return "gap"
    if "crossed" in text:
        return "crossed"
    if text.startswith("sink "):
        return "sink"
    if "disconnect" in text or "closed" in text or "stale" in text or "connection" in text:
        return "disconnect"
    if "snapshot" in text:
        return "snapshot"
    return "other"


class BookState:
    __slots__ = ("valid", "since", "snapshots", "invalidations")

    def __init__(self, now: float) -> None:
        self.valid = False
        self.since = now  # monotonic time of the last change of ``valid`` (start: never synced yet)
        self.snapshots = 0
        self.invalidations: dict[str, int] = {}


class StreamStats:
    """Per (venue, symbol): events by type and the receive time of the last one."""

    __slots__ = ("trade", "book", "top", "status", "last_ts")

    def __init__(self) -> None:
        self.trade = self.book = self.top = self.status = 0
        self.last_ts = 0


class FeedObserver:
    """Counts the published events and follows each book's validity the way a consumer sees it:
    valid from a snapshot, invalid from a ``book_invalid`` status."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.streams: dict[tuple[str, str | None], StreamStats] = {}
        self.books: dict[tuple[str, str], BookState] = {}

    @property
    def events(self) -> dict[tuple[type, str, str | None], int]:
        """Events by (type, venue, symbol)."""
        out = {}
        for (venue, symbol), st in self.streams.items():
            for t, name in _TYPE_NAMES.items():
                n = getattr(st, name)
                if n:
                    out[(t, venue, symbol)] = n
        return out

    @property
    def last_ts(self) -> dict[tuple[str, str | None], int]:
        return {key: st.last_ts for key, st in self.streams.items()}

    def expect(self, venue: str, symbols: list[str]) -> None:
        """Books the config asks for: tracked (as not yet valid) before their first event."""
        now = self.clock()
        for symbol in symbols:
            self.books.setdefault((venue, symbol), BookState(now))

    def forget(self, venue: str, symbols: list[str] | None = None) -> None:
        """Stop tracking a venue's books (all, or these symbols): removed from the config."""
        for key in [k for k in self.books if k[0] == venue and (symbols is None or k[1] in symbols)]:
            del self.books[key]

    def observe(self, events: list[Event]) -> None:
        # the hot path: one dict lookup and one attribute increment per event
        streams = self.streams
        for e in events:
            key = (e.venue, e.symbol)
            st = streams.get(key)
            if st is None:
                st = streams[key] = StreamStats()
            st.last_ts = e.ts_recv
            t = type(e)
            if t is Book:
                st.book += 1
                if e.snapshot:  # type: ignore[union-attr]
                    self._snapshot(e.venue, e.symbol)  # type: ignore[arg-type]
            elif t is Trade:
                st.trade += 1
            elif t is Status:
                st.status += 1
                if e.state == BOOK_INVALID and e.symbol is not None:  # type: ignore[union-attr]
                    self._invalid(e.venue, e.symbol, e.reason)  # type: ignore[union-attr]
            else:
                st.top += 1

    def _state(self, venue: str, symbol: str) -> BookState:
        state = self.books.get((venue, symbol))
        if state is None:
            state = self.books[(venue, symbol)] = BookState(self.clock())
        return state

    def _snapshot(self, venue: str, symbol: str) -> None:
        state = self._state(venue, symbol)
        state.snapshots += 1
        if not state.valid:
            state.valid = True
            state.since = self.clock()

    def _invalid(self, venue: str, symbol: str, reason: str | None) -> None:
        state = self._state(venue, symbol)
        cause = invalidation_cause(reason)
        state.invalidations[cause] = state.invalidations.get(cause, 0) + 1
        if state.valid:
            state.valid = False
            state.since = self.clock()

    def health(self, grace: float, configured: set[tuple[str, str]] | None = None) -> tuple[bool, dict[str, Any]]:
        """(healthy, body): healthy while every configured book is valid or invalid for less than
        ``grace`` seconds; the body lists the books that are not valid."""
        now = self.clock()
        not_valid = []
        healthy = True
        for (venue, symbol), state in sorted(self.books.items()):
            if configured is not None and (venue, symbol) not in configured:
                continue
            if state.valid:
                continue
            for_s = now - state.since
            in_grace = for_s < grace
            healthy = healthy and in_grace
            not_valid.append({
                "venue": venue, "symbol": symbol, "invalid_for": round(for_s, 3),
                "in_grace": in_grace, "synced_before": state.snapshots > 0,
            })
        total = len(self.books) if configured is None else len(configured)
        return healthy, {
            "status": "ok" if healthy else "unhealthy",
            "books": total,
            "valid": total - len(not_valid),
            "grace": grace,
            "not_valid": not_valid,
        }


class DaemonCollector:
    """A prometheus_client collector that reads the daemon's state when scraped."""

    def __init__(self, daemon: Any) -> None:
        self.daemon = daemon
        # The runners forget connections that ended for good (replaced, or their venue restarted by a
        # reload); their messages are kept here so the per-venue counter never goes backwards. A link
        # is held until the scrape that notices it is gone (so its id cannot be reused meanwhile).
        self._links: dict[int, tuple[str, Any]] = {}  # id(link) -> (venue, link)
        self._retired_frames: dict[str, int] = {}

    def describe(self) -> list[Any]:
        return []  # collected on demand only (no duplicate-name check against a describe at register)

    def collect(self) -> Iterator[Any]:
        d = self.daemon
        obs: FeedObserver = d.observer
        yield from self._feed(obs)
        yield from self._venues(d)
        yield from self._sinks(d)
        info = GaugeMetricFamily("marketfeed_info", "Always 1; the version as a label", labels=["version"])
        info.add_metric([_version()], 1.0)
        yield info
        up = GaugeMetricFamily("marketfeed_ready", "1 once start-up is over (every connection open or ready_timeout passed)")
        up.add_metric([], 1.0 if d.ready else 0.0)
        yield up
        reloads = CounterMetricFamily("marketfeed_config_reloads", "Configuration reloads (SIGHUP) by result", labels=["result"])
        for result in ("ok", "failed"):
            reloads.add_metric([result], d.reloads.get(result, 0))
        yield reloads
        healthy, _ = d.health()
        h = GaugeMetricFamily("marketfeed_healthy", "1 while /health answers 200")
        h.add_metric([], 1.0 if healthy else 0.0)
        yield h

    def _feed(self, obs: FeedObserver) -> Iterator[Any]:
        events = CounterMetricFamily("marketfeed_events", "Events published, by venue, symbol and type", labels=["venue", "symbol", "type"])
        for (t, venue, symbol), n in sorted(obs.events.items(), key=lambda kv: (kv[0][1], kv[0][2] or "", _TYPE_NAMES[kv[0][0]])):
            events.add_metric([venue, symbol or "", _TYPE_NAMES[t]], n)
        yield events
        valid = GaugeMetricFamily("marketfeed_book_valid", "1 while the book is valid (synced), 0 while it is not", labels=["venue", "symbol"])
        invalid_for = GaugeMetricFamily("marketfeed_book_invalid_seconds", "Seconds the book has been invalid (0 while valid)", labels=["venue", "symbol"])
        snapshots = CounterMetricFamily("marketfeed_book_snapshots", "Book snapshots published (the first sync and every resync)", labels=["venue", "symbol"])
        resyncs = CounterMetricFamily("marketfeed_resyncs", "Book invalidations that start a resync, any cause", labels=["venue", "symbol"])
        gaps = CounterMetricFamily("marketfeed_gaps", "Sequence gaps detected in the venue's book stream", labels=["venue", "symbol"])
        checksums = CounterMetricFamily("marketfeed_checksum_failures", "Book checksum mismatches against the venue's checksum", labels=["venue", "symbol"])
        causes = CounterMetricFamily("marketfeed_book_invalidations", "book_invalid statuses by cause", labels=["venue", "symbol", "cause"])
        now = obs.clock()
        for (venue, symbol), st in sorted(obs.books.items()):
            labels = [venue, symbol]
            valid.add_metric(labels, 1.0 if st.valid else 0.0)
            invalid_for.add_metric(labels, 0.0 if st.valid else now - st.since)
            snapshots.add_metric(labels, st.snapshots)
            resyncs.add_metric(labels, sum(st.invalidations.values()))
            gaps.add_metric(labels, st.invalidations.get("gap", 0))
            checksums.add_metric(labels, st.invalidations.get("checksum", 0))
            for cause, n in sorted(st.invalidations.items()):
                causes.add_metric([venue, symbol, cause], n)
        yield from (valid, invalid_for, snapshots, resyncs, gaps, checksums, causes)
        age = GaugeMetricFamily("marketfeed_last_message_age_seconds", "Seconds since the last event of this venue and symbol", labels=["venue", "symbol"])
        wall = time.time_ns()
        for (venue, symbol), ts in sorted(obs.last_ts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            age.add_metric([venue, symbol or ""], max(0.0, (wall - ts) / 1e9))
        yield age

    def _venues(self, d: Any) -> Iterator[Any]:
        state = GaugeMetricFamily("marketfeed_connection_state", "1 for the connection's current state", labels=["venue", "connection", "url", "state"])
        reconnects = CounterMetricFamily("marketfeed_connection_reconnects", "Reconnects of this connection", labels=["venue", "connection"])
        conn_frames = CounterMetricFamily("marketfeed_connection_messages", "WebSocket messages received on this connection", labels=["venue", "connection"])
        frames = CounterMetricFamily("marketfeed_messages", "WebSocket messages received from the venue", labels=["venue"])
        venue_reconnects = CounterMetricFamily("marketfeed_reconnects", "Reconnects of the venue's connections", labels=["venue"])
        connections_open = GaugeMetricFamily("marketfeed_connections_open", "Open connections", labels=["venue"])
        rest = CounterMetricFamily("marketfeed_rest_requests", "REST requests (book snapshots) sent", labels=["venue"])
        weight = CounterMetricFamily("marketfeed_rest_weight", "REST request weight spent (the venue's rate-limit units)", labels=["venue"])
        adapter = CounterMetricFamily("marketfeed_adapter_counter", "The adapter's own counters (malformed frames, gaps, snapshots, ...)", labels=["venue", "counter"])
        runtime = CounterMetricFamily("marketfeed_runtime_counter", "The venue runtime's counters (connect failures, stale, rest errors, ...)", labels=["venue", "counter"])
        current: set[int] = set()
        for runner in d.runners:
            venue = runner.venue
            open_now = 0
            for link in getattr(runner, "links", []):
                current.add(id(link))
                self._links.setdefault(id(link), (venue, link))
            for i, c in enumerate(runner.connections()):
                name = str(i)
                for s in CONNECTION_STATES:
                    state.add_metric([venue, name, c["url"], s], 1.0 if c["state"] == s else 0.0)
                reconnects.add_metric([venue, name], c["reconnects"])
                conn_frames.add_metric([venue, name], c["frames"])
                open_now += c["state"] == "open"
            connections_open.add_metric([venue], open_now)
            venue_reconnects.add_metric([venue], runner.reconnects + d.retired.get((venue, "reconnects"), 0))
            rest.add_metric([venue], runner.rest_requests + d.retired.get((venue, "rest_requests"), 0))
            weight.add_metric([venue], runner.rest_weight + d.retired.get((venue, "rest_weight"), 0))
            for name, n in sorted(runner.adapter.counters.items()):
                adapter.add_metric([venue, name], n)
            for name, n in sorted(runner.counters.items()):
                runtime.add_metric([venue, name], n)
        for key in [k for k in self._links if k not in current]:
            venue, link = self._links.pop(key)
            self._retired_frames[venue] = self._retired_frames.get(venue, 0) + link.frames
        by_venue = dict(self._retired_frames)
        for venue, link in self._links.values():
            by_venue[venue] = by_venue.get(venue, 0) + link.frames
        for venue, n in sorted(by_venue.items()):
            frames.add_metric([venue], n)
        yield from (state, reconnects, conn_frames, frames, venue_reconnects, connections_open, rest, weight, adapter, runtime)

    def _sinks(self, d: Any) -> Iterator[Any]:
        depth = GaugeMetricFamily("marketfeed_sink_queue_depth", "Events waiting in the sink's queue", labels=["sink"])
        capacity = GaugeMetricFamily("marketfeed_sink_queue_size", "The sink's queue capacity (queue_size)", labels=["sink"])
        queued = CounterMetricFamily("marketfeed_sink_queued", "Events accepted into the sink's queue", labels=["sink"])
        written = CounterMetricFamily("marketfeed_sink_written", "Events the sink wrote", labels=["sink"])
        dropped = CounterMetricFamily("marketfeed_sink_dropped", "Events the sink lost (queue full, failed writes, held diffs)", labels=["sink"])
        errors = CounterMetricFamily("marketfeed_sink_errors", "Failed writes and flushes", labels=["sink"])
        clients = GaugeMetricFamily("marketfeed_sink_clients", "Connected clients of a serving sink (the bot stream)", labels=["sink"])
        own = CounterMetricFamily(
            "marketfeed_sink_counter",
            "The sink's own counters (network sinks: retries, failures, connects, given_up)",
            labels=["sink", "counter"],
        )
        for channel in d.bus.channels:
            c = channel.counters()
            name = channel.name
            depth.add_metric([name], c.get("depth", 0))
            capacity.add_metric([name], channel.queue_size)
            queued.add_metric([name], c.get("queued", 0))
            written.add_metric([name], c.get("written", 0))
            dropped.add_metric([name], c.get("dropped", 0))
            errors.add_metric([name], c.get("errors", 0))
            for counter, n in sorted(getattr(channel.sink, "stats", {}).items()):
                own.add_metric([name, counter], n)
            n = getattr(channel.sink, "clients", None)
            if callable(n):
                n = n()
            if isinstance(n, (int, float)):
                clients.add_metric([name], n)
            elif n is not None and hasattr(n, "__len__"):
                clients.add_metric([name], len(n))
        yield from (depth, capacity, queued, written, dropped, errors, clients, own)
        # the bot-facing WebSocket stream (marketfeed.stream), when [server] configures one
        stream = getattr(d, "stream", None)
        stream_clients = GaugeMetricFamily("marketfeed_stream_clients", "Clients connected to the bot stream")
        stream_counters = CounterMetricFamily("marketfeed_stream_counter", "The bot stream's counters (connections, rejected, slow clients, ...)", labels=["counter"])
        if stream is not None:
            stream_clients.add_metric([], len(getattr(stream, "clients", ())))
            for name, n in sorted(getattr(stream, "counters", {}).items()):
                stream_counters.add_metric([name], n)
        yield from (stream_clients, stream_counters)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("marketfeed")
    except PackageNotFoundError:
        return "unknown"


class MetricsServer:
    """The aiohttp server for /metrics, /health and /ready."""

    def __init__(self, daemon: Any, host: str, port: int) -> None:
        self.daemon = daemon
        self.host = host
        self.port = port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(DaemonCollector(daemon))
        # CPU seconds, resident memory, open file descriptors, start time: marketfeed_process_*
        ProcessCollector(namespace="marketfeed", registry=self.registry)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        app.router.add_get("/ready", self._ready)
        self._runner = web.AppRunner(app, access_log=None)
        self.bound: tuple[str, int] | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server  # the bound port, for port = 0
        sockets = getattr(server, "sockets", None) or []
        self.bound = sockets[0].getsockname()[:2] if sockets else (self.host, self.port)

    async def close(self) -> None:
        await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _health(self, request: web.Request) -> web.Response:
        healthy, body = self.daemon.health()
        return web.Response(status=200 if healthy else 503, text=json.dumps(body), content_type="application/json")

    async def _ready(self, request: web.Request) -> web.Response:
        ready = self.daemon.ready
        body = {"ready": ready, "connections": self.daemon.connection_summary()}
        return web.Response(status=200 if ready else 503, text=json.dumps(body), content_type="application/json")
