"""`marketfeed replay --config` adds the config's coalesced `top` events, as the live sinks get them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from marketfeed.events import Book, Top, decode
from tests.helpers import REPO, ConsumerBooks

FIXTURE = REPO / "fixtures" / "binance-spot-sim.capture.jsonl.gz"
MARKETFEED = [sys.executable, "-m", "marketfeed"]


def replay(tmp_path: Path, config: str | None) -> list:
    cmd = [*MARKETFEED, "replay", str(FIXTURE), "--out", "-"]
    if config is not None:
        path = tmp_path / "tops.toml"
        path.write_text(config)
        cmd += ["--config", str(path)]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
    return [decode(line) for line in out.splitlines()]


def test_replay_with_top_settings_adds_coalesced_tops_equal_to_the_book(tmp_path: Path) -> None:
    min_interval_ns = 2_000_000  # 2 ms: the fixture's diffs come about 1 ms apart
    events = replay(tmp_path, '[venues.binance]\nsymbols = ["BTC-USDT"]\ntop = { depth = 3, min_interval = 0.002 }\n')
    plain = replay(tmp_path, None)
    assert [e for e in events if not isinstance(e, Top)] == plain  # tops are added, nothing else changes

    books = ConsumerBooks()
    tops = 0
    for event in events:
        if isinstance(event, Top):
            tops += 1
            book = books.books[("binance", "BTC-USDT")]
            assert books.valid[("binance", "BTC-USDT")]
            assert (event.bids, event.asks) == tuple(map(list, book.top(3)))  # the top of the book as it is now
        else:
            books.apply(event)
    # coalesced: at most one top per interval of the recording's own time (plus the first)
    span = events[-1].ts_recv - events[0].ts_recv
    book_events = sum(isinstance(e, Book) for e in events)
    assert 10 < tops <= span // min_interval_ns + 1
    assert tops < book_events
