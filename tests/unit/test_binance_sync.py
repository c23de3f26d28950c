"""The Binance diff-depth sync rules (EXCHANGES.md 1.5 spot, 2.5 USD-M), table-driven, no event loop."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from marketfeed.adapters.binance.sync import (
    APPLY,
    BUFFER_OVERFLOW,
    BUFFERED,
    GAP,
    IGNORED,
    LIVE,
    STALE,
    SYNCED,
    TOO_OLD,
    WAITING,
    DepthSync,
)


@dataclass
class D:
    U: int
    u: int
    pu: int | None = None


def spot_synced(last_id: int = 100) -> DepthSync:
    s = DepthSync(futures=False)
    assert s.on_diff(D(last_id - 5, last_id + 2)) == BUFFERED
    assert s.on_snapshot(last_id)[0] == SYNCED
    return s


# (name, snapshot id, buffered diffs, expected verdict, ids of the diffs applied after the snapshot)
SPOT_SNAPSHOT_CASES = [
    ("bridging diff straddles the snapshot", 100, [D(95, 99), D(100, 103), D(104, 105)], SYNCED, [103, 105]),
    ("stale diffs before the snapshot are dropped", 100, [D(90, 95), D(96, 100), D(101, 102)], SYNCED, [102]),
    ("bridge exactly at id + 1", 100, [D(101, 101), D(102, 104)], SYNCED, [101, 104]),
    ("snapshot older than the buffer", 100, [D(105, 110)], TOO_OLD, []),
    ("snapshot newer than the whole buffer", 200, [D(95, 99), D(100, 103)], SYNCED, []),
    ("no buffer at all", 100, [], SYNCED, []),
    ("a gap inside the buffer", 100, [D(100, 103), D(110, 112)], GAP, []),
    ("a duplicate inside the buffer is skipped", 100, [D(100, 103), D(100, 103), D(104, 105)], SYNCED, [103, 105]),
]


@pytest.mark.parametrize("name,last_id,buffered,verdict,applied", SPOT_SNAPSHOT_CASES, ids=[c[0] for c in SPOT_SNAPSHOT_CASES])
def test_spot_snapshot_bridging(name: str, last_id: int, buffered: list[D], verdict: str, applied: list[int]) -> None:
    s = DepthSync(futures=False)
    for d in buffered:
        assert s.on_diff(d) == BUFFERED
    got, to_apply = s.on_snapshot(last_id)
    assert got == verdict
    assert [d.u for d in to_apply] == applied
    if verdict == SYNCED:
        assert s.state == LIVE
        assert s.book_id == (applied[-1] if applied else last_id)
    else:
        assert s.state == WAITING


def test_spot_too_old_keeps_buffer_for_the_next_snapshot() -> None:
    s = DepthSync(futures=False)
    s.on_diff(D(105, 110))
    s.on_diff(D(111, 115))
    assert s.on_snapshot(100)[0] == TOO_OLD
    verdict, to_apply = s.on_snapshot(112)
    assert verdict == SYNCED and [d.u for d in to_apply] == [115]


def test_spot_gap_in_buffer_restarts_at_the_break() -> None:
    s = DepthSync(futures=False)
    for d in (D(100, 103), D(110, 112), D(113, 114)):
        s.on_diff(d)
    assert s.on_snapshot(100)[0] == GAP
    assert [d.U for d in s.buffer] == [110, 113]
    verdict, to_apply = s.on_snapshot(111)
    assert verdict == SYNCED and [d.u for d in to_apply] == [112, 114]


# live diffs after a snapshot at 100 whose bridging diff ended at 102
SPOT_LIVE_CASES = [
    ("in order", D(103, 105), APPLY, 105),
    ("stale: entirely before the book", D(90, 101), STALE, 102),
    ("duplicate of the last applied diff", D(96, 102), STALE, 102),
    ("overlapping diff still bridges", D(101, 107), APPLY, 107),
    ("gap", D(110, 112), GAP, 0),
]


@pytest.mark.parametrize("name,diff,verdict,book_id", SPOT_LIVE_CASES, ids=[c[0] for c in SPOT_LIVE_CASES])
def test_spot_live(name: str, diff: D, verdict: str, book_id: int) -> None:
    s = spot_synced(100)
    assert s.book_id == 102
    assert s.on_diff(diff) == verdict
    assert s.book_id == book_id


def test_spot_gap_buffers_the_diff_that_revealed_it() -> None:
    s = spot_synced(100)
    assert s.on_diff(D(110, 112)) == GAP
    assert s.state == WAITING and [d.u for d in s.buffer] == [112]
    assert s.gap_expected == "U<=103"
    verdict, to_apply = s.on_snapshot(111)
    assert verdict == SYNCED and [d.u for d in to_apply] == [112]


def test_snapshot_while_live_is_ignored() -> None:
    s = spot_synced(100)
    assert s.on_snapshot(500) == (IGNORED, [])
    assert s.book_id == 102


def test_buffer_overflow_drops_the_oldest() -> None:
    s = DepthSync(futures=False, max_buffer=3)
    assert [s.on_diff(D(i, i)) for i in (1, 2, 3)] == [BUFFERED] * 3
    assert s.on_diff(D(4, 4)) == BUFFER_OVERFLOW
    assert [d.u for d in s.buffer] == [2, 3, 4]
    # a snapshot older than what is left is too old; a newer one bridges
    assert s.on_snapshot(0)[0] == TOO_OLD
    verdict, to_apply = s.on_snapshot(2)
    assert verdict == SYNCED and [d.u for d in to_apply] == [3, 4]


# USD-M: ids jump between diffs; continuity is pu == previous u
FUT_SNAPSHOT_CASES = [
    ("first diff satisfies U <= id <= u", 100, [D(80, 90, 70), D(95, 105, 90), D(110, 120, 105)], SYNCED, [105, 120]),
    ("u == id is kept (docs drop only u < id)", 100, [D(95, 100, 90), D(103, 108, 100)], SYNCED, [100, 108]),
    ("snapshot older than the buffer", 100, [D(101, 110, 99)], TOO_OLD, []),
    ("snapshot newer than the buffer", 300, [D(95, 105, 90)], SYNCED, []),
    ("pu break inside the buffer", 100, [D(95, 105, 90), D(110, 120, 106)], GAP, []),
]


@pytest.mark.parametrize("name,last_id,buffered,verdict,applied", FUT_SNAPSHOT_CASES, ids=[c[0] for c in FUT_SNAPSHOT_CASES])
def test_usdm_snapshot_bridging(name: str, last_id: int, buffered: list[D], verdict: str, applied: list[int]) -> None:
    s = DepthSync(futures=True)
    for d in buffered:
        s.on_diff(d)
    got, to_apply = s.on_snapshot(last_id)
    assert got == verdict
    assert [d.u for d in to_apply] == applied


def test_usdm_live_continuity_on_pu() -> None:
    s = DepthSync(futures=True)
    s.on_diff(D(95, 105, 90))
    assert s.on_snapshot(100)[0] == SYNCED
    assert s.on_diff(D(110, 120, 105)) == APPLY
    assert s.on_diff(D(110, 120, 105)) == STALE  # duplicate
    assert s.on_diff(D(130, 140, 125)) == GAP  # pu should have been 120
    assert s.gap_expected == "pu=120"


def test_usdm_snapshot_newer_than_buffer_then_bridging_live_diff() -> None:
    s = DepthSync(futures=True)
    s.on_diff(D(95, 105, 90))
    assert s.on_snapshot(300) == (SYNCED, [])
    assert s.on_diff(D(290, 310, 280)) == APPLY  # bridges: U <= 300 <= u
    assert s.on_diff(D(315, 320, 310)) == APPLY
    assert s.on_diff(D(330, 340, 322)) == GAP


def test_hand_over_lets_the_new_connection_bridge() -> None:
    s = DepthSync(futures=True)
    s.on_diff(D(95, 105, 90))
    s.on_snapshot(100)
    assert s.on_diff(D(110, 120, 105)) == APPLY
    s.hand_over()
    # the new connection batched differently: its pu is not our last u, but it covers it
    assert s.on_diff(D(115, 130, 112)) == APPLY
    assert s.on_diff(D(135, 140, 130)) == APPLY
