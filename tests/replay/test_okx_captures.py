"""Replay of the real OKX capture (cryptofeed sample data, 2022-05-13), checked against OKX's own truth.

The recording predates OKX's ``seqId``: continuity cannot be checked, so the venue's CRC-32 checksum is
the only integrity signal (the adapter says so once and counts it). It holds ``books`` for three
instruments with 290 checksummed messages: BTC-USDT (spot, 98), BTC-USD-220527 (inverse future, 99) and
UNI-USD-SWAP (inverse swap, 93). Inverse contracts are refused for publication (their sizes cannot be
given in base units, EVENTS.md), so:

- all 290 checksums are verified by the adapter on its own books (counter ``checksums_verified``);
- 98 of them (BTC-USDT) reach consumers, and for each one the book a consumer rebuilds from OUR events
  hashes, in OKX's text form, to the checksum OKX sent with that message;
- the other 192 are explained by the refusal: no events for the two inverse instruments, one
  ``error`` status naming each.

Trades: every BTC-USDT trade in the recording comes out exactly once with OKX's taker side.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal

import pytest

from marketfeed.adapters.okx.checksum import okx_checksum
from marketfeed.capture import Recv, read_capture
from marketfeed.events import Book, Status, Trade
from marketfeed.replay import Replayer, replay_events
from tests.helpers import ConsumerBooks, shared_capture

CAPTURE = "okx/cryptofeed-books-20220513.capture.jsonl.gz"

pytestmark = pytest.mark.shared


def okx_text(x: float) -> str:
    s = format(Decimal(repr(x)), "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def venue_truth(path):
    """Straight from the recorded frames: every book message's checksum per instrument, every trade."""
    checksums: list[tuple[str, int]] = []
    trades: list[tuple[str, str, str, str, str]] = []
    _, records = read_capture(path)
    for rec in records:
        if type(rec) is not Recv or not rec.data or rec.data[0] != "{":
            continue
        msg = json.loads(rec.data)
        arg = msg.get("arg") or {}
        if "data" not in msg:
            continue
        if arg.get("channel") == "books":
            for d in msg["data"]:
                if d.get("checksum"):
                    checksums.append((arg["instId"], d["checksum"]))
        elif arg.get("channel") == "trades":
            for t in msg["data"]:
                trades.append((t["instId"], t["tradeId"], t["px"], t["sz"], t["side"]))
    return checksums, trades


@pytest.fixture(scope="module")
def replayed():
    path = shared_capture(CAPTURE)
    events = list(replay_events([path]))
    replayer = Replayer()  # once more, to read the adapter's counters
    again: list = []
    replayer.run(path, again.extend)
    assert again == events  # replay is deterministic
    return path, replayer.adapters["okx"], events


def test_every_published_book_message_matches_okx_checksum(replayed):
    path, adapter, events = replayed
    checksums, _ = venue_truth(path)
    assert len(checksums) == 290
    per_inst = Counter(inst for inst, _ in checksums)
    assert per_inst == {"BTC-USDT": 98, "BTC-USD-220527": 99, "UNI-USD-SWAP": 93}

    consumer = ConsumerBooks()
    matched = []
    for e in events:
        book = consumer.apply(e)
        if isinstance(e, Book):
            assert e.checksum is not None  # every message carried one, and we verified it
            bids = [(okx_text(p), okx_text(s)) for p, s in book.bids.top(25)]
            asks = [(okx_text(p), okx_text(s)) for p, s in book.asks.top(25)]
            assert okx_checksum(bids, asks) == e.checksum
            matched.append((e.symbol, e.checksum))
    # the consumer-side checks line up one to one with OKX's BTC-USDT checksums, in order
    assert matched == [("BTC-USDT", c) for inst, c in checksums if inst == "BTC-USDT"]
    assert len(matched) == 98
    assert not consumer.violations
    first = next(e for e in events if isinstance(e, Book))
    assert first.snapshot and len(first.bids) == 400 and len(first.asks) == 400


def test_all_290_checksums_verified_by_the_adapter_and_the_rest_explained(replayed):
    _, adapter, events = replayed
    c = adapter.counters
    assert c["checksums_verified"] == 290
    assert c["checksum_failures"] == 0 and c["resyncs"] == 0
    # no seqId in 2022: counted on every book message, said once in the log
    assert c["books_without_seqid"] == 290
    refused = {e.symbol: e.reason for e in events if isinstance(e, Status) and e.state == "error"}
    assert set(refused) == {"BTC-USD-20220527", "UNI-USD-PERP"}
    assert all("inverse" in r for r in refused.values())
    assert {e.symbol for e in events if isinstance(e, (Book, Trade))} == {"BTC-USDT"}
    assert not [e for e in events if isinstance(e, Status) and e.state == "book_invalid"]


def test_every_trade_once_with_the_taker_side(replayed):
    path, adapter, events = replayed
    _, venue_trades = venue_truth(path)
    ours = [(e.trade_id, e.price, e.size, e.side) for e in events if isinstance(e, Trade)]
    expected = [(tid, float(px), float(sz), side) for inst, tid, px, sz, side in venue_trades if inst == "BTC-USDT"]
    assert len(set(t[0] for t in expected)) == len(expected) == 69
    assert ours == expected
    assert all(e.ts_exchange and e.ts_exchange % 1_000_000 == 0 for e in events if isinstance(e, Trade))
    # the inverse instruments' trades are refused, not lost silently
    assert adapter.counters["refused_trades"] == sum(1 for t in venue_trades if t[0] != "BTC-USDT") == 5
