"""Which adapter serves which venue name. Imports are lazy so a venue's code loads only when used."""

from __future__ import annotations

from importlib import import_module

from marketfeed.config import VenueConfig
from marketfeed.protocol import Adapter

# venue name -> "module:factory"; the factory takes (venue name, VenueConfig or None) and returns an
# Adapter. A None config is replay mode: the adapter follows every symbol it sees.
ADAPTERS: dict[str, str] = {
    "binance": "marketfeed.adapters.binance.adapter:BinanceAdapter",
    "binance-usdm": "marketfeed.adapters.binance.adapter:BinanceAdapter",
    "kraken": "marketfeed.adapters.kraken.adapter:KrakenAdapter",
    "coinbase": "marketfeed.adapters.coinbase.adapter:CoinbaseAdapter",
    "coinbase-legacy": "marketfeed.adapters.coinbase.legacy:CoinbaseLegacyAdapter",
    "okx": "marketfeed.adapters.okx.adapter:OkxAdapter",
}


class UnknownVenue(ValueError):
    pass


def make_adapter(venue: str, config: VenueConfig | None = None) -> Adapter:
    try:
        target = ADAPTERS[venue]
    except KeyError:
        raise UnknownVenue(f"no adapter for venue {venue!r} (known: {', '.join(sorted(ADAPTERS))})") from None
    module, _, name = target.partition(":")
    factory = getattr(import_module(module), name)
    return factory(venue, config)
