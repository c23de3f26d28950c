"""Logging helpers. Library code only calls ``structlog.get_logger()``; the CLI configures structlog.

``RateLimitedLog`` keeps a flood of one kind of warning (a venue sending garbage a thousand times a
second) down to one line per key per interval, carrying the count of lines it held back. It is driven
by the caller's timestamps, not a clock, so pure adapters can use it.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog

SECOND_NS = 1_000_000_000

# scheme://user:password@host -> scheme://user:***@host (and scheme://:token@host -> scheme://:***@host)
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``: sink names and URLs that
    carry credentials (``redis://:${env:REDIS_PASSWORD}@host``) go into logs and metric labels."""
    if "@" not in text:
        return text
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


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


def configure_logging(level: str = "info", format: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog (and the standard library's logging, which aiohttp uses) for the CLI.

    Logs go to ``stream`` (stderr by default) so that the events on stdout stay pure JSON Lines.
    ``format``: "json", "console", or "auto" (JSON unless stdout is a terminal: a daemon under a
    supervisor or in a pipe writes machine-readable logs, a person at a terminal gets readable ones).
    Per-connection context bound with ``structlog.contextvars.bound_contextvars`` is merged into
    every line.
    """
    stream = stream if stream is not None else sys.stderr
    if format == "auto":
        format = "console" if sys.stdout.isatty() else "json"
    numeric = _LEVELS[level.lower()]
    renderer: Any
    if format == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if format == "json":
        processors.append(structlog.processors.format_exc_info)
    processors.append(renderer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through the standard library: same stream, same level.
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_marketfeed", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream)
    handler._marketfeed = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    # debug is for our own code: asyncio and aiohttp at debug level would drown it
    root.setLevel(max(numeric, logging.INFO))


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
