"""Binance diff-depth synchronisation (EXCHANGES.md 1.5 spot, 2.5 USD-M) as a pure state machine.

It only looks at update ids (``U``, ``u`` and, on USD-M, ``pu``) and answers with a verdict; the adapter
applies levels and emits events. Update ids are per symbol and shared by every connection, which is
what lets the same rules accept a bridging diff after a snapshot and after a connection hand-over.

Spot:  stale if ``u <= book_id``; gap if ``U > book_id + 1``; otherwise apply (this also bridges).
USD-M: apply if ``pu == book_id``; after a snapshot or hand-over the first diff may instead bridge
       with ``U <= book_id <= u``; stale if ``u <= book_id``; anything else is a gap.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

# verdicts
APPLY = "apply"
STALE = "stale"
GAP = "gap"
BUFFERED = "buffered"
BUFFER_OVERFLOW = "buffer_overflow"  # buffered, and the oldest buffered diff was dropped
SYNCED = "synced"
TOO_OLD = "too_old"  # the snapshot does not reach the buffered diffs: fetch a newer one
IGNORED = "ignored"  # a snapshot while the book is live

WAITING = 0  # buffering diffs until a snapshot arrives
LIVE = 1


class Diff(Protocol):
    U: int
    u: int
    pu: int | None


class DepthSync:
    __slots__ = ("futures", "state", "book_id", "buffer", "bridging", "gap_expected")

    def __init__(self, futures: bool, max_buffer: int = 10_000) -> None:
        self.futures = futures
        self.state = WAITING
        self.book_id = 0
        self.buffer: deque[Diff] = deque(maxlen=max_buffer)
        self.bridging = False
        self.gap_expected = ""  # what the last gap expected, for its status message

    def reset(self) -> None:
        """Forget the book: buffer from the next diff on."""
        self.state = WAITING
        self.book_id = 0
        self.buffer.clear()
        self.bridging = False

    def hand_over(self) -> None:
        """The book's diffs now come from another connection: its first diff may bridge."""
        if self.state == LIVE:
            self.bridging = True

    def expected(self) -> str:
        """What the next live diff must show, for log and status messages."""
        if self.futures and not self.bridging:
            return f"pu={self.book_id}"
        return f"U<={self.book_id + 1}"

    def check(self, d: Diff) -> str:
        """Verdict for a diff while the book is live (does not change state)."""
        book_id = self.book_id
        if self.futures:
            if d.pu == book_id:
                return APPLY
            if self.bridging and d.U <= book_id <= d.u:
                return APPLY
            if d.u <= book_id:
                return STALE
            return GAP
        if d.u <= book_id:
            return STALE
        if d.U > book_id + 1:
            return GAP
        return APPLY

    def on_diff(self, d: Diff) -> str:
        if self.state == LIVE:
            # the usual case first, without a call: the diff continues the book exactly
            if (d.pu == self.book_id) if self.futures else (d.U == self.book_id + 1):
                self.book_id = d.u
                self.bridging = False
                return APPLY
            verdict = self.check(d)
            if verdict == APPLY:
                self.book_id = d.u
                self.bridging = False
            elif verdict == GAP:
                self.gap_expected = self.expected()
                self.reset()
                self.buffer.append(d)
            return verdict
        buffer = self.buffer
        overflow = len(buffer) == buffer.maxlen
        buffer.append(d)
        return BUFFER_OVERFLOW if overflow else BUFFERED

    def on_snapshot(self, last_update_id: int) -> tuple[str, list[Diff]]:
        """Bridge a REST snapshot to the buffered diffs.

        Returns (SYNCED, diffs to apply after loading the snapshot), (TOO_OLD, []) when the snapshot
        predates the buffer, (GAP, []) when the buffer itself is broken (the buffer then restarts at the
        break), or (IGNORED, []) when the book is already live.
        """
        if self.state == LIVE:
            return IGNORED, []
        buffer = self.buffer
        futures = self.futures
        # drop what the snapshot already contains (spot: u <= id; USD-M: u < id)
        while buffer and (buffer[0].u < last_update_id or (not futures and buffer[0].u == last_update_id)):
            buffer.popleft()
        if buffer:
            first = buffer[0]
            bridges = first.U <= last_update_id if futures else first.U <= last_update_id + 1
            if not bridges:
                return TOO_OLD, []
        self.state = LIVE
        self.book_id = last_update_id
        self.bridging = True
        to_apply: list[Diff] = []
        while buffer:
            d = buffer.popleft()
            verdict = self.check(d)
            if verdict == APPLY:
                self.book_id = d.u
                self.bridging = False
                to_apply.append(d)
            elif verdict == GAP:
                self.state = WAITING
                self.book_id = 0
                self.bridging = False
                buffer.appendleft(d)
                return GAP, []
        return SYNCED, to_apply
