"""``marketfeed simulate``: several venue simulators in one process, each on its own port, with an
optional recording as the source of the books and an optional fault schedule per venue.

``start_venues`` is the API the CLI, ``make demo`` and the reliability tests share.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marketfeed.simulate.faults import (
    BinanceTarget,
    CoinbaseTarget,
    Fault,
    FaultError,
    FaultInjector,
    FaultTarget,
    KrakenTarget,
    OkxTarget,
)

VENUES = ("binance", "binance-usdm", "kraken", "coinbase", "okx")
TARGETS: dict[str, type[FaultTarget]] = {
    "binance": BinanceTarget, "binance-usdm": BinanceTarget, "kraken": KrakenTarget,
    "coinbase": CoinbaseTarget, "okx": OkxTarget,
}


@dataclass
class ServedVenue:
    venue: str
    server: Any
    target: FaultTarget
    symbols: list[str]  # normalised names, for a daemon config
    injector: FaultInjector | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ws_url(self) -> str:
        return self.server.ws_url

    @property
    def rest_url(self) -> str:
        return self.server.rest_url


def capture_venue(path: str | Path) -> str:
    """The venue a recording is of (its header)."""
    from marketfeed.capture import read_capture

    header, records = read_capture(path)
    close = getattr(records, "close", None)
    if close is not None:
        close()
    if len(header.venues) != 1:
        raise ValueError(f"{path}: a recording of {header.venues or 'no venue'}; name the venue with VENUE=FILE")
    venue = header.venues[0]
    return "coinbase" if venue == "coinbase-legacy" else venue  # served as today's protocol


def make_server(venue: str, seed: int = 1, speed: float = 1.0, capture: list[str] | None = None, **options: Any) -> tuple[Any, FaultTarget, list[str]]:
    """(server, fault target, normalised symbols) for one venue; not started."""
    if venue in ("binance", "binance-usdm"):
        from marketfeed.simulate.binance import SPOT, USDM, BinanceSimulator

        market = SPOT if venue == "binance" else USDM
        kwargs = {"seed": seed, "interval": options.pop("interval", 0.1) / speed, **options}
        if capture:
            sim = BinanceSimulator.from_capture(capture, market, **kwargs)
        else:
            sim = BinanceSimulator(**kwargs)
        books = sim.markets[market].books
        suffix = "-PERP" if market == USDM else ""
        symbols = [f"{b.spec.base}-{b.spec.quote}{suffix}" for b in books.values()]
        return sim, BinanceTarget(sim, market), symbols
    if venue == "kraken":
        from marketfeed.simulate.kraken import KrakenSimulator

        kwargs = {"seed": seed, "interval": options.pop("interval", 0.05) / speed, **options}
        sim = KrakenSimulator.from_capture(capture, **kwargs) if capture else KrakenSimulator(**kwargs)
        return sim, KrakenTarget(sim), [s.v2.replace("/", "-") for s in sim.specs.values()]
    if venue == "coinbase":
        from marketfeed.simulate.coinbase import CoinbaseSimulator

        kwargs = {"seed": seed, "interval": options.pop("interval", 0.05) / speed, **options}
        sim = CoinbaseSimulator.from_capture(capture, **kwargs) if capture else CoinbaseSimulator(**kwargs)
        return sim, CoinbaseTarget(sim), list(sim.books)
    if venue == "okx":
        from marketfeed.simulate.okx import OkxServer

        kwargs = {"seed": seed, "interval": options.pop("interval", 0.05) / speed, **options}
        sim = OkxServer.from_capture(capture, **kwargs) if capture else OkxServer(**kwargs)
        symbols = []
        for spec in sim.specs.values():
            if spec.inst_type == "SPOT":
                symbols.append(spec.inst_id)
            elif spec.ct_type == "linear":  # inverse swaps are not covered (EVENTS.md)
                symbols.append(spec.inst_id.removesuffix("-SWAP") + "-PERP")
        return sim, OkxTarget(sim), symbols
    raise ValueError(f"unknown venue {venue!r} (one of {', '.join(VENUES)})")


async def start_venues(
    venues: list[str],
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 1,
    speed: float = 1.0,
    captures: dict[str, list[str]] | None = None,
    faults: dict[str, list[Fault]] | None = None,
    options: dict[str, dict[str, Any]] | None = None,
) -> list[ServedVenue]:
    """Start one server per venue: ports ``port``, ``port+1``, ... (free ports when 0). Fault schedules
    are checked against each venue before anything starts."""
    served = []
    for i, venue in enumerate(venues):
        server, target, symbols = make_server(venue, seed + i, speed, (captures or {}).get(venue), **dict((options or {}).get(venue, {})))
        schedule = (faults or {}).get(venue) or []
        injector = FaultInjector(target, schedule) if schedule else None  # raises FaultError if not applicable
        served.append(ServedVenue(venue, server, target, symbols, injector))
    started: list[ServedVenue] = []
    try:
        for i, s in enumerate(served):
            await s.server.start(host, port + i if port else 0)
            started.append(s)
            if s.injector is not None:
                s.injector.start()
    except BaseException:
        await stop_venues(started)
        raise
    return served


async def stop_venues(served: list[ServedVenue]) -> None:
    for s in served:
        if s.injector is not None:
            await s.injector.stop()
        await s.server.stop()


def config_toml(served: list[ServedVenue], extra: dict[str, str] | None = None) -> str:
    """The ``[venues.*]`` tables that point a daemon at these servers."""
    lines = []
    for s in served:
        lines.append(f"[venues.{s.venue}]")
        lines.append("symbols = [" + ", ".join(f'"{x}"' for x in s.symbols) + "]")
        lines.append(f'ws_url = "{s.ws_url}"')
        lines.append(f'rest_url = "{s.rest_url}"')
        for key, value in (extra or {}).items():
            lines.append(f"{key} = {value}")
        lines.append("")
    return "\n".join(lines)


def parse_venue_faults(specs: list[str], venues: list[str], seed: int = 1) -> dict[str, list[Fault]]:
    """``--faults SPEC`` (every venue) or ``--faults VENUE=SPEC`` -> schedule per venue."""
    from marketfeed.simulate.faults import parse_schedule, random_schedule

    out: dict[str, list[Fault]] = {}
    for spec in specs:
        if spec.startswith("random"):  # random[:COUNT[:EVERY]]: a seeded schedule of every applicable kind
            parts = spec.split(":")
            count = int(parts[1]) if len(parts) > 1 else 20
            every = int(parts[2]) if len(parts) > 2 else 500
            for i, v in enumerate(venues):
                kinds = sorted(TARGETS[v].supported - {"oversized", "rest_timeout"})
                out.setdefault(v, []).extend(random_schedule(seed + i, kinds, count, every))
            continue
        name, sep, rest = spec.partition("=")
        if sep and name in VENUES:
            if name not in venues:
                raise FaultError(f"--faults {spec!r}: {name} is not simulated (add --venue {name})")
            out.setdefault(name, []).extend(parse_schedule(rest))
        else:
            for v in venues:
                out.setdefault(v, []).extend(parse_schedule(spec))
    return out


async def serve_forever(served: list[ServedVenue]) -> None:
    try:
        await asyncio.Event().wait()
    finally:
        await stop_venues(served)
