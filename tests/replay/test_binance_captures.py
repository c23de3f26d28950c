"""Replays of the real Binance captures in ../shared/captures, checked against the venue's own truth
(``bookTicker`` at each update id, every trade once with its side: see ``tests/replay/binance_truth.py``).
They skip where ../shared is absent; ``test_binance_fixtures.py`` checks the same on the project's own
captures in fixtures/, always."""

from __future__ import annotations

import pytest

from marketfeed.events import Book, Status
from marketfeed.replay import Replayer
from tests.helpers import shared_capture
from tests.replay.binance_truth import replay_against_truth

CAPTURES = [
    # (path, minimum bookTicker matches we must be able to check)
    ("binance/spot-btcusdt-20240808.capture.jsonl.gz", 1000),
    ("binance-usdm/usdm-btcusdt-20240808.capture.jsonl.gz", 600),
    ("binance/cryptofeed-4symbols-20211012.capture.jsonl.gz", 20),
    ("binance-usdm/cryptofeed-4symbols-20210722.capture.jsonl.gz", 40),
]


@pytest.mark.parametrize("relative,min_checks", CAPTURES, ids=[c[0] for c in CAPTURES])
def test_books_match_book_ticker_and_trades_come_out_once(relative: str, min_checks: int) -> None:
    result = replay_against_truth(shared_capture(relative))
    assert result.consumer.violations == []
    assert result.mismatches == []
    assert result.checks >= min_checks, f"only {result.checks} bookTicker checks: the oracle did not line up"
    assert result.duplicate_trades == []
    assert result.trades == result.truth_trades
    # nothing in these recordings is broken: no gaps, no invalid books, no errors
    assert not [e for e in result.events if isinstance(e, Status) and e.state in ("book_invalid", "error")]
    assert result.adapter.counters["gaps"] == 0 and result.adapter.counters["malformed"] == 0


def test_spot_capture_buffers_the_bridging_diff() -> None:
    """In this recording the bridging diff arrives before the REST snapshot: the first book event is
    the snapshot, and the diffs that follow it were buffered before it arrived."""
    path = shared_capture("binance/spot-btcusdt-20240808.capture.jsonl.gz")
    events: list = []
    Replayer().run(path, events.extend)
    books = [e for e in events if isinstance(e, Book)]
    snapshot, first_diff = books[0], books[1]
    assert snapshot.snapshot and snapshot.seq == 50093239218
    assert not first_diff.snapshot and first_diff.seq > snapshot.seq
    assert first_diff.ts_recv < snapshot.ts_recv  # read before the snapshot came back
    assert all(not b.snapshot for b in books[1:])


def test_replay_is_deterministic() -> None:
    path = shared_capture("binance-usdm/cryptofeed-4symbols-20210722.capture.jsonl.gz")
    first: list = []
    second: list = []
    Replayer().run(path, first.extend)
    Replayer().run(path, second.extend)
    assert first == second and len(first) > 800
