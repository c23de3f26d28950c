"""``marketfeed replay CAPTURE --config FILE`` without ``--out``: the replayed events go to the
config's sinks, so a backtest can load Redis, NATS or PostgreSQL from recordings.

Every sink receives every event: unlike the live daemon, replay can wait, so each sink's queue uses the
``block`` policy here whatever its ``on_full`` says (a full queue pauses the replay, it drops nothing).
The adapters run on a worker thread (the replay is CPU work) and hand over chunks of events through a
small bounded queue; the event loop publishes them into the bus and the sinks write them as usual.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from marketfeed.bus import Bus
from marketfeed.config import Config
from marketfeed.events import Event
from marketfeed.sinks import make_sink

CHUNK = 2000  # events handed from the replay thread to the event loop at a time
DRAIN_TIMEOUT = 600.0

Emit = Callable[[list[Event]], None]


class ReplayResult:
    def __init__(self, replayer: Any, events: int, counters: dict[str, dict[str, int]], drained: bool) -> None:
        self.replayer = replayer
        self.events = events
        self.counters = counters
        self.drained = drained

    @property
    def complete(self) -> bool:
        """Every sink wrote every event."""
        return self.drained and all(c["written"] == self.events and c["dropped"] == 0 for c in self.counters.values())


async def replay_into_sinks(
    paths: Iterable[str | Path],
    config: Config,
    pace: Callable[[Emit, Callable[[], None]], Emit] | None = None,
) -> ReplayResult:
    """Replay ``paths`` (adapters configured by ``config``) into ``config.sinks``. ``pace(emit, flush)``
    wraps the emitter (``--speed``); ``flush`` hands over the events collected so far at once."""
    from marketfeed.replay import replay_to
    from marketfeed.top import DerivedFeed

    # the configured top events, derived on the replay's own clock (the events' ts_recv), as live
    derived = DerivedFeed(config, keep_books=False)
    bus = Bus()
    for options in config.sinks:
        bus.add_sink(make_sink(options), options.queue_size, "block")
    await bus.start()

    handoff: queue.Queue[Any] = queue.Queue(maxsize=4)
    done = object()
    chunk: list[Event] = []
    total = [0]

    def flush() -> None:
        if chunk:
            handoff.put(chunk.copy())
            chunk.clear()

    def emit(events: list[Event]) -> None:
        events = derived.derive(events)
        total[0] += len(events)
        chunk.extend(events)
        if len(chunk) >= CHUNK:
            flush()

    result: list[Any] = []

    def work() -> None:
        try:
            result.append(replay_to(paths, pace(emit, flush) if pace else emit, config))
            tail = derived.finish()  # tops still held back when the recording ends
            total[0] += len(tail)
            chunk.extend(tail)
            flush()
            handoff.put(done)
        except BaseException as exc:  # handed to the event loop, which raises it
            flush()  # the events before a bad line are kept, as with --out
            handoff.put(exc)

    thread = threading.Thread(target=work, name="marketfeed-replay", daemon=True)
    thread.start()
    loop = asyncio.get_running_loop()
    failure: BaseException | None = None
    while True:
        item = await loop.run_in_executor(None, handoff.get)
        if item is done:
            break
        if isinstance(item, BaseException):
            failure = item
            break
        await bus.publish_wait(item)
    drained = await bus.close(DRAIN_TIMEOUT)
    if failure is not None:
        raise failure
    return ReplayResult(result[0], total[0], bus.counters(), drained)
