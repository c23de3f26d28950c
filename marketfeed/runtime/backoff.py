"""Reconnect delays: exponential backoff with full jitter.

``delay = random(0, min(cap, base * 2**attempt))`` (the "full jitter" of the AWS architecture note):
after a venue-wide outage every client picks a different moment to come back, so the venue sees a
spread of reconnects rather than a synchronised storm. The attempt count starts over once a
connection has been healthy for ``reset_after`` seconds, so a connection that drops once a day comes
back fast and one that flaps backs off.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class ReconnectBackoff:
    def __init__(
        self,
        base: float = 1.0,
        cap: float = 60.0,
        reset_after: float = 60.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if not (0 < base <= cap):
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.reset_after = reset_after
        self._rand = rand  # injectable for tests: returns a float in [0, 1)
        self.attempt = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        # cap the exponent too: 2**attempt overflows a float after ~1000 failures
        return min(self.cap, self.base * 2 ** min(self.attempt, 64))

    def next_delay(self, healthy_for: float = 0.0) -> float:
        """The delay before the next attempt. ``healthy_for`` is how long the connection that just ended
        delivered data (0 after a failed connect); a long enough healthy spell resets the count."""
        if healthy_for >= self.reset_after:
            self.attempt = 0
        delay = self._rand() * self.ceiling()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
