"""The daemon: one VenueRunner per configured venue, publishing into the bus, which feeds the sinks.

```
 VenueRunner(binance) ──┐                    ┌─> queue ─> StdoutSink
 VenueRunner(...)     ──┼─> Bus.publish() ───┤
   (adapter + sockets)  │   (never waits)    └─> queue ─> JsonlSink
   └─> Recorder (optional: every input the adapters are fed, as captures)
```

Under systemd (``Type=notify``, marketfeed/notify.py): READY=1 once every venue's connections are
open (or after ``[service] ready_timeout``), WATCHDOG=1 from the event loop at half ``WATCHDOG_USEC``
with a one-line STATUS=, STOPPING=1 at shutdown. ``[metrics]`` serves /metrics, /health and /ready
(marketfeed/metrics.py).

SIGHUP reloads the config file (``reload()``): venues and sinks that did not change keep running; a
venue whose settings changed (symbols, channels, ...) is restarted alone; removed venues and sinks
are stopped (sinks drained), new ones started. A config that does not load keeps the running one: the
error is logged, counted (``marketfeed_config_reloads_total{result="failed"}``) and shown in STATUS=.

Shutdown (SIGINT or SIGTERM, handled here and nowhere else): stop intake (every runner closes its
connections; the adapters' disconnect events are still published), drain the bus and flush every
sink, close the recorder, exit 0. A second signal during shutdown exits at once with code 1. The same
orderly shutdown follows when the reader of stdout goes away (``marketfeed run | head``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog

from marketfeed.bus import Bus, SinkChannel
from marketfeed.config import Config, ConfigError, RecordConfig
from marketfeed.events import Event
from marketfeed.metrics import FeedObserver, MetricsServer
from marketfeed.notify import Notifier
from marketfeed.protocol import Adapter
from marketfeed.sinks import make_sink
from marketfeed.sinks.stdout import StdoutSink

log = structlog.get_logger("marketfeed.daemon")

SHUTDOWN_TIMEOUT = 10.0  # seconds for the runners to close, and again for the sinks to drain
STATS_INTERVAL = 60.0
# config sections a reload does not apply (logged when they change; the running values stay)
RESTART_SECTIONS = ("record", "log", "metrics", "service", "shard", "server")


def tune_gc() -> None:
    """Move everything built at start-up out of the collector's way and collect young objects less
    often. The feed allocates millions of short-lived, acyclic objects (decoded frames, events); with
    the default thresholds the cyclic collector ran several times per thousand frames and cost more
    than the decoding itself (benchmarks/bench_binance.py: 200,000 frames, 4.2 s with the defaults,
    1.2 s frozen). A higher first threshold keeps collections rare but bounded, for the few cycles a
    long-running process does create."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)


