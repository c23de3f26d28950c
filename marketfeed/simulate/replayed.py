"""A capture as the source of a simulator's true book.

The capture is replayed through our own adapter (``marketfeed.replay.replay_events``: the venue's own
sync algorithm, checked against the venue's checksums or bookTicker in the replay tests), so what the
simulator serves is the book the venue published, step by step. Each ``Book`` event of the replay is
one step of the true book: a diff's levels as they are, a later snapshot (a resync in the recording)
as the difference between the book so far and the snapshot. At the end of the recording the book
returns to its first snapshot, as one more step, and the recording plays again: the served stream
stays consistent for as long as the server runs.

Prices and sizes become integers of the finest decimal unit the recording shows per symbol, so the
simulator's integer books and its text formatting work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from marketfeed.events import Book, Trade

Levels = dict[float, float]


def _places(x: float) -> int:
    text = repr(x)
    if "e" in text or "E" in text:
        text = f"{x:.12f}".rstrip("0")
    return len(text.partition(".")[2].rstrip("0")) if "." in text else 0


@dataclass
class ReplayedSymbol:
    """One symbol of a recording: its first book, the steps after it, its trades (price, size, buy)."""

    symbol: str  # normalised name
    bids: Levels
    asks: Levels
    steps: list[tuple[list[tuple[float, float]], list[tuple[float, float]]]] = field(default_factory=list)
    trades: list[tuple[float, float, bool]] = field(default_factory=list)
    price_places: int = 0
    qty_places: int = 0

    def looped_steps(self) -> list[tuple[list[tuple[float, float]], list[tuple[float, float]]]]:
        """The steps plus the one back to the first book, so playing them again continues exactly."""
        bids, asks = dict(self.bids), dict(self.asks)
        for b, a in self.steps:
            _apply(bids, b)
            _apply(asks, a)
        back = (_difference(bids, self.bids), _difference(asks, self.asks))
        return self.steps + ([back] if back[0] or back[1] else [])


def _apply(side: Levels, changes: list[tuple[float, float]]) -> None:
    for p, q in changes:
        if q:
            side[p] = q
        else:
            side.pop(p, None)


def _difference(now: Levels, target: Levels) -> list[tuple[float, float]]:
    out = [(p, 0.0) for p in now if p not in target]
    out += [(p, q) for p, q in target.items() if now.get(p) != q]
    return out


def load_capture(paths: list[str | Path]) -> dict[str, ReplayedSymbol]:
    """Every symbol of the recording with a book, by normalised name."""
    import structlog

    from marketfeed.replay import replay_events

    structlog.get_logger("marketfeed.simulate").info("loading capture", paths=[str(p) for p in paths])
    symbols: dict[str, ReplayedSymbol] = {}
    current: dict[str, tuple[Levels, Levels]] = {}
    for event in replay_events([str(p) for p in paths]):
        if isinstance(event, Book):
            sym = symbols.get(event.symbol)
            if event.snapshot:
                if sym is None:
                    sym = symbols[event.symbol] = ReplayedSymbol(event.symbol, dict(event.bids), dict(event.asks))
                    current[event.symbol] = (dict(event.bids), dict(event.asks))
                    _note_places(sym, event.bids, event.asks)
                    continue
                bids, asks = current[event.symbol]
                step = (_difference(bids, dict(event.bids)), _difference(asks, dict(event.asks)))
            elif sym is None:
                continue  # a diff before any snapshot: the replay would not emit one, but be safe
            else:
                step = (list(event.bids), list(event.asks))
            bids, asks = current[event.symbol]
            _apply(bids, step[0])
            _apply(asks, step[1])
            sym.steps.append(step)
            _note_places(sym, step[0], step[1])
        elif isinstance(event, Trade) and event.symbol in symbols:
            symbols[event.symbol].trades.append((event.price, event.size, event.side == "buy"))
    return symbols


def _note_places(sym: ReplayedSymbol, bids: object, asks: object) -> None:
    for levels in (bids, asks):
        for p, q in levels:  # type: ignore[attr-defined]
            sym.price_places = max(sym.price_places, _places(p))
            sym.qty_places = max(sym.qty_places, _places(q))
