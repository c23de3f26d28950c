"""Coalesced top events (marketfeed.top): latest state wins, at most one per interval per symbol, none
from an invalid book, and the timer path (``due``) for a book that went quiet."""

from __future__ import annotations

import pytest

from marketfeed.config import ConfigError, parse_config
from marketfeed.eventbooks import EventBooks
from marketfeed.events import BOOK_INVALID, Book, Status, Top, Trade
from marketfeed.top import DerivedFeed, TopCoalescer, TopRule, top_rules

MS = 1_000_000
V, S = "binance", "BTC-USDT"


def snap(ts: int, bids, asks, seq: int = 1) -> Book:
    return Book(V, S, ts, None, seq, True, bids, asks)


def diff(ts: int, bids, asks, seq: int) -> Book:
    return Book(V, S, ts, ts - 5, seq, False, bids, asks)


def coalescer(depth: int = 2, interval_ms: float = 100) -> TopCoalescer:
    return TopCoalescer({(V, S): TopRule(depth, interval_ms / 1000)}, EventBooks())


def test_first_update_emits_the_top_at_depth() -> None:
    c = coalescer(depth=2)
    tops = c.on_batch([snap(1000 * MS, [(10.0, 1.0), (9.0, 2.0), (8.0, 3.0)], [(11.0, 1.0), (12.0, 1.0), (13.0, 5.0)], seq=7)])
    assert tops == [Top(V, S, 1000 * MS, None, 7, [(10.0, 1.0), (9.0, 2.0)], [(11.0, 1.0), (12.0, 1.0)])]


def test_updates_within_the_interval_are_coalesced_and_the_latest_state_wins() -> None:
    c = coalescer(depth=1, interval_ms=100)
    assert len(c.on_batch([snap(0 + 1, [(10.0, 1.0)], [(11.0, 1.0)])])) == 1
    # three updates 10, 20, 30 ms later: nothing yet
    assert c.on_batch([diff(10 * MS, [(10.0, 2.0)], [], 2)]) == []
    assert c.on_batch([diff(20 * MS, [(10.0, 3.0)], [], 3)]) == []
    assert c.on_batch([diff(30 * MS, [(10.5, 1.0)], [], 4)]) == []
    assert c.next_deadline() == 100 * MS + 1
    assert c.due(99 * MS) == []
    (top,) = c.due(100 * MS + 1)
    assert top.bids == [(10.5, 1.0)] and top.seq == 4 and top.ts_recv == 30 * MS
    assert c.pending == {}
    # a later update past the interval goes out at once
    (top,) = c.on_batch([diff(250 * MS, [(10.5, 0.0)], [], 5)])
    assert top.bids == [(10.0, 3.0)]


def test_an_update_below_the_top_is_not_repeated() -> None:
    c = coalescer(depth=1, interval_ms=0)
    assert len(c.on_batch([snap(1, [(10.0, 1.0), (9.0, 1.0)], [(11.0, 1.0)])])) == 1
    assert c.on_batch([diff(2, [(9.0, 4.0)], [], 2)]) == []  # level 2 changed: the top did not
    assert len(c.on_batch([diff(3, [(10.0, 4.0)], [], 3)])) == 1


def test_nothing_from_an_invalid_book_and_a_fresh_top_after_the_snapshot() -> None:
    c = coalescer(depth=1, interval_ms=100)
    c.on_batch([snap(1, [(10.0, 1.0)], [(11.0, 1.0)])])
    c.on_batch([diff(10 * MS, [(10.0, 2.0)], [], 2)])  # pending
    assert c.on_batch([Status(V, S, 20 * MS, BOOK_INVALID, "gap")]) == []
    assert c.pending == {} and c.due(10**12) == []
    # the same levels again after the snapshot: emitted, since consumers of tops saw no invalidation
    (top,) = c.on_batch([snap(500 * MS, [(10.0, 1.0)], [(11.0, 1.0)], seq=9)])
    assert top.seq == 9


def test_a_diff_and_a_status_in_one_batch() -> None:
    c = coalescer(depth=1, interval_ms=0)
    c.on_batch([snap(1, [(10.0, 1.0)], [(11.0, 1.0)])])
    assert c.on_batch([diff(2, [(10.0, 2.0)], [], 2), Status(V, S, 3, BOOK_INVALID, "checksum")]) == []


def test_symbols_without_a_rule_get_no_tops_and_trades_pass() -> None:
    c = TopCoalescer({}, EventBooks())
    assert c.on_batch([snap(1, [(10.0, 1.0)], [(11.0, 1.0)]), Trade(V, S, 1, None, "1", 10.0, 1.0, "buy")]) == []


CONFIG = """
[venues.binance]
symbols = ["BTC-USDT", "ETH-USDT", "SOL-USDT"]
top = { depth = 3, min_interval = 0.25 }
[venues.binance.top_symbols.ETH-USDT]
depth = 1
min_interval = 0
[venues.binance.top_symbols.SOL-USDT]
enabled = false
[venues.kraken]
symbols = ["BTC-USD"]
"""


