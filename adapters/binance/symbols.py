"""Binance symbol names: native (``BTCUSDT``, ``BTCUSDT_250926``) to normalised (``BTC-USDT``,
``BTC-USDT-PERP``, ``BTC-USDT-20250926``), built from exchangeInfo's ``baseAsset``/``quoteAsset``.

Recordings without exchangeInfo (the hftbacktest ones) fall back to the venue's known quote assets,
longest first, which is right for every listed pair we know of but is a guess: the adapter says so.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .schemas import SymbolInfo

# Binance quote assets, longest first so FDUSD wins over USD and USDT over USD.
KNOWN_QUOTES = sorted(
    (
        "USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "DAI", "BTC", "ETH", "BNB", "XRP", "TRX",
        "DOGE", "EUR", "GBP", "TRY", "BRL", "AUD", "JPY", "RUB", "UAH", "ZAR", "IDRT", "BIDR", "NGN",
        "PLN", "RON", "ARS", "MXN", "COP", "CZK", "PAX", "VAI", "DOT", "USDS", "AEUR", "EURI",
    ),
    key=len,
    reverse=True,
)

ALIASES = {"XBT": "BTC"}  # not used by Binance today; kept for the rule "aliases mapped"


def _asset(code: str) -> str:
    code = code.upper()
    return ALIASES.get(code, code)


def normalise(info: SymbolInfo, futures: bool) -> str | None:
    """The normalised name, or None for instruments we do not cover (e.g. unknown contract types)."""
    base, quote = _asset(info.baseAsset), _asset(info.quoteAsset)
    if not futures:
        return f"{base}-{quote}"
    if info.contractType in (None, "", "PERPETUAL"):
        return f"{base}-{quote}-PERP"
    if info.deliveryDate:
        day = datetime.fromtimestamp(info.deliveryDate / 1000, tz=timezone.utc).strftime("%Y%m%d")
        return f"{base}-{quote}-{day}"
    return None


def guess(native: str, futures: bool) -> str | None:
    """Normalise without metadata by the known quote assets; None when no known quote matches."""
    native = native.upper()
    pair, _, expiry = native.partition("_")
    for quote in KNOWN_QUOTES:
        if pair.endswith(quote) and len(pair) > len(quote):
            base = _asset(pair[: -len(quote)])
            name = f"{base}-{_asset(quote)}"
            if not futures:
                return name
            if expiry:
                return f"{name}-20{expiry}" if len(expiry) == 6 and expiry.isdigit() else None
            return f"{name}-PERP"
    return None


class SymbolMap:
    """Native <-> normalised names of one Binance venue."""

    def __init__(self, futures: bool) -> None:
        self.futures = futures
        self.to_normal: dict[str, str] = {}
        self.to_native: dict[str, str] = {}
        self.status: dict[str, str] = {}
        self.from_metadata = False

    def load(self, symbols: list[SymbolInfo]) -> None:
        for info in symbols:
            name = normalise(info, self.futures)
            if name is None:
                continue
            self.to_normal[info.symbol] = name
            self.to_native[name] = info.symbol
            self.status[info.symbol] = info.status
        self.from_metadata = True

    def normal(self, native: str) -> str | None:
        """Normalised name of a native symbol; guessed (and remembered) when metadata lacks it."""
        name = self.to_normal.get(native)
        if name is None and not self.from_metadata:
            name = guess(native, self.futures)
            if name is not None:
                self.to_normal[native] = name
                self.to_native.setdefault(name, native)
        return name
