"""Coalesced top of book: ``top`` events (EVENTS.md) derived from the book events, per symbol.

The latest state wins: after a book update the best ``depth`` levels per side are due, but at most
one ``top`` per ``min_interval`` per symbol is emitted; updates in between only mark the symbol
pending, and the pending state is emitted when the interval has passed (from a timer when the
book goes quiet). A top equal to the last one emitted is not repeated; nothing is emitted while the
book is invalid. Time is the events' ``ts_recv``, so replaying a capture gives the same tops as live
(``due(now)`` with the replayed time); live, the daemon calls ``due(time.time_ns())`` from a timer.

``DerivedFeed`` is the one place the daemon publishes through: it keeps the event books
(marketfeed.eventbooks), adds the tops, and hands each batch to every output (the bus, the stream).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from marketfeed.config import Config
from marketfeed.eventbooks import BookState, EventBooks
from marketfeed.events import BOOK_INVALID, Event, Status, Top

Key = tuple[str, str]


class TopRule:
    __slots__ = ("depth", "interval_ns")

    def __init__(self, depth: int, min_interval: float) -> None:
        self.depth = depth
        self.interval_ns = int(min_interval * 1e9)


def top_rules(config: Config) -> dict[Key, TopRule]:
    """(venue, symbol) -> rule: the venue's ``top`` for each symbol, replaced by ``top_symbols``."""
    rules: dict[Key, TopRule] = {}
    for venue, vc in config.venues.items():
        for symbol in vc.symbols:
            tc = vc.top_symbols.get(symbol, vc.top)
            if tc is not None and tc.enabled:
                rules[(venue, symbol)] = TopRule(tc.depth, tc.min_interval)
    return rules


class TopCoalescer:
    def __init__(self, rules: dict[Key, TopRule], books: EventBooks) -> None:
        self.rules = rules
        self.books = books
        self.last_ts: dict[Key, int] = {}  # ts of the last top emitted
        self.last_levels: dict[Key, tuple[list[Any], list[Any]]] = {}
        self.pending: dict[Key, int] = {}  # key -> deadline (ns) of a state not yet emitted
        self.emitted = 0
        self.coalesced = 0  # updates folded into a later top

    def on_batch(self, events: list[Event]) -> list[Top]:
        """Apply a batch to the books; return the tops due now."""
        books = self.books
        rules = self.rules
        touched: dict[Key, BookState] | None = None
        for e in events:
            state = books.apply(e)
            t = type(e)
            if state is not None:
                key = (state.venue, state.symbol)
                if key in rules:
                    if touched is None:
                        touched = {}
                    touched[key] = state
            elif t is Status and e.state == BOOK_INVALID and e.symbol is not None:  # type: ignore[union-attr]
                key = (e.venue, e.symbol)  # type: ignore[assignment]
                self.pending.pop(key, None)
                self.last_levels.pop(key, None)
                if touched is not None:
                    touched.pop(key, None)
        if touched is None:
            return []
        out: list[Top] = []
        for key, state in touched.items():
            now = state.ts_recv
            last = self.last_ts.get(key)
            rule = rules[key]
            if last is None or now - last >= rule.interval_ns:
                self.pending.pop(key, None)
                top = self._top(key, state, now)
                if top is not None:
                    out.append(top)
            else:
                self.coalesced += 1
                self.pending[key] = last + rule.interval_ns
        return out

    def due(self, now: int) -> list[Top]:
        """Tops whose interval has passed at ``now`` (ns) and that were held back until then."""
        if not self.pending:
            return []
        out: list[Top] = []
        for key, deadline in list(self.pending.items()):
            if deadline <= now:
                del self.pending[key]
                state = self.books.get(*key)
                if state is not None and state.valid:
                    # emitted, as far as the interval goes, when it was due (a replay calls this late)
                    top = self._top(key, state, max(deadline, state.ts_recv))
                    if top is not None:
                        out.append(top)
        return out

    def next_deadline(self) -> int | None:
        return min(self.pending.values()) if self.pending else None

    def _top(self, key: Key, state: BookState, now: int) -> Top | None:
        bids, asks = state.book.top(self.rules[key].depth)
        if self.last_levels.get(key) == (bids, asks):
            return None  # the update was deeper than the top: nothing new for these consumers
        self.last_levels[key] = (bids, asks)
        self.last_ts[key] = now
        self.emitted += 1
        return Top(state.venue, state.symbol, state.ts_recv, state.ts_exchange, state.seq, bids, asks)


Output = Callable[[list[Event]], Any]


class DerivedFeed:
    """What the runners publish into: keeps the event books, adds tops, fans each batch out to the
    outputs in order (synchronously: the books are current when any output sees the batch)."""

    def __init__(self, config: Config, outputs: list[Output] | None = None, keep_books: bool = True) -> None:
        """``keep_books`` False (a replay with no tops configured): no books are kept unless tops or
        the stream need them. The daemon keeps them always: a sink added by a reload starts from them."""
        self.books = EventBooks()
        self.tops = TopCoalescer(top_rules(config), self.books)
        self.outputs: list[Output] = list(outputs or [])
        self.active = keep_books or bool(self.tops.rules) or config.server is not None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def publish(self, events: list[Event]) -> None:
        tops = self.tops.on_batch(events) if self.active else None
        if tops:
            events = [*events, *tops]
        for output in self.outputs:
            output(events)
        if self.tops.pending:
            self._arm()

    def reconfigure(self, config: Config) -> None:
        """New top settings (after a reload): the books and the state of unchanged symbols are kept."""
        rules = top_rules(config)
        for key in [k for k in self.tops.pending if k not in rules]:
            del self.tops.pending[key]
        self.tops.rules = rules
        self.active = bool(rules) or config.server is not None or self.active

    def derive(self, events: list[Event]) -> list[Event]:
        """Replay (no timers, time is the events' own): the batch with the tops it makes, preceded
        by the held-back tops whose interval ended before the batch's first event."""
        if not events or not self.active:
            return events
        held = self.tops.due(events[0].ts_recv - 1) if self.tops.pending else []
        tops = self.tops.on_batch(events)
        if held or tops:
            return [*held, *events, *tops]
        return events

    def finish(self) -> list[Top]:
        """Replay: the tops still held back at the end of the recording."""
        return self.tops.due(2**63)

    def _arm(self) -> None:
        deadline = self.tops.next_deadline()
        if deadline is None or (self._timer is not None and self._timer_at is not None and self._timer_at <= deadline):
            return
        if self._loop is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:  # replay without a loop: the caller drives due()
                return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, (deadline - time.time_ns()) / 1e9)
        self._timer_at = deadline
        self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = self._timer_at = None
        tops = self.tops.due(time.time_ns())
        if tops:
            for output in self.outputs:
                output(tops)
        if self.tops.pending:
            self._arm()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None


__all__ = ["DerivedFeed", "TopCoalescer", "TopRule", "top_rules"]
