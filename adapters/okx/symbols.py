"""OKX instrument metadata -> normalised names and size conversion (EXCHANGES.md 5.6, 7.2).

Names are built from metadata fields, never by cutting the instId apart:
- SPOT/MARGIN: ``baseCcy-quoteCcy`` (``BTC-USDT``).
- SWAP: ``BASE-QUOTE-PERP``; FUTURES: ``BASE-QUOTE-YYYYMMDD`` from ``expTime`` (UTC). A linear
  contract is worth ``ctVal`` of ``ctValCcy`` (the base) and settles in the quote; an inverse one is
  worth ``ctVal`` of the quote (USD) and settles in the base.

Sizes: spot sizes are base units already. Linear contract sizes become base units as
``contracts * ctVal``; the product is rounded to the decimals the two texts can carry, so that its
shortest float form is the exact decimal (``7 * 0.1`` -> ``0.7``, not ``0.7000000000000001``). Inverse
contracts are worth a fixed amount of quote currency, so their base size depends on the price: the
event contract does not cover them yet (EVENTS.md), and we refuse them with a clear reason.
Options are not covered either.

A recording without instrument metadata can only be normalised by OKX's instId rules; that is a guess
for spot (``BTC-USDT`` as is) and impossible for contracts (no ``ctVal``), which ``guess`` refuses.
"""

from __future__ import annotations

from datetime import datetime, timezone

import msgspec

from .schemas import Instrument

ALIASES = {"XBT": "BTC"}  # OKX uses BTC; kept for the rule "venue aliases mapped"


class InstrumentInfo(msgspec.Struct, gc=False):
    inst_id: str
    inst_type: str
    symbol: str | None  # normalised name; None when it cannot be built
    ct_val: float | None = None  # base units per contract (linear contracts only)
    size_decimals: int = 0  # decimals of contracts * ctVal (for rounding the product)
    refused: str | None = None  # why we do not publish this instrument (inverse, option, ...)
    state: str = ""


def _asset(code: str) -> str:
    code = code.upper()
    return ALIASES.get(code, code)


def decimals(text: str) -> int:
    """Digits after the decimal point of a decimal text (``"0.01"`` -> 2, ``"1"`` -> 0)."""
    dot = text.find(".")
    return 0 if dot < 0 else len(text) - dot - 1


def _expiry(exp_ms: str) -> str | None:
    try:
        return datetime.fromtimestamp(int(exp_ms) / 1000, tz=timezone.utc).strftime("%Y%m%d")
    except (ValueError, OverflowError, OSError):
        return None


def normalise(inst: Instrument) -> InstrumentInfo:
    kind = inst.instType
    if kind in ("SPOT", "MARGIN"):
        if not inst.baseCcy or not inst.quoteCcy:
            return InstrumentInfo(inst.instId, kind, None, refused="metadata lacks baseCcy/quoteCcy", state=inst.state)
        return InstrumentInfo(inst.instId, kind, f"{_asset(inst.baseCcy)}-{_asset(inst.quoteCcy)}", state=inst.state)
    if kind not in ("SWAP", "FUTURES"):
        return InstrumentInfo(inst.instId, kind, None, refused=f"{kind.lower()} instruments are not covered", state=inst.state)
    if inst.ctType == "linear":
        base, quote = inst.ctValCcy, inst.settleCcy
    elif inst.ctType == "inverse":
        base, quote = inst.settleCcy, inst.ctValCcy
    else:
        return InstrumentInfo(inst.instId, kind, None, refused=f"unknown contract type {inst.ctType!r}", state=inst.state)
    if not base or not quote:
        return InstrumentInfo(inst.instId, kind, None, refused="metadata lacks the contract currencies", state=inst.state)
    if kind == "SWAP":
        symbol = f"{_asset(base)}-{_asset(quote)}-PERP"
    else:
        day = _expiry(inst.expTime)
        if day is None:
            return InstrumentInfo(inst.instId, kind, None, refused=f"future without expTime ({inst.expTime!r})", state=inst.state)
        symbol = f"{_asset(base)}-{_asset(quote)}-{day}"
    if inst.ctType == "inverse":
        return InstrumentInfo(
            inst.instId, kind, symbol, state=inst.state,
            refused="inverse (coin-margined) contract: its contracts are worth a fixed amount of "
            f"{quote}, so sizes cannot be given in base units; not covered (EVENTS.md)",
        )
    try:
        ct_val = float(inst.ctVal) * (float(inst.ctMult) if inst.ctMult else 1.0)
    except ValueError:
        ct_val = 0.0
    if not ct_val > 0:
        return InstrumentInfo(inst.instId, kind, symbol, refused=f"bad contract value ctVal={inst.ctVal!r}", state=inst.state)
    size_decimals = decimals(inst.ctVal) + decimals(inst.ctMult or "1") + decimals(inst.lotSz or "1")
    return InstrumentInfo(inst.instId, kind, symbol, ct_val, size_decimals, state=inst.state)


def guess(inst_id: str) -> InstrumentInfo:
    """Without metadata: spot ``BASE-QUOTE`` ids are already normalised; contracts cannot be sized."""
    parts = inst_id.split("-")
    if len(parts) == 2 and all(parts):
        return InstrumentInfo(inst_id, "SPOT", f"{_asset(parts[0])}-{_asset(parts[1])}")
    return InstrumentInfo(
        inst_id, "", None, refused="no instrument metadata: a contract cannot be sized without ctVal"
    )


class InstrumentMap:
    """What the REST instrument lists told us: instId -> info, normalised name -> instId."""

    def __init__(self) -> None:
        self.by_inst: dict[str, InstrumentInfo] = {}
        self.by_symbol: dict[str, str] = {}
        self.loaded_types: set[str] = set()

    def load(self, inst_type: str | None, instruments: list[Instrument]) -> None:
        if inst_type:
            self.loaded_types.add(inst_type)
        for inst in instruments:
            self.loaded_types.add(inst.instType)
            info = normalise(inst)
            self.by_inst[inst.instId] = info
            if info.symbol is not None:
                self.by_symbol[info.symbol] = inst.instId

    def get(self, inst_id: str) -> InstrumentInfo | None:
        return self.by_inst.get(inst_id)
