"""A Binance capture replayed and checked against the venue's own truth in it; shared by the tests of
the real captures (../shared) and of the project's own fixtures (fixtures/).

Truth 1: ``bookTicker`` carries the order-book update id ``u``. After each of our book events whose
``seq`` equals a bookTicker's ``u``, the book a consumer rebuilt from our events alone must show that
bookTicker's best bid/ask price and size.
Truth 2: every ``trade``/``aggTrade`` frame in the capture comes out exactly once, with the taker side
from ``m`` (buyer is maker -> the taker sold).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marketfeed.capture import Recv, read_capture
from marketfeed.events import Book, Event, Trade
from marketfeed.replay import Replayer
from tests.helpers import ConsumerBooks

Top = tuple[float, float, float, float]  # best bid, its size, best ask, its size


def venue_truth(path: Path) -> tuple[dict[tuple[str, int], Top], dict[tuple[str, str], str]]:
    """bookTickers by (native symbol, u) and trades by (native symbol, id) -> taker side, read
    straight from the capture with the standard json module (independent of our decoders)."""
    tickers: dict[tuple[str, int], Top] = {}
    trades: dict[tuple[str, str], str] = {}
    _, records = read_capture(path)
    for rec in records:
        if type(rec) is not Recv:
            continue
        msg = json.loads(rec.data)
        stream, data = msg.get("stream", ""), msg.get("data", {})
        if stream.endswith("@bookTicker"):
            tickers[(data["s"], data["u"])] = (float(data["b"]), float(data["B"]), float(data["a"]), float(data["A"]))
        elif stream.endswith(("@trade", "@aggTrade")):
            tid = str(data["t"] if data["e"] == "trade" else data["a"])
            trades[(data["s"], tid)] = "sell" if data["m"] else "buy"
    return tickers, trades


@dataclass
class Checked:
    """What replaying one capture gave, and how it compared with the venue's truth."""

    events: list[Event]
    adapter: Any  # the one BinanceAdapter the capture drove
    consumer: ConsumerBooks
    tickers: dict[tuple[str, int], Top]  # the venue's bookTickers
    truth_trades: dict[tuple[str, str], str]  # the venue's trades -> taker side
    checked: set[tuple[str, int]] = field(default_factory=set)  # bookTickers a book event was checked against
    checks: int = 0
    mismatches: list[str] = field(default_factory=list)
    trades: dict[tuple[str, str], str] = field(default_factory=dict)  # our trades -> side
    duplicate_trades: list[tuple[str, str]] = field(default_factory=list)


def replay_against_truth(path: Path) -> Checked:
    """Replay ``path`` (replay mode: no config) and check every book event that has a bookTicker at
    its ``seq`` and every trade, through a consumer that sees only our events."""
    tickers, truth_trades = venue_truth(path)
    events: list[Event] = []
    replayer = Replayer()
    replayer.run(path, events.extend)
    (adapter,) = replayer.adapters.values()
    native = {st.symbol: st.native for st in adapter.states.values()}
    result = Checked(events, adapter, ConsumerBooks(), tickers, truth_trades)
    for event in events:
        book = result.consumer.apply(event)
        if isinstance(event, Book) and book is not None:
            key = (native[event.symbol], event.seq)
            truth = tickers.get(key)
            if truth is not None:
                result.checks += 1
                result.checked.add(key)
                bid, ask = book.best_bid(), book.best_ask()
                if (bid[0], bid[1], ask[0], ask[1]) != truth and len(result.mismatches) < 10:
                    result.mismatches.append(f"{key}: book shows {bid} / {ask}, bookTicker {truth}")
        elif isinstance(event, Trade):
            key = (native[event.symbol], event.trade_id)
            if key in result.trades:
                result.duplicate_trades.append(key)
            result.trades[key] = event.side
    return result
