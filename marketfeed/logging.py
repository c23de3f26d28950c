"""Logging helpers. Library code only calls ``structlog.get_logger()``; the CLI configures structlog.

``RateLimitedLog`` keeps a flood of one kind of warning (a venue sending garbage a thousand times a
second) down to one line per key per interval, carrying the count of lines it held back. It is driven
by the caller's timestamps, not a clock, so pure adapters can use it.
"""

from __future__ import annotations

from typing import Any

import structlog

SECOND_NS = 1_000_000_000


class RateLimitedLog:
    def __init__(self, logger: Any = None, interval_s: float = 10.0) -> None:
        self._log = logger if logger is not None else structlog.get_logger("marketfeed")
        self._interval = int(interval_s * SECOND_NS)
        self._state: dict[Any, tuple[int, int]] = {}  # key -> (ts of last line, lines held back)

    def allow(self, key: Any, ts: int) -> tuple[bool, int]:
        """Whether a line for ``key`` may be written at ``ts``, and how many were held back before it."""
        last = self._state.get(key)
        if last is None or ts - last[0] >= self._interval:
            self._state[key] = (ts, 0)
            return True, last[1] if last else 0
        self._state[key] = (last[0], last[1] + 1)
        return False, 0

    def warning(self, key: Any, ts: int, event: str, **kw: Any) -> bool:
        ok, held = self.allow(key, ts)
        if ok:
            if held:
                kw["suppressed"] = held
            self._log.warning(event, **kw)
        return ok

    def error(self, key: Any, ts: int, event: str, **kw: Any) -> bool:
        ok, held = self.allow(key, ts)
        if ok:
            if held:
                kw["suppressed"] = held
            self._log.error(event, **kw)
        return ok
