"""A venue's REST request-weight budget: a token bucket shared by every fetch of the venue.

Binance charges each REST request a weight (a depth snapshot of 1000 levels costs 50 of the 6000 per
minute an IP may spend) and bans IPs that keep going after a 429. After a reconnect every symbol needs
a snapshot at once; taking them through this bucket turns that burst into a paced sequence. A 429 or
418 carries ``Retry-After``: ``pause_until`` then holds every waiter until that moment.

Waiters are served in arrival order (an asyncio.Lock is FIFO), and a waiter sleeps exactly until
enough weight has refilled: no polling.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class WeightBudget:
    def __init__(
        self,
        per_minute: float,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``per_minute``: refill rate. ``capacity``: the most weight that can be spent at once (the
        burst), by default a whole minute's worth; the bucket starts full."""
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.per_minute = float(per_minute)
        self.capacity = float(capacity if capacity is not None else per_minute)
        if self.capacity <= 0:
            raise ValueError("capacity must be positive")
        self._rate = self.per_minute / 60.0  # weight per second
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.capacity
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.spent = 0  # total weight granted
        self.granted = 0  # number of acquisitions granted
        self.waiting = 0  # acquisitions currently waiting

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self._rate)
            self._updated = now

    @property
    def available(self) -> float:
        self._refill(self._clock())
        return self._tokens

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def pause_until(self, deadline: float) -> None:
        """Grant nothing before ``deadline`` (on the budget's clock, time.monotonic by default); every
        waiter, and every later caller, waits. A later deadline extends the pause, an earlier one
        does not shorten it."""
        if deadline > self._paused_until:
            self._paused_until = deadline

    async def acquire(self, weight: float = 1) -> None:
        """Wait until ``weight`` may be spent, then spend it. A weight above the capacity is charged
        as the whole capacity (otherwise it could never be granted)."""
        need = min(float(weight), self.capacity)
        self.waiting += 1
        try:
            async with self._lock:
                while True:
                    now = self._clock()
                    if now < self._paused_until:
                        await self._sleep(self._paused_until - now)
                        continue
                    self._refill(now)
                    if self._tokens >= need:
                        self._tokens -= need
                        self.spent += int(weight)
                        self.granted += 1
                        return
                    await self._sleep((need - self._tokens) / self._rate)
        finally:
            self.waiting -= 1
