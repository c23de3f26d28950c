"""The daemon's own view of every book, kept from the event stream itself.

Adapters keep their books in venue-specific places and shapes (Binance by native symbol, Kraken
truncated to its depth, ...). The outputs that need a book (coalesced ``top`` events, snapshots for
late joiners of the WebSocket stream) instead apply the published ``book`` events, following the
validity rules of EVENTS.md exactly as a consumer would. That makes them venue-independent, and a
snapshot taken here is by construction the state after the last event already handed to every
output: a client that receives it and then the following events has no gap and no overlap.
"""

from __future__ import annotations

from marketfeed.book import L2Book
from marketfeed.events import BOOK_INVALID, Book, Event, Status

WINDOW = 64  # best levels kept sorted per side (marketfeed.book.TopWindowSide); deeper ones on request


class BookState:
    __slots__ = ("book", "checksum", "reason", "seq", "symbol", "ts_exchange", "ts_recv", "valid", "venue")

    def __init__(self, venue: str, symbol: str) -> None:
        self.venue = venue
        self.symbol = symbol
        self.book = L2Book(window=WINDOW)
        self.valid = False
        self.seq: int | None = None
        self.ts_recv = 0
        self.ts_exchange: int | None = None
        self.checksum: int | None = None
        self.reason: str | None = "no snapshot yet"

    def snapshot(self) -> Book | None:
        """The whole book as a snapshot event stamped like the last event applied; None while invalid."""
        if not self.valid:
            return None
        b, a = self.book.bids, self.book.asks
        return Book(
            self.venue, self.symbol, self.ts_recv, self.ts_exchange, self.seq, True,
            b.top(len(b)), a.top(len(a)), self.checksum,
        )


class EventBooks:
    """Books per (venue, symbol) from ``book`` events and ``book_invalid`` statuses."""

    def __init__(self) -> None:
        self.states: dict[tuple[str, str], BookState] = {}

    def get(self, venue: str, symbol: str) -> BookState | None:
        return self.states.get((venue, symbol))

    def apply(self, event: Event) -> BookState | None:
        """Apply one event; return the book's state when the event was a book event applied to a valid
        book (what a ``top`` may follow), else None."""
        t = type(event)
        if t is Book:
            key = (event.venue, event.symbol)  # type: ignore[union-attr]
            state = self.states.get(key)
            if state is None:
                state = self.states[key] = BookState(*key)
            if event.snapshot:  # type: ignore[union-attr]
                state.book.apply_snapshot(event.bids, event.asks)  # type: ignore[union-attr]
                state.valid = True
                state.reason = None
            elif state.valid:
                state.book.apply(event.bids, event.asks)  # type: ignore[union-attr]
            else:  # the daemon never sends this (EVENTS.md rule 3); a consumer ignores it too
                return None
            state.seq = event.seq  # type: ignore[union-attr]
            state.ts_recv = event.ts_recv
            state.ts_exchange = event.ts_exchange
            state.checksum = event.checksum  # type: ignore[union-attr]
            return state
        if t is Status and event.state == BOOK_INVALID and event.symbol is not None:  # type: ignore[union-attr]
            state = self.states.get((event.venue, event.symbol))  # type: ignore[arg-type]
            if state is None:
                state = self.states[(event.venue, event.symbol)] = BookState(event.venue, event.symbol)  # type: ignore[arg-type]
            state.valid = False
            state.reason = event.reason or "book invalid"  # type: ignore[union-attr]
            state.book.clear()
        return None
