"""Kraken symbol normalisation from AssetPairs metadata: legacy codes mapped by table, never by
stripping an X/Z prefix (XRP, XLM, XMR, ZEC, XTZ are real names)."""

from __future__ import annotations

import json

import msgspec
import pytest

from marketfeed.adapters.kraken.symbols import (
    MetadataError,
    SymbolTable,
    fallback_v1_symbol,
    pair_from_instrument,
    pairs_from_asset_pairs,
)
from marketfeed.capture import Rest, read_capture
from tests.helpers import shared_capture


def pair(wsname: str, base: str, quote: str, pd: int = 2, ld: int = 8) -> dict:
    return {"altname": wsname.replace("/", ""), "wsname": wsname, "base": base, "quote": quote,
            "pair_decimals": pd, "lot_decimals": ld}


BODY = json.dumps({"error": [], "result": {
    "XXBTZUSD": pair("XBT/USD", "XXBT", "ZUSD", 1, 8),
    "XDGUSD": pair("XDG/USD", "XXDG", "ZUSD", 7, 8),
    "XXRPZUSD": pair("XRP/USD", "XXRP", "ZUSD", 5, 8),
    "XXLMZEUR": pair("XLM/EUR", "XXLM", "ZEUR", 6, 8),
    "XXMRXXBT": pair("XMR/XBT", "XXMR", "XXBT", 6, 8),
    "XZECZUSD": pair("ZEC/USD", "XZEC", "ZUSD", 2, 8),
    "XTZUSD": pair("XTZ/USD", "XTZ", "ZUSD", 4, 8),
    "DOTUSDT": pair("DOT/USDT", "DOT", "USDT", 4, 8),
    "XXBTZUSD.d": {"altname": "XBTUSD.d", "base": "XXBT", "quote": "ZUSD", "pair_decimals": 1, "lot_decimals": 8},
}})


def test_asset_pairs_names_and_precision():
    pairs = {p.rest: p for p in pairs_from_asset_pairs(BODY)}
    assert "XXBTZUSD.d" not in pairs  # no wsname: no WebSocket feed
    assert {k: (p.symbol, p.v2, p.v1) for k, p in pairs.items()} == {
        "XXBTZUSD": ("BTC-USD", "BTC/USD", "XBT/USD"),
        "XDGUSD": ("DOGE-USD", "DOGE/USD", "XDG/USD"),
        "XXRPZUSD": ("XRP-USD", "XRP/USD", "XRP/USD"),
        "XXLMZEUR": ("XLM-EUR", "XLM/EUR", "XLM/EUR"),
        "XXMRXXBT": ("XMR-BTC", "XMR/BTC", "XMR/XBT"),
        "XZECZUSD": ("ZEC-USD", "ZEC/USD", "ZEC/USD"),
        "XTZUSD": ("XTZ-USD", "XTZ/USD", "XTZ/USD"),
        "DOTUSDT": ("DOT-USDT", "DOT/USDT", "DOT/USDT"),
    }
    assert (pairs["XXBTZUSD"].price_precision, pairs["XXBTZUSD"].qty_precision) == (1, 8)
    assert (pairs["XDGUSD"].price_precision, pairs["XDGUSD"].qty_precision) == (7, 8)


def test_asset_pairs_errors():
    with pytest.raises(MetadataError):
        pairs_from_asset_pairs('{"error":["EQuery:Unknown asset pair"],"result":{}}')
    with pytest.raises(MetadataError):
        pairs_from_asset_pairs("<html>")
    with pytest.raises(MetadataError, match="disagrees"):
        pairs_from_asset_pairs(json.dumps({"error": [], "result": {"X": pair("XBT/USD", "XETH", "ZUSD")}}))


def test_table_keeps_rest_names_when_instrument_refreshes():
    table = SymbolTable()
    for p in pairs_from_asset_pairs(BODY):
        table.add(p)
    old = table.add(pair_from_instrument("BTC/USD", "BTC", "USD", 1, 8, "online"))
    assert old is not None and old.v1 == "XBT/USD"
    assert table.by_v2["BTC/USD"].v1 == "XBT/USD" and table.by_v1["XBT/USD"].symbol == "BTC-USD"


def test_fallback_without_metadata():
    assert fallback_v1_symbol("XBT/USD") == "BTC-USD"
    assert fallback_v1_symbol("XDG/EUR") == "DOGE-EUR"
    assert fallback_v1_symbol("XMR/USD") == "XMR-USD"
    assert fallback_v1_symbol("XTZ/XBT") == "XTZ-BTC"


@pytest.mark.shared
def test_real_asset_pairs_every_pair_consistent():
    path = shared_capture("kraken/v1-book10-xbtusd.capture.jsonl.gz")
    _, records = read_capture(path)
    body = next(r.data for r in records if isinstance(r, Rest) and "AssetPairs" in r.url)
    pairs = pairs_from_asset_pairs(body)
    raw = msgspec.json.decode(body)["result"]
    assert len(pairs) == sum(1 for v in raw.values() if v.get("wsname"))
    by_v1 = {p.v1: p for p in pairs}
    assert by_v1["XBT/USD"].symbol == "BTC-USD" and by_v1["XBT/USD"].price_precision == 1
    assert by_v1["XDG/USD"].symbol == "DOGE-USD"
    for name in ("XRP/USD", "XLM/USD", "XMR/USD", "ZEC/USD", "XTZ/USD"):
        assert by_v1[name].symbol == name.replace("/", "-")
    # no two pairs collapse onto one normalised name
    assert len({p.symbol for p in pairs}) == len(pairs)
