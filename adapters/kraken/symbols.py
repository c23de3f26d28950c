"""Kraken symbols: v2 names (``BTC/USD``), v1/REST names (``XBT/USD``, ``XXBTZUSD``) and normalised
names (``BTC-USD``), built from instrument metadata (REST ``AssetPairs``, WS v2 ``instrument``).

Kraken's legacy asset codes are mapped with a lookup table, never by stripping an ``X``/``Z`` prefix:
``XRP``, ``XLM``, ``XMR``, ``ZEC`` and ``XTZ`` are real names that start with those letters.
"""

from __future__ import annotations

import msgspec

# Legacy REST asset codes (AssetPairs ``base``/``quote``) and v1 WebSocket codes -> common names.
# Codes not listed are already common names (DOT, XTZ, USDT, ...).
ASSET_ALIASES: dict[str, str] = {
    "XXBT": "BTC",
    "XBT": "BTC",
    "XXDG": "DOGE",
    "XDG": "DOGE",
    "XETH": "ETH",
    "XETC": "ETC",
    "XLTC": "LTC",
    "XMLN": "MLN",
    "XREP": "REP",
    "XXLM": "XLM",
    "XXMR": "XMR",
    "XXRP": "XRP",
    "XZEC": "ZEC",
    "ZAUD": "AUD",
    "ZCAD": "CAD",
    "ZCHF": "CHF",
    "ZEUR": "EUR",
    "ZGBP": "GBP",
    "ZJPY": "JPY",
    "ZUSD": "USD",
}


def common_asset(code: str) -> str:
    return ASSET_ALIASES.get(code, code)


class PairInfo(msgspec.Struct, frozen=True):
    """One spot pair under all its names, with the precision its book checksum needs."""

    symbol: str  # normalised: BTC-USD
    v2: str  # WS v2: BTC/USD
    v1: str | None  # WS v1 / REST wsname: XBT/USD
    rest: str | None  # REST result key: XXBTZUSD
    price_precision: int | None  # decimals of a price (pair_decimals / price_precision)
    qty_precision: int | None  # decimals of a quantity (lot_decimals / qty_precision)
    status: str | None = None


# --- REST AssetPairs -------------------------------------------------------------------------------


class RestAssetPair(msgspec.Struct):
    altname: str | None = None
    wsname: str | None = None
    base: str | None = None
    quote: str | None = None
    pair_decimals: int | None = None
    lot_decimals: int | None = None
    status: str | None = None


class RestAssetPairs(msgspec.Struct):
    error: list[str] = []
    result: dict[str, RestAssetPair] = {}


_asset_pairs_decoder = msgspec.json.Decoder(RestAssetPairs)


class MetadataError(ValueError):
    pass


def pairs_from_asset_pairs(body: str | bytes) -> list[PairInfo]:
    """Parse a REST ``AssetPairs`` response (legacy or ``assetVersion=1`` naming).

    Pairs without a ``wsname`` (the ``.d`` dark-pool books) have no WebSocket feed and are skipped.
    Raises MetadataError for a body that is not an AssetPairs answer or that carries an error.
    """
    try:
        parsed = _asset_pairs_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise MetadataError(f"AssetPairs: {exc}") from None
    if parsed.error:
        raise MetadataError(f"AssetPairs error: {'; '.join(parsed.error)}")
    pairs = []
    for key, p in parsed.result.items():
        if not p.wsname or p.base is None or p.quote is None:
            continue
        base, quote = common_asset(p.base), common_asset(p.quote)
        # wsname is the v1 name (XBT/USD); its halves must name the same assets as base/quote
        ws_base, _, ws_quote = p.wsname.partition("/")
        if (common_asset(ws_base), common_asset(ws_quote)) != (base, quote):
            raise MetadataError(f"AssetPairs {key}: wsname {p.wsname} disagrees with base/quote {p.base}/{p.quote}")
        pairs.append(
            PairInfo(
                symbol=f"{base}-{quote}",
                v2=f"{base}/{quote}",
                v1=p.wsname,
                rest=key,
                price_precision=p.pair_decimals,
                qty_precision=p.lot_decimals,
                status=p.status,
            )
        )
    return pairs


# --- WS v2 instrument channel ---------------------------------------------------------------------


def pair_from_instrument(symbol: str, base: str, quote: str, price_precision: int, qty_precision: int,
                         status: str | None) -> PairInfo:
    return PairInfo(
        symbol=f"{common_asset(base)}-{common_asset(quote)}",
        v2=symbol,
        v1=None,
        rest=None,
        price_precision=price_precision,
        qty_precision=qty_precision,
        status=status,
    )


class SymbolTable:
    """Every known pair, found by normalised, v2 or v1 name."""

    def __init__(self) -> None:
        self.by_symbol: dict[str, PairInfo] = {}
        self.by_v2: dict[str, PairInfo] = {}
        self.by_v1: dict[str, PairInfo] = {}

    def __len__(self) -> int:
        return len(self.by_symbol)

    def add(self, pair: PairInfo) -> PairInfo | None:
        """Add or refresh ``pair``; a pair known from REST keeps its v1/REST names. Returns the entry it
        replaced (None if new), so the caller can notice a precision change."""
        old = self.by_v2.get(pair.v2)
        if old is not None and pair.v1 is None and old.v1 is not None:
            pair = msgspec.structs.replace(pair, v1=old.v1, rest=old.rest)
        self.by_symbol[pair.symbol] = pair
        self.by_v2[pair.v2] = pair
        if pair.v1:
            self.by_v1[pair.v1] = pair
        return old


def fallback_v1_symbol(native: str) -> str:
    """Normalise a v1 pair name without metadata: split on Kraken's own ``/`` separator and map the
    legacy codes with the table. Used only when a recording lacks AssetPairs (logged once)."""
    base, _, quote = native.partition("/")
    return f"{common_asset(base)}-{common_asset(quote)}"


def fallback_v2_symbol(native: str) -> str:
    base, _, quote = native.partition("/")
    return f"{common_asset(base)}-{common_asset(quote)}"
