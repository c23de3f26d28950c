"""The daemon: one VenueRunner per configured venue, publishing into the bus, which feeds the sinks.

```
 VenueRunner(binance) ──┐                    ┌─> queue ─> StdoutSink
 VenueRunner(...)     ──┼─> Bus.publish() ───┤
   (adapter + sockets)  │   (never waits)    └─> queue ─> JsonlSink
   └─> Recorder (optional: every input the adapters are fed, as captures)
```

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

from marketfeed.bus import Bus
from marketfeed.config import Config, RecordConfig
from marketfeed.protocol import Adapter
from marketfeed.sinks import make_sink
from marketfeed.sinks.stdout import StdoutSink

log = structlog.get_logger("marketfeed.daemon")

SHUTDOWN_TIMEOUT = 10.0  # seconds for the runners to close, and again for the sinks to drain
STATS_INTERVAL = 60.0


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
        for sink_config in config.sinks:
            sink = make_sink(sink_config)
            if isinstance(sink, StdoutSink):
                sink.on_reader_gone = self._reader_gone
            self.bus.add_sink(sink, sink_config.queue_size, sink_config.on_full)
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
        handled = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._on_signal, signum)
                handled.append(signum)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
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
            self.runners = [
                VenueRunner(adapter, self.config.venues[name], self.bus.publish, recorder=self.recorder)
                for name, adapter in self.adapters.items()
            ]
            tune_gc()
            log.info(
                "marketfeed started",
                venues={name: v.symbols for name, v in self.config.venues.items()},
                sinks=[c.name for c in self.bus.channels],
                record=self.record.dir if self.record else None,
                event_loop=type(loop).__module__.split(".")[0],
            )
            code = await self._serve()
            return await self._shutdown(code)
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)

    def _make_recorder(self, record: RecordConfig) -> Any:
        from marketfeed.recorder import Recorder

        path = Path(record.dir).expanduser()
        path.mkdir(parents=True, exist_ok=True)  # a bad directory stops the start, not the first frame
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is not writable")
        return Recorder(path, list(self.config.venues), rotate_mb=record.rotate_mb, rotate_minutes=record.rotate_minutes, gzip=record.gzip)

    async def _serve(self) -> int:
        assert self._stop is not None
        tasks = {asyncio.create_task(r.run(), name=f"venue {r.venue}"): r for r in self.runners}
        stop = asyncio.create_task(self._stop.wait(), name="stop")
        stats = asyncio.create_task(self._stats_loop(), name="stats")
        done, _ = await asyncio.wait([stop, *tasks], return_when=asyncio.FIRST_COMPLETED)
        code = 0
        for task in done:
            if task is stop:
                continue
            # a runner only returns after stop(): ending on its own is a bug
            runner = tasks[task]
            exc = task.exception()
            log.error("venue runner ended unexpectedly", venue=runner.venue, error=repr(exc) if exc else None, exc_info=exc)
            code = 1
        stop.cancel()
        stats.cancel()
        self._tasks = tasks
        return code

    async def _shutdown(self, code: int) -> int:
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


def run_event_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run the daemon's coroutine on uvloop when it is installed, else on asyncio's own loop."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
