"""Kraken's book checksum: the documented test vectors of EXCHANGES.md 3.6, through the reference
(Decimal) functions and through the adapter's own float path (frames as the wire sends them: JSON
numbers without trailing zeros), plus the exact path for values a float cannot format."""

from __future__ import annotations

import json
import zlib
from decimal import Decimal

from marketfeed.adapters.kraken.adapter import KrakenAdapter
from marketfeed.adapters.kraken.checksum import (
    checksum_decimal,
    checksum_v1,
    exact_level_text,
    exact_limit,
    level_text,
    strip_text,
)
from marketfeed.events import BOOK_INVALID, Book, Status

BTC_ASKS = [
    ("45285.2", "0.00100000"), ("45286.4", "1.54571953"), ("45286.6", "1.54571109"), ("45289.6", "1.54560911"),
    ("45290.2", "0.15890660"), ("45291.8", "1.54553491"), ("45294.7", "0.04454749"), ("45296.1", "0.35380000"),
    ("45297.5", "0.09945542"), ("45299.5", "0.18772827"),
]
BTC_BIDS = [
    ("45283.5", "0.10000000"), ("45283.4", "1.54582015"), ("45282.1", "0.10000000"), ("45281.0", "0.10000000"),
    ("45280.3", "1.54592586"), ("45279.0", "0.07990000"), ("45277.6", "0.03310103"), ("45277.5", "0.30000000"),
    ("45277.3", "1.54602737"), ("45276.6", "0.15445238"),
]
# MATIC/USD as the doc's wire shows it: trailing zeros dropped (0.566, 18097.1547)
MATIC_BIDS = [
    ("0.5666", "4831.75496356"), ("0.5665", "6658.22734739"), ("0.5664", "18724.91513344"),
    ("0.5663", "11563.92544914"), ("0.5662", "14006.65365711"), ("0.5661", "17454.85679807"),
    ("0.566", "18097.1547"), ("0.5659", "33644.89175666"), ("0.5658", "148.3464"), ("0.5657", "606.70854372"),
]
MATIC_ASKS = [
    ("0.5668", "4410.79769741"), ("0.5669", "4655.40412487"), ("0.567", "49844.89424998"),
    ("0.5671", "24306.41678"), ("0.5672", "29783.25223475"), ("0.5673", "57234.71239278"),
    ("0.5674", "45065.04744"), ("0.5675", "5912.76380354"), ("0.5676", "42514.92434778"),
    ("0.5677", "36304.0847022"),
]

ASSET_PAIRS = json.dumps({"error": [], "result": {
    "XXBTZUSD": {"altname": "XBTUSD", "wsname": "XBT/USD", "base": "XXBT", "quote": "ZUSD",
                 "pair_decimals": 1, "lot_decimals": 8},
    "MATICUSD": {"altname": "MATICUSD", "wsname": "MATIC/USD", "base": "MATIC", "quote": "ZUSD",
                 "pair_decimals": 4, "lot_decimals": 8},
    "SHIBUSD": {"altname": "SHIBUSD", "wsname": "SHIB/USD", "base": "SHIB", "quote": "ZUSD",
                "pair_decimals": 8, "lot_decimals": 8},
}})


def wire_levels(levels: list[tuple[str, str]]) -> str:
    # the text of JSON numbers without trailing zeros, as Kraken v2 sends them
    def num(text: str) -> str:
        return text.rstrip("0").rstrip(".") if "." in text else text

    return "[" + ",".join(f'{{"price":{num(p)},"qty":{num(q)}}}' for p, q in levels) + "]"


def book_frame(kind: str, symbol: str, bids, asks, checksum: int) -> str:
    return (f'{{"channel":"book","type":"{kind}","data":[{{"symbol":"{symbol}","bids":{wire_levels(bids)},'
            f'"asks":{wire_levels(asks)},"checksum":{checksum},"timestamp":"2023-10-06T17:35:55.440295Z"}}]}}')


def replay_adapter() -> KrakenAdapter:
    adapter = KrakenAdapter("kraken", None)
    adapter.on_rest(1, "https://api.kraken.com/0/public/AssetPairs", 200, ASSET_PAIRS)
    adapter.on_open("c1", 2, "wss://ws.kraken.com/v2", None)
    adapter.take_events()
    return adapter


def test_strip_text() -> None:
    assert strip_text("0.00100000") == "100000"
    assert strip_text("45285.2") == "452852"
    assert strip_text("0.05005") == "5005"


def test_v2_btc_usd_vector_reference() -> None:
    text = "".join(exact_level_text(p, q, 1, 8) for p, q in BTC_ASKS + BTC_BIDS)
    assert len(text) == 281
    assert text.startswith("4528521000004528641545719534528661545711")
    assert checksum_decimal(BTC_ASKS, BTC_BIDS, 1, 8) == 3310070434