class Daemon:
    def __init__(
        self,
        config: Config,
        record_dir: str | Path | None = None,
        adapters: dict[str, Adapter] | None = None,
        shutdown_timeout: float = SHUTDOWN_TIMEOUT,
        stats_interval: float = STATS_INTERVAL,
        config_path: str | Path | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        """``record_dir`` (the --record option) records captures there, with the ``[record]``
        section's rotation settings if there is one; without it, ``[record]`` decides.
        ``adapters``: already constructed adapters by venue name (the CLI builds them first to report
        a bad venue setting as a config error); built from the config when not given."""
        from marketfeed.venues import make_adapter

        self.config = config
        self.adapters = adapters if adapters is not None else {
            name: make_adapter(name, venue) for name, venue in config.venues.items()
        }
        self.bus = Bus()
        # the runners publish through the derived feed: books kept from the events, coalesced tops,
        # then the bus and the WebSocket stream (marketfeed.top, marketfeed.stream)
        from marketfeed.top import DerivedFeed

        self.feed = DerivedFeed(config, [self.bus.publish])
        self.stream: Any = None
        if config.server is not None:
            from marketfeed.stream.server import StreamServer

            self.stream = StreamServer(config, self.feed.books)
            self.feed.outputs.append(self.stream.publish)
        self.sink_configs: dict[int, Any] = {}  # id(SinkChannel) -> its config, to diff at reload
        for sink_config in config.sinks:
            channel = self.bus.add_sink(self._make_sink(sink_config), sink_config.queue_size, sink_config.on_full)
            self.sink_configs[id(channel)] = sink_config
        self.config_path = config_path
        self.notifier = notifier if notifier is not None else Notifier()
        self.observer = FeedObserver()
        for name, venue in config.venues.items():
            if "book" in venue.channels:
                self.observer.expect(name, venue.symbols)
        self.ready = False
        self.reloads: dict[str, int] = {}
        self.last_reload_error: str | None = None
        self.retired: dict[tuple[str, str], int] = {}  # counters of runners a reload replaced
        self.metrics_server: MetricsServer | None = None
        self._changed: asyncio.Event | None = None
        self._reload_lock: asyncio.Lock | None = None
        self._helpers: list[asyncio.Task[Any]] = []
        self._reloads: set[asyncio.Task[bool]] = set()
        self.record: RecordConfig | None = config.record
        if record_dir is not None:
            base = config.record or RecordConfig(dir=str(record_dir))
            self.record = RecordConfig(dir=str(record_dir), rotate_mb=base.rotate_mb, rotate_minutes=base.rotate_minutes, gzip=base.gzip)
        self.shutdown_timeout = shutdown_timeout
        self.stats_interval = stats_interval
        self.recorder: Any = None
        self.runners: list[Any] = []
        self._stop: asyncio.Event | None = None
        self._signals = 0
        self._tasks: dict[asyncio.Task[None], Any] = {}

    def _make_sink(self, sink_config: Any) -> Any:
        sink = make_sink(sink_config)
        if isinstance(sink, StdoutSink):
            sink.on_reader_gone = self._reader_gone
        return sink

    def publish(self, events: list[Event]) -> None:
        """What the runners publish into: the observer (metrics, /health) sees each batch, then the bus."""
        self.observer.observe(events)
        self.feed.publish(events)

    def request_stop(self) -> None:
        """Begin an orderly shutdown (what SIGINT and SIGTERM do)."""
        if self._stop is not None:
            self._stop.set()

    def _reader_gone(self) -> None:
        log.info("shutting down: nobody reads stdout any more")
        self.request_stop()

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info("shutting down", signal=name)
            self.request_stop()
        else:
            log.error("second signal: exiting without finishing the shutdown", signal=name)
            sys.stderr.flush()
            os._exit(1)

    async def run(self) -> int:
        """Run until a signal or ``request_stop()``; returns the exit code."""
        from marketfeed.runtime.venue import VenueRunner

        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        handled = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
                handled.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
                pass
        if self.config_path is not None:
            try:
                loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
                handled.append(signal.SIGHUP)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        try:
            try:
                await self.bus.start()
            except Exception as exc:
                log.error("cannot start sinks", error=str(exc))
                return 1
            if self.record is not None:
                try:
                    self.recorder = self._make_recorder(self.record)
                except OSError as exc:
                    log.error("cannot record", dir=self.record.dir, error=str(exc))
                    await self.bus.close(self.shutdown_timeout)
                    return 1
            if self.stream is not None:
                try:
                    await self.stream.start()
                except OSError as exc:
                    log.error("cannot start the stream server", host=self.stream.config.host, port=self.stream.config.port, error=str(exc))
                    await self.bus.close(self.shutdown_timeout)
                    return 1
            await self._start_metrics()
            self.runners = [
                VenueRunner(adapter, self.config.venues[name], self.publish, recorder=self.recorder)
                for name, adapter in self.adapters.items()
            ]
            tune_gc()
            log.info(
                "marketfeed started",
                venues={name: v.symbols for name, v in self.config.venues.items()},
                sinks=[c.name for c in self.bus.channels],
                record=self.record.dir if self.record else None,
                event_loop=type(loop).__module__.split(".")[0],
                metrics=f"http://{self.metrics_server.bound[0]}:{self.metrics_server.bound[1]}" if self.metrics_server and self.metrics_server.bound else None,
            )
            code = await self._serve()
            return await self._shutdown(code)
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
            for task in self._helpers:
                task.cancel()
            if self.metrics_server is not None:
                await self.metrics_server.close()
            self.notifier.close()

    def _make_recorder(self, record: RecordConfig) -> Any:
        from marketfeed.recorder import Recorder

        path = Path(record.dir).expanduser()
        path.mkdir(parents=True, exist_ok=True)  # a bad directory stops the start, not the first frame
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is not writable")
        return Recorder(path, list(self.config.venues), rotate_mb=record.rotate_mb, rotate_minutes=record.rotate_minutes, gzip=record.gzip)

    async def _serve(self) -> int:
        assert self._stop is not None and self._changed is not None
        self._tasks = {asyncio.create_task(r.run(), name=f"venue {r.venue}"): r for r in self.runners}
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        self._helpers += [
            asyncio.create_task(self._stats_loop(), name="stats"),
            asyncio.create_task(self._ready_watch(), name="ready"),
            asyncio.create_task(self._status_loop(), name="status"),
        ]
        code = 0
        while code == 0:
            # runners come and go with reloads: wait on the current set, again after every change
            self._changed.clear()
            changed = asyncio.create_task(self._changed.wait(), name="changed")
            done, _ = await asyncio.wait([stop, changed, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
            changed.cancel()
            if stop in done:
                break
            for task in done:
                runner = self._tasks.get(task)  # type: ignore[call-overload]
                if runner is None:
                    continue  # the changed event, or a runner a reload stopped
                # a runner only returns after stop(): ending on its own is a bug
                exc = task.exception()
                log.error("venue runner ended unexpectedly", venue=runner.venue, error=repr(exc) if exc else None, exc_info=exc)
                code = 1
        stop.cancel()
        for task in self._helpers:
            task.cancel()
        return code

    # -- service: readiness, systemd notifications, health -------------------------------------------

    def connection_summary(self) -> dict[str, dict[str, int]]:
        out = {}
        for r in self.runners:
            conns = r.connections()
            out[r.venue] = {"open": sum(c["state"] == "open" for c in conns), "connections": len(conns)}
        return out

    def _all_open(self) -> bool:
        return bool(self.runners) and all(
            conns and all(c["state"] == "open" for c in conns) for conns in (r.connections() for r in self.runners)
        )

    def configured_books(self) -> set[tuple[str, str]]:
        return {(name, s) for name, v in self.config.venues.items() if "book" in v.channels for s in v.symbols}

    def health(self) -> tuple[bool, dict[str, Any]]:
        healthy, body = self.observer.health(self.config.service.health_grace, self.configured_books())
        if self.last_reload_error is not None:
            body["last_reload_error"] = self.last_reload_error
        return healthy, body

    def status_line(self) -> str:
        """The one-line summary for systemd's STATUS= (``systemctl status marketfeed``)."""
        _, body = self.health()
        conns = self.connection_summary()
        opened = sum(c["open"] for c in conns.values())
        total = sum(c["connections"] for c in conns.values())
        dropped = sum(c.dropped for c in self.bus.channels)
        venues = sum(bool(c["connections"]) and c["open"] == c["connections"] for c in conns.values())
        text = (
            f"books {body['valid']}/{body['books']} valid; venues {venues}/{len(conns)} connected; "
            f"connections {opened}/{total} open; sinks {len(self.bus.channels)}, dropped {dropped}"
        )
        if self.last_reload_error is not None:
            text += "; last reload FAILED (running config kept)"
        return text

    async def _ready_watch(self) -> None:
        """Start-up is over when every connection the adapters asked for is open, or after
        ``ready_timeout`` (a venue that is down must not keep systemd waiting for ever)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.service.ready_timeout
        while not self._all_open() and loop.time() < deadline:
            await asyncio.sleep(0.05)
        self.ready = True
        all_open = self._all_open()
        if not all_open:
            log.warning("ready without every connection open", timeout=self.config.service.ready_timeout, connections=self.connection_summary())
        self.notifier.ready(self.status_line())
        log.info("ready", all_connections_open=all_open)

    async def _status_loop(self) -> None:
        """WATCHDOG=1 from the event loop itself (a hung loop misses it and systemd restarts us), with
        the STATUS= line refreshed at the same pace (at least every 10 s)."""
        if not self.notifier.enabled:
            return
        interval = self.notifier.watchdog_interval
        period = min(interval, 10.0) if interval else 10.0
        while True:
            if interval:
                self.notifier.notify(WATCHDOG=1, STATUS=self.status_line())
            else:
                self.notifier.status(self.status_line())
            await asyncio.sleep(period)

    async def _start_metrics(self) -> None:
        m = self.config.metrics
        if not m.enabled:
            return
        port = m.port
        shard = getattr(self.config, "shard", None)
        if shard is not None and port:
            # the shards of one config run side by side: shard I listens on port + I
            port += shard.index
        server = MetricsServer(self, m.host, port)
        try:
            await server.start()
        except OSError as exc:  # the feed matters more than its metrics: say so loudly, carry on
            log.error("metrics endpoint not started", host=m.host, port=m.port, error=str(exc))
            await server.close()
            return
        self.metrics_server = server
        log.info("metrics endpoint", url=f"http://{server.bound[0]}:{server.bound[1]}/metrics" if server.bound else None)

    # -- reload (SIGHUP) -----------------------------------------------------------------------------

    def _on_sighup(self) -> None:
        log.info("reloading the config", signal="SIGHUP", path=str(self.config_path))
        task = asyncio.get_running_loop().create_task(self.reload(), name="reload")
        # not a helper: a shutdown waits for a reload in progress instead of cancelling it half-way
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self, config: Config | None = None) -> bool:
        """Load the config file again (or take ``config``) and apply the difference. A config that
        does not load, or an adapter that refuses its settings, leaves everything as it was."""
        assert self._reload_lock is not None
        async with self._reload_lock:
            if self._stop is not None and self._stop.is_set():
                return False
            try:
                new = config
                if new is None:
                    if self.config_path is None:
                        raise ConfigError("no config file to reload")
                    from marketfeed.config import load_config

                    new = load_config(self.config_path)
                adapters = self._changed_adapters(new)
            except ConfigError as exc:
                self.reloads["failed"] = self.reloads.get("failed", 0) + 1
                self.last_reload_error = str(exc)
                log.error("config reload failed: the running config is kept", error=str(exc))
                self.notifier.status(self.status_line())
                return False
            await self._apply(new, adapters)
            self.reloads["ok"] = self.reloads.get("ok", 0) + 1
            self.last_reload_error = None
            self.notifier.status(self.status_line())
            return True

    def _changed_adapters(self, new: Config) -> dict[str, Adapter]:
        """New adapters for the venues that are new or changed (the adapter checks its settings)."""
        from marketfeed.cli import _build_adapters

        changed = Config(venues={
            name: v for name, v in new.venues.items() if self.config.venues.get(name) != v
        }) if any(self.config.venues.get(n) != v for n, v in new.venues.items()) else None
        if changed is None:
            return {}
        return _build_adapters(changed, str(self.config_path or "<config>"))

    async def _apply(self, new: Config, adapters: dict[str, Adapter]) -> None:
        from marketfeed.runtime.venue import VenueRunner

        old = self.config
        for section in RESTART_SECTIONS:
            if getattr(old, section, None) != getattr(new, section, None):
                log.warning("config section changed: takes effect at the next restart", section=section)
        for name, venue in new.venues.items():
            was = old.venues.get(name)
            if was is not None and (getattr(was, "top", None), getattr(was, "top_symbols", None)) != (getattr(venue, "top", None), getattr(venue, "top_symbols", None)):
                log.warning("top settings changed: take effect at the next restart", venue=name)
        # the running values of the sections a reload does not apply stay as they are
        kept = {s: getattr(old, s) for s in RESTART_SECTIONS if hasattr(old, s)}
        # venues: stop the removed and the changed, then start the changed and the new
        removed = [n for n in old.venues if n not in new.venues]
        restarted = [n for n in new.venues if n in old.venues and old.venues[n] != new.venues[n]]
        added = [n for n in new.venues if n not in old.venues]
        for name in removed + restarted:
            await self._stop_runner(name)
            self.observer.forget(name)
        self.config = msgspec_replace(new, **kept)
        if self.stream is not None:  # new venues and symbols can be subscribed (top settings: at restart)
            self.stream.update_venues(self.config)
        if self.recorder is not None and added:
            self.recorder.venues.extend(added)
            self.recorder.rotate()  # the new file's header names every venue it may hold
        for name in restarted + added:
            venue = new.venues[name]
            if "book" in venue.channels:
                self.observer.expect(name, venue.symbols)
            runner = VenueRunner(adapters[name], venue, self.publish, recorder=self.recorder)
            self.adapters[name] = adapters[name]
            self.runners.append(runner)
            self._tasks[asyncio.create_task(runner.run(), name=f"venue {name}")] = runner
        # sinks: equal config, same sink; otherwise the old one drains and closes, the new one starts
        keep: list[SinkChannel] = []
        wanted = list(new.sinks)
        for channel in list(self.bus.channels):
            cfg = self.sink_configs.get(id(channel))
            if cfg in wanted:
                wanted.remove(cfg)
                keep.append(channel)
        gone = [c for c in self.bus.channels if c not in keep]
        started = []
        for sink_config in wanted:
            channel = SinkChannel(self._make_sink(sink_config), sink_config.queue_size, sink_config.on_full)
            try:
                await channel.sink.start()
            except Exception as exc:
                log.error("sink not started at reload", sink=channel.name, error=str(exc))
                continue
            channel._task = asyncio.create_task(channel.run(), name=f"sink {channel.name}")
            self.sink_configs[id(channel)] = sink_config
            started.append(channel)
        # A sink that joins mid-stream would get diffs of books it never saw: it gets each valid
        # book's current state as a snapshot first (from the daemon's own event books, which hold
        # exactly what was published so far: no await between this and joining the bus).
        snapshots = self._book_snapshots() if started else []
        for channel in started:
            if snapshots:
                channel.offer(snapshots)
        self.bus.channels = keep + started
        for channel in gone:
            self.sink_configs.pop(id(channel), None)
            try:
                await asyncio.wait_for(channel.close(), self.shutdown_timeout)
            except Exception as exc:
                log.error("sink close failed at reload", sink=channel.name, error=repr(exc))
        if self._changed is not None:
            self._changed.set()
        log.info(
            "config reloaded",
            venues_added=added, venues_removed=removed, venues_restarted=restarted,
            sinks_added=[c.name for c in started], sinks_removed=[c.name for c in gone],
            venues_unchanged=[n for n in new.venues if n not in added and n not in restarted],
        )

    def _book_snapshots(self) -> list[Event]:
        feed = getattr(self, "feed", None)
        books = getattr(feed, "books", None)
        if books is None:
            return []
        out = []
        for state in books.states.values():
            snap = state.snapshot()
            if snap is not None:
                out.append(snap)
        return out

    async def _stop_runner(self, venue: str) -> None:
        for task, runner in list(self._tasks.items()):
            if runner.venue != venue:
                continue
            del self._tasks[task]
            self.runners.remove(runner)
            for key, n in (("reconnects", runner.reconnects), ("rest_requests", runner.rest_requests), ("rest_weight", runner.rest_weight)):
                self.retired[(venue, key)] = self.retired.get((venue, key), 0) + n
            try:
                await asyncio.wait_for(runner.stop(), self.shutdown_timeout)
            except TimeoutError:
                log.error("venue did not stop in time at reload", venue=venue)
                task.cancel()
            log.info("venue stopped for reload", venue=venue)

    async def _shutdown(self, code: int) -> int:
        self.notifier.stopping("shutting down")
        if self._reloads:  # let a reload finish: the runners it started or stopped are then known
            await asyncio.wait(self._reloads, timeout=self.shutdown_timeout)
        tasks = self._tasks
        # 1. stop intake: runners close their connections; the adapters' disconnect events still flow
        stops = [asyncio.create_task(r.stop()) for r in self.runners]
        _, pending = await asyncio.wait([*stops, *tasks], timeout=self.shutdown_timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.error("venue runners did not stop in time", timeout=self.shutdown_timeout)
            await asyncio.wait(pending, timeout=1.0)
        # 2. drain the queues, flush and close the sinks
        self.feed.close()
        if self.stream is not None:
            await self.stream.stop()
        drained = await self.bus.close(self.shutdown_timeout)
        # 3. close the recorder (after the runners: they record their closes)
        if self.recorder is not None:
            try:
                self.recorder.close()
            except OSError as exc:
                log.error("closing the recording failed", error=str(exc))
                code = 1
        log.info("marketfeed stopped", sinks=self.bus.counters(), drained=drained)
        if not drained:
            code = code or 1
        return code

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval)
            log.info(
                "stats",
                sinks=self.bus.counters(),
                venues={
                    r.venue: {"adapter": dict(r.adapter.counters), "runner": dict(r.counters), "reconnects": r.reconnects}
                    for r in self.runners
                },
            )


def msgspec_replace(config: Config, **fields: Any) -> Config:
    import msgspec

    return msgspec.structs.replace(config, **fields)


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run the daemon's coroutine on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
