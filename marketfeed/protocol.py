"""The adapter interface: a venue adapter is a pure state machine.

It is fed what happened (a connection opened, a frame arrived, a connection ended, a REST response came
back, time passed) and answers by appending normalised events to ``adapter.events`` and commands for
the runtime to ``adapter.commands``. It never awaits, sleeps, reads a clock or touches a socket, so the
live runtime, ``replay`` and the tests drive the very same code.

Rules every adapter keeps:
- Events come only from ``start``, ``on_open``, ``on_frame``, ``on_close`` and ``on_rest``: the inputs a
  capture records. ``on_tick`` may only issue commands, so replaying a capture gives exactly the live
  events.
- A venue's misbehaviour (gap, malformed frame, error response) is counted in ``counters``, logged
  (rate-limited) and surfaced as a ``status`` event where a book is affected; never an exception.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec

from marketfeed.events import Event

# --- commands: what the adapter asks the runtime to do -------------------------------------------


class Connect(msgspec.Struct, frozen=True):
    """Open a WebSocket to ``url``. ``plan`` is the adapter's own description of what the connection
    carries (for Binance, its stream names); it comes back in ``on_open`` and is recorded in the
    capture's ``open`` record, so replay hands the adapter the same plan."""

    url: str
    plan: Any = None
    replaces: str | None = None  # make-before-break: the connection this one will replace


class Send(msgspec.Struct, frozen=True):
    """Send a text frame on connection ``conn``."""

    conn: str
    data: str


class Fetch(msgspec.Struct, frozen=True):
    """GET ``url`` and hand the response to ``on_rest``. ``weight`` is charged to the venue's request
    budget before the request goes out; ``delay`` (seconds) is a minimum wait first (retry pacing)."""

    url: str
    weight: int = 1
    delay: float = 0.0


class Disconnect(msgspec.Struct, frozen=True):
    """Close connection ``conn``; the runtime does not reconnect it when ``final`` is true (a
    replaced connection), and reconnects with backoff otherwise."""

    conn: str
    reason: str
    final: bool = False


Command = Connect | Send | Fetch | Disconnect


def rest_problem(status: int, body: str, error_decoder: msgspec.json.Decoder) -> str:
    """One line saying why a REST request failed, for logs and status events: the venue's own
    ``code``/``msg`` error body where ``error_decoder`` reads one, else the start of the body."""
    if status == 0:
        return "no response (timeout or connection error)"
    try:
        err = error_decoder.decode(body)
        return f"HTTP {status}: code {err.code}: {err.msg}"
    except msgspec.DecodeError:
        return f"HTTP {status}: {body[:200]!r}"


class Adapter:
    """Base class of every venue adapter. Subclasses override the ``on_*`` methods they need."""

    venue: str = ""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.commands: list[Command] = []
        self.counters: Counter[str] = Counter()

    # -- inputs -----------------------------------------------------------------------------------

    def start(self, ts: int) -> None:
        """Live start: ask for metadata and connections. Replay does not call it."""

    def on_open(self, conn: str, ts: int, url: str, plan: Any = None) -> None:
        """Connection ``conn`` opened. ``plan`` is None for captures that did not record one."""

    def on_frame(self, conn: str, ts: int, data: str | bytes) -> None:
        """A frame arrived on ``conn`` (text as str, binary as bytes) at ``ts`` (ns)."""

    def on_close(self, conn: str, ts: int, code: int | None, reason: str | None) -> None:
        """Connection ``conn`` ended (clean close, error, stale timeout)."""

    def on_rest(self, ts: int, url: str, status: int, body: str) -> None:
        """A REST response for ``url``. ``status`` 0 means no HTTP answer (timeout, refused)."""

    def on_tick(self, ts: int) -> None:
        """Time passed (about once a second live; derived from record times in replay)."""

    # -- outputs ----------------------------------------------------------------------------------

    def take_events(self) -> list[Event]:
        events = self.events
        self.events = []
        return events

    def take_commands(self) -> list[Command]:
        commands = self.commands
        self.commands = []
        return commands
