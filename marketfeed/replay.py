"""Replay: captures -> the same adapters as the live daemon -> events. Never touches the network.

Records are delivered in file order; the adapters' commands (fetch a snapshot, send a subscribe) are
dropped, because the capture already holds what the live run received in answer. Several files are
replayed as one continuous recording (rotated files in order): an ``open`` marked ``resumed`` for a
connection already open is skipped.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from marketfeed.capture import Close, Open, Recv, Rest, read_capture
from marketfeed.config import Config
from marketfeed.events import Event
from marketfeed.protocol import Adapter
from marketfeed.venues import UnknownVenue, make_adapter


class ReplayError(Exception):
    """A capture that cannot be replayed; the message names the file (and line where known)."""


class Replayer:
    """Feeds capture records to one adapter per venue, created on first use (replay mode unless a
    config gives the venue's settings)."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config
        self.adapters: dict[str, Adapter] = {}
        self._conn_adapter: dict[str, Adapter] = {}
        self.records = 0

    def adapter(self, venue: str) -> Adapter:
        adapter = self.adapters.get(venue)
        if adapter is None:
            venue_config = self.config.venues.get(venue) if self.config is not None else None
            adapter = self.adapters[venue] = make_adapter(venue, venue_config)
        return adapter

    def run(self, path: str | Path, emit: Callable[[list[Event]], None]) -> None:
        """Replay one file, calling ``emit`` with each batch of events in order."""
        try:
            header, records = read_capture(path)
            for venue in header.venues:
                self.adapter(venue)
        except UnknownVenue as exc:
            raise ReplayError(f"{path}: {exc}") from None
        conn_adapter = self._conn_adapter
        n = 0
        for rec in records:
            n += 1
            # Recv is by far the most common record: test it first
            if type(rec) is Recv:
                adapter = conn_adapter.get(rec.conn)
                if adapter is None:
                    raise ReplayError(f"{path}: record {n}: frame for connection {rec.conn!r} with no open record")
                adapter.on_frame(rec.conn, rec.ts, rec.data if rec.data is not None else rec.payload())
            elif type(rec) is Open:
                if rec.resumed and rec.conn in conn_adapter:
                    continue
                try:
                    adapter = self.adapter(rec.venue)
                except UnknownVenue as exc:
                    raise ReplayError(f"{path}: record {n}: {exc}") from None
                conn_adapter[rec.conn] = adapter
                adapter.on_open(rec.conn, rec.ts, rec.url, rec.plan)
            elif type(rec) is Rest:
                try:
                    adapter = self.adapter(rec.venue)
                except UnknownVenue as exc:
                    raise ReplayError(f"{path}: record {n}: {exc}") from None
                adapter.on_rest(rec.ts, rec.url, rec.status, rec.data)
            elif type(rec) is Close:
                adapter = conn_adapter.pop(rec.conn, None)
                if adapter is None:
                    continue  # a close for a connection we never saw open: nothing to undo
                adapter.on_close(rec.conn, rec.ts, rec.code, rec.reason)
            else:  # Send: informational
                continue
            if adapter.events:
                emit(adapter.take_events())
            if adapter.commands:
                adapter.commands.clear()
        self.records += n


def replay_events(paths: Iterable[str | Path], config: Config | None = None) -> Iterator[Event]:
    """All events of replaying ``paths`` in order, as one continuous recording."""
    out: list[Event] = []
    replayer = Replayer(config)
    for path in paths:
        replayer.run(path, out.extend)
        yield from out
        out.clear()


def replay_to(
    paths: Iterable[str | Path], emit: Callable[[list[Event]], None], config: Config | None = None
) -> Replayer:
    """Replay ``paths`` with the cyclic garbage collector paused: the stream allocates millions of
    short-lived acyclic objects, and collections would cost more than the work itself."""
    replayer = Replayer(config)
    gc.collect()
    gc.freeze()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for path in paths:
            replayer.run(path, emit)
    finally:
        if was_enabled:
            gc.enable()
        gc.unfreeze()
    return replayer
