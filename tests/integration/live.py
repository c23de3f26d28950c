"""What every end-to-end test needs: a real VenueRunner with the real adapter, pointed at a loopback
server, publishing into a list and into consumer-side books; and a wait with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from marketfeed.config import Backoff, VenueConfig
from marketfeed.events import Book, Event, Status
from marketfeed.runtime.venue import VenueRunner
from marketfeed.venues import make_adapter
from tests.helpers import ConsumerBooks

DEADLINE = 10.0


async def wait_until(condition: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    """Poll ``condition`` until it holds; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(0.01)


class LiveVenue:
    """One venue run live against a loopback server. Test-friendly defaults: a silent socket is stale
    after 1 s, reconnects back off between 0.05 and 0.2 s. ``config`` overrides any VenueConfig key."""

    def __init__(
        self,
        venue: str,
        symbols: tuple[str, ...] | list[str],
        ws_url: str,
        rest_url: str,
        recorder: Any = None,
        fetch_timeout: float = 2.0,
        tick_interval: float = 1.0,
        **config: object,
    ) -> None:
        self.venue = venue
        settings: dict[str, object] = {
            "ws_url": ws_url,
            "rest_url": rest_url,
            "stale_after": 1.0,
            "backoff": Backoff(base=0.05, cap=0.2, reset_after=5.0),
        }
        settings.update(config)
        self.config = VenueConfig(symbols=list(symbols), **settings)  # type: ignore[arg-type]
        self.adapter = make_adapter(venue, self.config)
        self.events: list[Event] = []
        self.books = ConsumerBooks()
        self.seq: dict[str, int | None] = {}
        self.runner = VenueRunner(
            self.adapter, self.config, self.publish, recorder,
            close_timeout=0.5, fetch_timeout=fetch_timeout, tick_interval=tick_interval,
        )
        self.task: asyncio.Task[None] | None = None

    def publish(self, events: list[Event]) -> None:
        for event in events:
            self.events.append(event)
            book = self.books.apply(event)
            if isinstance(event, Book):
                self.seq[event.symbol] = event.seq
                self.on_book(event, book)

    def on_book(self, event: Book, book: Any) -> None:
        """Per-venue checks of each book event against the consumer's book (e.g. the checksum)."""

    async def __aenter__(self) -> Any:
        self.task = asyncio.get_running_loop().create_task(self.runner.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.stop()
        assert self.task is not None
        await self.task
        # nothing in the runtime or the adapter raised along the way
        assert self.runner.counters["runtime_errors"] == 0
        assert self.runner.counters["adapter_errors"] == 0

    def statuses(self, state: str, symbol: str | None = ..., since: int = 0) -> list[Status]:  # type: ignore[assignment]
        return [
            e for e in self.events[since:]
            if isinstance(e, Status) and e.state == state and (symbol is ... or e.symbol == symbol)
        ]

    def valid(self, symbol: str) -> bool:
        return bool(self.books.valid.get((self.venue, symbol)))