def test_v2_matic_usd_vectors_reference() -> None:
    assert checksum_decimal(MATIC_ASKS, MATIC_BIDS, 4, 8) == 2439117997
    updated = MATIC_BIDS[:-1] + [("0.5657", "1098.3947558")]
    assert checksum_decimal(MATIC_ASKS, updated, 4, 8) == 2114181697
    # the doc's control: hashing the snapshot's wire text without padding to the precision
    raw = "".join(strip_text(p) + strip_text(q) for p, q in MATIC_ASKS + MATIC_BIDS)
    assert zlib.crc32(raw.encode()) == 3830085102


def test_v1_vector() -> None:
    asks = [(p, "0.00000500") for p in ("0.05005", "0.05010", "0.05015", "0.05020", "0.05025", "0.05030", "0.05035",
                                        "0.05040", "0.05045", "0.05050")]
    bids = [(p, "0.00000500") for p in ("0.05000", "0.04995", "0.04990", "0.04980", "0.04975", "0.04970", "0.04965",
                                        "0.04960", "0.04955", "0.04950")]
    assert strip_text(asks[0][0]) + strip_text(asks[0][1]) == "5005500"
    assert checksum_v1(asks, bids) == 974947235


def test_float_level_text_equals_decimal_text() -> None:
    for (p, q), pp in ((BTC_ASKS[0], 1), (MATIC_BIDS[6], 4), (MATIC_ASKS[9], 4)):
        assert level_text(float(p), float(q), 10**pp, 10**8) == exact_level_text(p, q, pp, 8)


def test_btc_usd_vector_through_the_adapter() -> None:
    adapter = replay_adapter()
    adapter.on_frame("c1", 3, book_frame("snapshot", "BTC/USD", BTC_BIDS, BTC_ASKS, 3310070434))
    [event] = adapter.take_events()
    assert isinstance(event, Book) and event.snapshot and event.checksum == 3310070434
    assert event.symbol == "BTC-USD"
    assert event.bids[0] == (45283.5, 0.1) and event.asks[0] == (45285.2, 0.001)
    assert event.ts_exchange == 1696613755440295000


def test_matic_usd_vectors_through_the_adapter() -> None:
    adapter = replay_adapter()
    adapter.on_frame("c1", 3, book_frame("snapshot", "MATIC/USD", MATIC_BIDS, MATIC_ASKS, 2439117997))
    adapter.on_frame("c1", 4, book_frame("update", "MATIC/USD", [("0.5657", "1098.3947558")], [], 2114181697))
    snapshot, update = adapter.take_events()
    assert isinstance(snapshot, Book) and snapshot.checksum == 2439117997
    assert isinstance(update, Book) and not update.snapshot and update.checksum == 2114181697
    assert update.bids == [(0.5657, 1098.3947558)] and update.asks == []
    assert adapter.counters["checksum_failures"] == 0


def test_unpadded_checksum_is_refused() -> None:
    # the value a client computes without the precision: the adapter must not take it for the truth
    adapter = replay_adapter()
    adapter.on_frame("c1", 3, book_frame("snapshot", "MATIC/USD", MATIC_BIDS, MATIC_ASKS, 3830085102))
    [event] = adapter.take_events()
    assert isinstance(event, Status) and event.state == BOOK_INVALID
    assert event.reason == "snapshot checksum mismatch: venue 3830085102, computed 2439117997"


def test_values_beyond_float_precision_take_the_exact_path() -> None:
    # 244272509.7639725 has 17 significant digits: no float holds it, so the float path would hash
    # the wrong digits; the adapter re-reads such a message with Decimal
    assert 244272509.7639725 >= exact_limit(8)
    tick = Decimal("0.00000010")
    asks = [(f"{Decimal('0.00002100') + i * tick:.8f}", "244272509.76397250" if i == 0 else "1000") for i in range(10)]
    bids = [(f"{Decimal('0.00002000') - i * tick:.8f}", "98765432.98765432" if i == 3 else "2500.5") for i in range(10)]
    expected = checksum_decimal(asks, bids, 8, 8)
    adapter = replay_adapter()
    adapter.on_frame("c1", 3, book_frame("snapshot", "SHIB/USD", bids, asks, expected))
    [snapshot] = adapter.take_events()
    assert isinstance(snapshot, Book) and snapshot.checksum == expected
    # an update with another huge size in the top 10
    bids2 = bids[:1] + [(bids[1][0], "555555555.55555555")] + bids[2:]
    expected2 = checksum_decimal(asks, bids2, 8, 8)
    adapter.on_frame("c1", 4, book_frame("update", "SHIB/USD", [(bids[1][0], "555555555.55555555")], [], expected2))
    [update] = adapter.take_events()
    assert isinstance(update, Book) and update.checksum == expected2
    assert adapter.counters["checksum_failures"] == 0
    # and the float path alone would indeed have been wrong for these values
    assert level_text(244272509.7639725, 244272509.7639725, 10**8, 10**8) != exact_level_text(
        "244272509.76397250", "244272509.76397250", 8, 8)
    assert Decimal("244272509.76397250") != Decimal(244272509.7639725)
