"""Test helpers: a consumer-side view of the event stream, built only from our events, the way a
trading bot would keep books. Tests compare it with the venue's own truth."""

from __future__ import annotations

from pathlib import Path

from marketfeed.book import L2Book
from marketfeed.events import BOOK_INVALID, Book, Event, Status

REPO = Path(__file__).resolve().parents[1]
SHARED_CAPTURES = REPO.parent / "shared" / "captures"


def shared_capture(relative: str) -> Path:
    """Path of a real capture under ../shared/captures; skips the test with a reason if absent."""
    import pytest

    path = SHARED_CAPTURES / relative
    if not path.exists():
        pytest.skip(f"real capture {relative} not available: ../shared/captures is absent (run from a checkout beside shared/)")
    return path


class ConsumerBooks:
    """Applies ``book`` events per (venue, symbol) and follows the validity rules of EVENTS.md.

    Records every rule violation a consumer could notice: a diff for a book that has no snapshot
    yet (or is invalid), and a book left crossed after an event.
    """

    def __init__(self) -> None:
        self.books: dict[tuple[str, str], L2Book] = {}
        self.valid: dict[tuple[str, str], bool] = {}
        self.violations: list[str] = []
        self.book_events = 0

    def apply(self, event: Event) -> L2Book | None:
        if isinstance(event, Book):
            key = (event.venue, event.symbol)
            self.book_events += 1
            book = self.books.get(key)
            if event.snapshot:
                if book is None:
                    book = self.books[key] = L2Book()
                book.apply_snapshot(event.bids, event.asks)
                self.valid[key] = True
            else:
                if book is None or not self.valid.get(key):
                    self.violations.append(f"diff without a valid snapshot: {key} seq={event.seq}")
                    return None
                book.apply(event.bids, event.asks)
            if book.crossed():
                self.violations.append(f"crossed book after {key} seq={event.seq}")
            return book
        if isinstance(event, Status) and event.state == BOOK_INVALID and event.symbol is not None:
            self.valid[(event.venue, event.symbol)] = False
        return None
