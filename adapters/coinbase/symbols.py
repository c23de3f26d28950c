"""Coinbase product ids to normalised symbols, built from the products metadata.

Advanced Trade: ``GET /api/v3/brokerage/market/products`` gives ``base_currency_id`` and
``quote_currency_id``; a spot product normalises to ``BASE-QUOTE``. Futures (``product_type`` FUTURE)
have other id forms and stay out of the spot namespace: we do not cover them yet. ``-USDC`` products
are served on the market channels as their ``-USD`` alias (EXCHANGES.md 4.1), so a configured USDC
symbol is subscribed through its alias and its data is reported under the name that was asked for.

Without metadata (a recording that lacks the products response) Coinbase's ids are already
``BASE-QUOTE``; we upper-case them and the adapter says once in the log that it did so.
"""

from __future__ import annotations

from collections.abc import Iterable

from .schemas import LegacyProduct, Product

ALIASES = {"XBT": "BTC"}  # the rule "venue aliases mapped"; Coinbase itself uses BTC


def _asset(code: str) -> str:
    code = code.upper()
    return ALIASES.get(code, code)


def normalise(product: Product) -> str | None:
    """The normalised name of a spot product, or None for products we do not cover (futures, or a
    product whose currencies are missing)."""
    if product.product_type.upper() != "SPOT":
        return None
    if not product.base_currency_id or not product.quote_currency_id:
        return None
    return f"{_asset(product.base_currency_id)}-{_asset(product.quote_currency_id)}"


def normalise_legacy(product: LegacyProduct) -> str | None:
    if not product.base_currency or not product.quote_currency:
        return None
    return f"{_asset(product.base_currency)}-{_asset(product.quote_currency)}"


def guess(product_id: str) -> str | None:
    """Without metadata: Coinbase spot ids are ``BASE-QUOTE`` already; anything else is unknown."""
    parts = product_id.upper().split("-")
    if len(parts) != 2 or not all(parts):
        return None
    return f"{_asset(parts[0])}-{_asset(parts[1])}"


class ProductMap:
    """Product id <-> normalised symbol, from one products response."""

    def __init__(self, products: Iterable[Product]) -> None:
        self.by_symbol: dict[str, Product] = {}
        self.symbol_of: dict[str, str] = {}  # product id -> normalised symbol
        for product in products:
            name = normalise(product)
            if name is None:
                continue
            self.symbol_of[product.product_id] = name
            # a symbol listed twice (should not happen) keeps the first product
            self.by_symbol.setdefault(name, product)

    def __len__(self) -> int:
        return len(self.symbol_of)

    def subscription_for(self, symbol: str) -> str | None:
        """The product id to subscribe for a configured symbol: its own id, or the id it is served as
        (``BTC-USDC`` -> ``BTC-USD``); None when the venue does not list it."""
        product = self.by_symbol.get(symbol)
        if product is None:
            return None
        return product.alias or product.product_id