def test_rules_per_venue_and_per_symbol() -> None:
    rules = top_rules(parse_config(CONFIG))
    assert set(rules) == {("binance", "BTC-USDT"), ("binance", "ETH-USDT")}
    assert (rules[("binance", "BTC-USDT")].depth, rules[("binance", "BTC-USDT")].interval_ns) == (3, 250 * MS)
    assert (rules[("binance", "ETH-USDT")].depth, rules[("binance", "ETH-USDT")].interval_ns) == (1, 0)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('top = { depth = 0 }', "venues.binance.top.depth: must be 1..1000"),
        ('top = { min_interval = -1 }', "venues.binance.top.min_interval: must not be negative"),
        ('top = { deep = 1 }', "venues.binance.top.deep: unknown key"),
        ('top_symbols = { "ETH-USDT" = {} }', "venues.binance.top_symbols: 'ETH-USDT' is not one of this venue's symbols"),
        ('channels = ["trades"]\ntop = {}', "venues.binance.top: needs the book channel"),
    ],
)
def test_config_errors_are_one_line(toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(f'[venues.binance]\nsymbols = ["BTC-USDT"]\n{toml}\n')
    assert str(exc.value) == f"<config>: {message}"
    assert "\n" not in str(exc.value)


def test_derived_feed_appends_tops_to_the_batch_for_every_output() -> None:
    config = parse_config('[venues.binance]\nsymbols = ["BTC-USDT"]\ntop = { depth = 1, min_interval = 0 }\n')
    a: list = []
    b: list = []
    feed = DerivedFeed(config, [a.extend, b.extend])
    feed.publish([snap(1, [(10.0, 1.0)], [(11.0, 1.0)])])
    assert a == b
    assert [type(e) for e in a] == [Book, Top]
    assert feed.books.get(V, S).snapshot().bids == [(10.0, 1.0)]  # type: ignore[union-attr]


def test_replay_derive_uses_the_events_time() -> None:
    config = parse_config('[venues.binance]\nsymbols = ["BTC-USDT"]\ntop = { depth = 1, min_interval = 0.1 }\n')
    feed = DerivedFeed(config)
    out: list = []
    out += feed.derive([snap(1, [(10.0, 1.0)], [(11.0, 1.0)])])
    out += feed.derive([diff(50 * MS, [(10.0, 2.0)], [], 2)])  # held: inside the interval
    out += feed.derive([Trade(V, S, 300 * MS, None, "1", 10.0, 1.0, "buy")])  # later: the held top first
    out += feed.derive([diff(310 * MS, [(10.0, 3.0)], [], 3)])  # more than 100 ms after the last top
    out += feed.derive([diff(320 * MS, [(10.0, 4.0)], [], 4)])  # held again ...
    out += feed.finish()  # ... until the end of the recording
    kinds = [(type(e).__name__, e.seq if not isinstance(e, Trade) else None) for e in out]
    assert kinds == [("Book", 1), ("Top", 1), ("Book", 2), ("Top", 2), ("Trade", None), ("Book", 3), ("Top", 3), ("Book", 4), ("Top", 4)]
    assert [e.bids for e in out if isinstance(e, Top)] == [[(10.0, 1.0)], [(10.0, 2.0)], [(10.0, 3.0)], [(10.0, 4.0)]]


def test_reconfigure_changes_the_rules_and_keeps_the_books() -> None:
    feed = DerivedFeed(parse_config('[venues.binance]\nsymbols = ["BTC-USDT"]\n[server]\n'))
    out: list = []
    feed.outputs.append(out.extend)
    feed.publish([snap(1, [(10.0, 1.0)], [(11.0, 1.0)])])
    assert [type(e) for e in out] == [Book]
    feed.reconfigure(parse_config('[venues.binance]\nsymbols = ["BTC-USDT"]\ntop = { depth = 1, min_interval = 0 }\n[server]\n'))
    feed.publish([diff(2, [(10.0, 2.0)], [], 2)])
    assert [type(e) for e in out] == [Book, Book, Top]
    assert out[-1].bids == [(10.0, 2.0)]


async def test_replay_into_sinks_carries_the_configured_tops(tmp_path) -> None:
    """A replay of the project's own Binance fixture into a JSONL sink: each top is the top of the
    book rebuilt from the book events before it, and there are fewer tops than updates."""
    from marketfeed.events import decode
    from marketfeed.sinks.replay import replay_into_sinks
    from tests.helpers import REPO, ConsumerBooks

    out = tmp_path / "events.jsonl"
    config = parse_config(
        f'[venues.binance]\nsymbols = ["BTC-USDT", "ETH-USDT"]\ntop = {{ depth = 3, min_interval = 0.2 }}\n'
        f'[[sinks]]\ntype = "jsonl"\npath = "{out}"\n'
    )
    await replay_into_sinks([REPO / "fixtures" / "binance-spot-sim.capture.jsonl.gz"], config)
    books = ConsumerBooks()
    tops = diffs = 0
    for line in out.read_bytes().splitlines():
        event = decode(line)
        books.apply(event)
        if isinstance(event, Top):
            tops += 1
            key = (event.venue, event.symbol)
            assert books.valid[key]
            assert (event.bids, event.asks) == books.books[key].top(3)
        elif isinstance(event, Book) and not event.snapshot:
            diffs += 1
    assert books.violations == []
    assert 0 < tops < diffs  # coalesced: fewer tops than updates
