"""Replay of the real Kraken captures (both WS v1), checked against the venue's own truth.

``v1-book10-xbtusd``: every v1 book update carries Kraken's CRC32 of the top 10 (``"c"``). The check
rebuilds the book a consumer keeps from OUR events only (``ConsumerBooks``), recomputes the checksum
from it with the pure checksum function (at the decimals the wire strings carry, read from the capture
by this test), and requires it to equal the venue's value of the same message, for every message.

``cryptofeed-v1-trades-ticker``: every trade on the wire comes out exactly once, with the taker side
the wire gives (``b``/``s``), its price, size and time.
"""

from __future__ import annotations

from collections import Counter

import msgspec
import pytest

from marketfeed.adapters.kraken.checksum import checksum_of_book
from marketfeed.capture import Recv, read_capture
from marketfeed.events import BOOK_INVALID, Book, Status, Trade
from marketfeed.replay import replay_events
from tests.helpers import ConsumerBooks, shared_capture

BOOK = "kraken/v1-book10-xbtusd.capture.jsonl.gz"
TRADES = "kraken/cryptofeed-v1-trades-ticker-20210417.capture.jsonl.gz"

pytestmark = pytest.mark.shared


def _decimals(text: str) -> int:
    return len(text.partition(".")[2])


def _book_truth(path):
    """The venue's checksums in message order, and the decimals of its price and volume strings."""
    _, records = read_capture(path)
    checksums: list[int] = []
    book_messages = 0
    price_decimals: set[int] = set()
    qty_decimals: set[int] = set()
    for rec in records:
        if not isinstance(rec, Recv) or not rec.data.startswith("["):
            continue
        msg = msgspec.json.decode(rec.data)
        if not str(msg[-2]).startswith("book-"):
            continue
        book_messages += 1
        for part in msg[1:-2]:
            for key in ("as", "bs", "a", "b"):
                for level in part.get(key, ()):
                    price_decimals.add(_decimals(level[0]))
                    qty_decimals.add(_decimals(level[1]))
            if "c" in part:
                checksums.append(int(part["c"]))
    assert len(price_decimals) == 1 and len(qty_decimals) == 1, (price_decimals, qty_decimals)
    return checksums, book_messages, price_decimals.pop(), qty_decimals.pop()


def test_v1_book_every_checksum_recomputed_from_the_consumer_book():
    path = shared_capture(BOOK)
    venue_checksums, book_messages, pdec, qdec = _book_truth(path)
    assert len(venue_checksums) == 979
    consumer = ConsumerBooks()
    verified: list[int] = []
    books = 0
    for event in replay_events([path]):
        book = consumer.apply(event)
        if isinstance(event, Status):
            assert event.state != BOOK_INVALID, event
        if not isinstance(event, Book):
            continue
        books += 1
        assert event.symbol == "BTC-USD" and event.venue == "kraken"
        assert book is not None
        # the subscribed depth is 10: the implicit truncation reached the consumer as explicit deletions
        assert len(book.bids) == 10 and len(book.asks) == 10
        if event.checksum is not None:
            assert checksum_of_book(book, pdec, qdec) == event.checksum
            verified.append(event.checksum)
    assert consumer.violations == []
    assert books == book_messages == 980  # one event per book message: the snapshot and 979 updates
    assert verified == venue_checksums  # every venue checksum, in order, matched by our book


def test_v1_book_truncation_is_explicit_in_the_events():
    path = shared_capture(BOOK)
    deletions_beyond_wire = 0
    wire_prices: dict[int, set[float]] = {}
    _, records = read_capture(path)
    n = 0
    for rec in records:
        if isinstance(rec, Recv) and rec.data.startswith("["):
            msg = msgspec.json.decode(rec.data)
            wire_prices[n] = {float(l[0]) for part in msg[1:-2] for k in ("a", "b", "as", "bs") for l in part.get(k, ())}
            n += 1
    i = 0
    for event in replay_events([path]):
        if isinstance(event, Book):
            for price, size in event.bids + event.asks:
                if size == 0 and price not in wire_prices[i]:
                    deletions_beyond_wire += 1
            i += 1
    # inserts inside the top 10 push a level out without a delete on the wire: we said so explicitly
    assert deletions_beyond_wire > 0


# The ten pairs of the trade capture, normalised by hand (XMR is a real name, not X+MR; XBT is BTC)
TRADE_PAIRS = {
    "WAVES/EUR": "WAVES-EUR", "XMR/USD": "XMR-USD", "KSM/XBT": "KSM-BTC", "GRT/ETH": "GRT-ETH",
    "SC/EUR": "SC-EUR", "ETH/CHF": "ETH-CHF", "OCEAN/XBT": "OCEAN-BTC", "OMG/USD": "OMG-USD",
    "XBT/CHF": "BTC-CHF", "ADA/XBT": "ADA-BTC",
}


def _epoch_ns(text: str) -> int:
    sec, _, frac = text.partition(".")
    return int(sec) * 1_000_000_000 + int(frac.ljust(9, "0"))


def test_v1_trades_each_once_with_the_taker_side():
    path = shared_capture(TRADES)
    _, records = read_capture(path)
    expected = Counter()
    for rec in records:
        if isinstance(rec, Recv) and rec.data.startswith("["):
            msg = msgspec.json.decode(rec.data)
            if msg[-2] == "trade":
                for price, volume, time, side, *_ in msg[1]:
                    expected[(TRADE_PAIRS[msg[-1]], float(price), float(volume), _epoch_ns(time),
                              {"b": "buy", "s": "sell"}[side])] += 1
    assert sum(expected.values()) == 10
    events = list(replay_events([path]))
    trades = [e for e in events if isinstance(e, Trade)]
    got = Counter((t.symbol, t.price, t.size, t.ts_exchange, t.side) for t in trades)
    assert got == expected
    # ids are unique, and the same on every replay (derived from the trade's own wire text)
    assert len({t.trade_id for t in trades}) == len(trades)
    again = [e.trade_id for e in replay_events([path]) if isinstance(e, Trade)]
    assert again == [t.trade_id for t in trades]
    # the twenty subscription acks (trade and ticker for ten pairs) are reported per symbol
    subscribed = [e for e in events if isinstance(e, Status) and e.state == "subscribed"]
    assert Counter(e.symbol for e in subscribed) == Counter({s: 2 for s in TRADE_PAIRS.values()})
