"""OKX instrument metadata -> normalised names and contract sizes (EXCHANGES.md 5.6, 7.2)."""

from marketfeed.adapters.okx.schemas import Instrument
from marketfeed.adapters.okx.symbols import InstrumentMap, guess, normalise


def test_spot_from_base_and_quote():
    info = normalise(Instrument("SPOT", "BTC-USDT", baseCcy="BTC", quoteCcy="USDT", state="live"))
    assert info.symbol == "BTC-USDT" and info.refused is None and info.ct_val is None


def test_linear_swap_is_perp_sized_by_ctval():
    info = normalise(Instrument("SWAP", "BTC-USDT-SWAP", ctType="linear", ctVal="0.01", ctMult="1",
                                ctValCcy="BTC", settleCcy="USDT", lotSz="1", uly="BTC-USDT"))
    assert info.symbol == "BTC-USDT-PERP"
    assert info.refused is None
    assert info.ct_val == 0.01
    assert round(3 * info.ct_val, info.size_decimals) == 0.03


def test_linear_swap_with_fractional_lots_rounds_to_exact_decimal():
    info = normalise(Instrument("SWAP", "ETH-USDT-SWAP", ctType="linear", ctVal="0.1", ctMult="1",
                                ctValCcy="ETH", settleCcy="USDT", lotSz="0.1"))
    size = round(float("7") * info.ct_val, info.size_decimals)
    assert repr(size) == "0.7"  # not 0.7000000000000001
    assert repr(round(float("0.3") * info.ct_val, info.size_decimals)) == "0.03"


def test_inverse_contracts_are_refused_with_a_reason():
    info = normalise(Instrument("SWAP", "UNI-USD-SWAP", ctType="inverse", ctVal="10", ctValCcy="USD",
                                settleCcy="UNI"))
    assert info.symbol == "UNI-USD-PERP"
    assert info.refused and "inverse" in info.refused


def test_future_named_by_expiry_date():
    info = normalise(Instrument("FUTURES", "BTC-USDT-220527", ctType="linear", ctVal="0.01", ctValCcy="BTC",
                                settleCcy="USDT", expTime="1653638400000"))
    assert info.symbol == "BTC-USDT-20220527" and info.refused is None


def test_options_refused():
    info = normalise(Instrument("OPTION", "BTC-USD-250328-100000-C"))
    assert info.symbol is None and info.refused


def test_guess_without_metadata_spot_only():
    assert guess("ETH-USDT").symbol == "ETH-USDT"
    assert guess("BTC-USDT-SWAP").refused


def test_map_lookup_both_ways():
    m = InstrumentMap()
    m.load("SPOT", [Instrument("SPOT", "BTC-USDT", baseCcy="BTC", quoteCcy="USDT")])
    m.load("SWAP", [Instrument("SWAP", "BTC-USDT-SWAP", ctType="linear", ctVal="0.01", ctValCcy="BTC", settleCcy="USDT")])
    assert m.by_symbol["BTC-USDT-PERP"] == "BTC-USDT-SWAP"
    assert m.get("BTC-USDT").symbol == "BTC-USDT"
    assert {"SPOT", "SWAP"} <= m.loaded_types
