"""Replays of the project's own Binance captures in fixtures/ (recorded from the loopback simulator by
``fixtures/make_fixtures.py``), checked against the venue's truth in them like the real captures in
../shared: these always run, so the essentials stay tested without ../shared.

Each fixture holds one dropped diff (a gap) and the snapshot the recorder fetched after it, so replay
must also detect the gap, say the book is invalid, and recover with that snapshot.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marketfeed.capture import Recv, Rest, read_capture
from marketfeed.events import BOOK_INVALID, ERROR, Book, Status
from tests.helpers import REPO
from tests.replay.binance_truth import Checked, replay_against_truth

FIXTURES = {
    "spot": (REPO / "fixtures" / "binance-spot-sim.capture.jsonl.gz", False),
    "usdm": (REPO / "fixtures" / "binance-usdm-sim.capture.jsonl.gz", True),
}
MIN_CHECKS = 300  # bookTicker matches; each fixture has about 400 tickers
MIN_TRADES = 300


def wire_facts(path: Path, futures: bool) -> tuple[list[tuple[int, int]], list[int]]:
    """From the raw frames (standard json, not our decoders): each break in the diff sequence as
    (the previous diff's u, the breaking diff's U or pu), and the lastUpdateId of each REST snapshot."""
    breaks: list[tuple[int, int]] = []
    snapshots: list[int] = []
    last_u = None
    _, records = read_capture(path)
    for rec in records:
        if type(rec) is Rest and "/depth?" in rec.url:
            snapshots.append(json.loads(rec.data)["lastUpdateId"])
        elif type(rec) is Recv:
            msg = json.loads(rec.data)
            if "@depth" in msg["stream"]:
                d = msg["data"]
                link = d["pu"] if futures else d["U"] - 1
                if last_u is not None and link != last_u:
                    breaks.append((last_u, d["pu"] if futures else d["U"]))
                last_u = d["u"]
    return breaks, snapshots


@pytest.fixture(scope="module", params=sorted(FIXTURES))
def fixture(request: pytest.FixtureRequest) -> tuple[Checked, bool, list[tuple[int, int]], list[int]]:
    path, futures = FIXTURES[request.param]
    assert path.exists(), f"{path} is missing: regenerate with .venv/bin/python fixtures/make_fixtures.py"
    return (replay_against_truth(path), futures, *wire_facts(path, futures))


def test_books_match_every_book_ticker_and_trades_come_out_once(fixture) -> None:
    result, _, _, _ = fixture
    assert result.consumer.violations == []
    assert result.mismatches == []
    assert result.checks >= MIN_CHECKS, f"only {result.checks} bookTicker checks: the oracle did not line up"
    assert result.duplicate_trades == []
    assert result.trades == result.truth_trades and len(result.trades) >= MIN_TRADES
    assert set(result.trades.values()) == {"buy", "sell"}
    assert not [e for e in result.events if isinstance(e, Status) and e.state == ERROR]
    assert result.adapter.counters["malformed"] == 0


def test_only_tickers_where_the_consumer_had_no_book_go_unchecked(fixture) -> None:
    """A bookTicker is left unchecked only when its u falls where the consumer had no valid book:
    before the first snapshot, or between the last good book event and the snapshot after the gap."""
    result, _, _, _ = fixture
    blind: list[tuple[float, float]] = []  # open intervals of update ids without a valid book
    lo: float = float("-inf")
    last_seq = None
    for event in result.events:
        if isinstance(event, Book):
            if event.snapshot and lo is not None:
                blind.append((lo, event.seq))
                lo = None
            last_seq = event.seq
        elif isinstance(event, Status) and event.state == BOOK_INVALID and lo is None:
            lo = last_seq
    if lo is not None:
        blind.append((lo, float("inf")))
    unchecked = [key[1] for key in result.tickers if key not in result.checked]
    assert [u for u in unchecked if not any(a < u < b for a, b in blind)] == []
    assert len(unchecked) <= 10  # the recorder's snapshots arrive a few diffs after they are asked for


def test_the_dropped_diff_is_one_gap_then_a_snapshot(fixture) -> None:
    result, futures, breaks, snapshots = fixture
    (gap,) = breaks  # the recording itself holds exactly one break, the dropped diff
    assert len(snapshots) == 2
    invalid = [(i, e) for i, e in enumerate(result.events) if isinstance(e, Status) and e.state == BOOK_INVALID]
    books = [i for i, e in enumerate(result.events) if isinstance(e, Book)]
    # the gap, named as the wire shows it; and the end of the recording (its close), after the last book
    (i_gap, gap_status), (i_end, end_status) = invalid
    assert gap_status.reason.startswith("gap: ") and gap_status.reason.endswith(f"got {'pu' if futures else 'U'}={gap[1]}")
    assert end_status.reason.startswith("disconnected: ") and i_end > books[-1]
    # the last book event before the gap is the diff before the break; the next one is the new snapshot
    before = [result.events[i] for i in books if i < i_gap]
    after = [result.events[i] for i in books if i > i_gap]
    assert before[-1].seq == gap[0]
    assert after[0].snapshot and after[0].seq == snapshots[1]
    assert all(not b.snapshot for b in after[1:]) and len(after) > 400
    counters = result.adapter.counters
    assert counters["gaps"] == 1 and counters["snapshots"] == 2 and counters["snapshot_retries"] == 0


def test_diffs_read_before_each_snapshot_are_buffered_and_applied_after_it(fixture) -> None:
    """The recorder's snapshot responses arrive after newer diffs: replay must keep those diffs and
    apply them after the snapshot (they were read first, so their receive time is earlier)."""
    result, _, _, snapshots = fixture
    books = [e for e in result.events if isinstance(e, Book)]
    seen = 0
    for i, b in enumerate(books):
        if b.snapshot:
            seen += 1
            buffered = [d for d in books[i + 1 :] if d.ts_recv < b.ts_recv]
            assert buffered and all(not d.snapshot and d.seq >= b.seq for d in buffered)
            assert books[i + 1] is buffered[0]
    assert seen == len(snapshots) == 2
