"""The reliability harness: one venue's simulator (marketfeed.simulate.serve), the real runtime and
adapter (VenueRunner, the daemon's per-venue engine) on real sockets, a consumer-side book built only
from our events, and an oracle per venue:

* the simulator's true book (compared level by level with the market frozen);
* the venue checksum recomputed on the consumer's book for every checksummed event (Kraken, OKX);
* ConsumerBooks' rules: no diff between a book_invalid and the next snapshot, never a crossed book.

``Run.inject`` fires a fault and measures detection (the first status event that says the book or the
connection is affected, or the adapter counting the bad input) and recovery (every book valid again and
equal to the truth). Every measurement goes into ``RESULTS`` for the report table.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from marketfeed.events import BOOK_INVALID, DISCONNECTED, ERROR, STALE, Book, Status
from marketfeed.simulate.faults import Fault, FaultInjector
from marketfeed.simulate.serve import make_server
from tests.integration.live import LiveVenue, wait_until

DETECTION_STATES = (BOOK_INVALID, DISCONNECTED, STALE, ERROR)
# seconds: the stated bounds. A stall is noticed by the staleness timer (stale_after 1 s, ticks of 0.1 s)
DETECTION_BOUND = {"stall": 3.0}
DEFAULT_DETECTION_BOUND = 2.0
RECOVERY_BOUND = 15.0
# a refused subscription must be retried: the book back within this many seconds (a client that only
# recovers when the connection happens to be replaced for another reason does not pass)
RECOVERY_BOUND_BY_KIND = {"reject_subscription": 8.0}
PROBLEM_COUNTERS = (
    "malformed", "unknown_message", "duplicates", "stale_diffs", "gaps", "checksum_failures", "crossed",
    "venue_errors", "error_response", "subscribe_errors", "server_shutdown", "rest_errors", "snapshot_failures",
    "update_without_snapshot",
)

# the interval of each seeded server: fast enough that faults show at once, slow enough for 2 cores
INTERVAL = {"binance": 0.05, "binance-usdm": 0.05, "kraken": 0.03, "coinbase": 0.03, "okx": 0.03}


@dataclass
class Result:
    venue: str
    kind: str
    detected_by: str | None = None
    detection_s: float | None = None
    recovery_s: float | None = None
    invalid_emissions: int = 0


RESULTS: list[Result] = []


def okx_text(x: float, ct: Decimal | None = None) -> str:
    d = Decimal(repr(x))
    if ct is not None:
        d = d / ct
    s = format(d, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


class Run(LiveVenue):
    """A venue under test. Use ``async with Run(venue) as run``."""

    def __init__(self, venue: str, seed: int = 7, server_options: dict[str, Any] | None = None,
                 capture: list[str] | None = None, compare_depth: int | None = None, **config: Any) -> None:
        """``capture``: the server replays this recording's books. ``compare_depth``: compare only the
        top levels with the truth (a recorded book can be deeper than the client's snapshot)."""
        options = {"interval": INTERVAL[venue], **(server_options or {})}
        self.server, self.target, symbols = make_server(venue, seed=seed, capture=capture, **options)
        self.compare_depth = compare_depth
        self.injector = FaultInjector(self.target, [])
        self.venue_name = venue
        self._init_config = config
        self._symbols = symbols
        self.checksum_errors: list[str] = []
        self.checked = 0

    async def __aenter__(self) -> Run:  # noqa: PYI034
        await self.server.start()
        config = dict(self._init_config)
        config.setdefault("tick_interval", 0.1)
        if self.venue_name == "kraken":
            config.setdefault("depth", 25)
        LiveVenue.__init__(self, self.venue_name, self._symbols, self.server.ws_url, self.server.rest_url, **config)
        await LiveVenue.__aenter__(self)
        await self.all_valid()
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await self.injector.stop()
            await LiveVenue.__aexit__(self, *exc)
        finally:
            await self.server.stop()

    # -- oracles ------------------------------------------------------------------------------------

    def on_book(self, event: Book, book: Any) -> None:
        if event.checksum is None or book is None:
            return
        self.checked += 1
        if self.venue_name == "kraken":
            from marketfeed.adapters.kraken.checksum import checksum_of_book

            spec = self.server.specs[event.symbol.replace("-", "/")]
            ok = checksum_of_book(book, spec.price_precision, spec.qty_precision) == event.checksum
        elif self.venue_name == "okx":
            from marketfeed.adapters.okx.checksum import okx_checksum

            ct = self._okx_ct(event.symbol)
            bids = [(okx_text(p), okx_text(s, ct)) for p, s in book.bids.top(25)]
            asks = [(okx_text(p), okx_text(s, ct)) for p, s in book.asks.top(25)]
            ok = okx_checksum(bids, asks) == event.checksum
        else:
            return
        if not ok:
            self.checksum_errors.append(f"{event.symbol} seq={event.seq} checksum={event.checksum}")

    def _okx_ct(self, symbol: str) -> Decimal | None:
        if not symbol.endswith("-PERP"):
            return None
        spec = self.server.specs[symbol.removesuffix("-PERP") + "-SWAP"]
        return Decimal(spec.ct_val)

    def native(self, symbol: str) -> str:
        if self.venue_name in ("binance", "binance-usdm"):
            return symbol.removesuffix("-PERP").replace("-", "")
        if self.venue_name == "kraken":
            return symbol.replace("-", "/")
        if self.venue_name == "okx" and symbol.endswith("-PERP"):
            return symbol.removesuffix("-PERP") + "-SWAP"
        return symbol

    def truth(self, symbol: str) -> tuple[dict[float, float], dict[float, float]]:
        s, native = self.server, self.native(symbol)
        if self.venue_name == "binance":
            return s.true_book(native, "spot")[1:]
        if self.venue_name == "binance-usdm":
            return s.true_book(native, "usdm")[1:]
        if self.venue_name == "kraken":
            return s.true_view(native, self.config.depth or 25)[1:]
        if self.venue_name == "okx":
            return s.true_book(native)[1:]
        return s.true_book(native)

    def matches_truth(self, symbol: str) -> bool:
        book = self.books.books.get((self.venue, symbol))
        if book is None or not self.valid(symbol):
            return False
        bids, asks = self.truth(symbol)
        if self.compare_depth is not None:
            n = self.compare_depth
            ours_bids, ours_asks = book.top(n)
            return (list(ours_bids) == sorted(bids.items(), reverse=True)[:n]
                    and list(ours_asks) == sorted(asks.items())[:n])
        return book.bids.levels == bids and book.asks.levels == asks

    def invalid_emissions(self) -> list[str]:
        return self.books.violations + self.checksum_errors

    # -- waits --------------------------------------------------------------------------------------

    async def all_valid(self, timeout: float = RECOVERY_BOUND) -> None:
        await wait_until(lambda: all(self.valid(s) for s in self._symbols), f"{self.venue_name}: every book valid", timeout)

    async def all_true(self, timeout: float = RECOVERY_BOUND) -> None:
        """Every consumer book valid and equal to the true one, compared with the market frozen.

        A freeze can fall while a resync is still under way (the status that invalidates a book can
        come a batch after the one that detected the fault; a Binance book needs a diff after its
        snapshot): then the market runs again and the comparison is retried, until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            await self.all_valid(max(0.1, deadline - time.monotonic()))
            self.server.pause()
            try:
                settle = time.monotonic() + 1.0
                while time.monotonic() < settle:
                    if all(self.matches_truth(s) for s in self._symbols):
                        return
                    await asyncio.sleep(0.01)
            finally:
                self.server.resume()
            if time.monotonic() > deadline:
                wrong = [s for s in self._symbols if not self.matches_truth(s)]
                raise AssertionError(f"{self.venue_name}: {wrong} not equal to the true book within {timeout} s")
            await asyncio.sleep(0.2)

    def counted_problems(self) -> int:
        """Adapter and runtime counts of bad input: what a fault that loses nothing is detected by."""
        return sum(int(c.get(k, 0)) for c in (self.adapter.counters, self.runner.counters) for k in PROBLEM_COUNTERS)

    def rest_failures(self) -> int:
        return sum(v for k, v in dict(self.runner.counters).items() if k.startswith("rest_") and k != "rest_200")

    async def inject(self, fault: Fault, detect_by: str = "status") -> Result:
        """Fire ``fault``; wait for detection (``status``: a status event of DETECTION_STATES;
        ``counter``: the adapter or runtime counting the bad input) and recovery; record the result."""
        result = Result(self.venue_name, str(fault).split("@")[0])
        RESULTS.append(result)  # now: a fault not detected or not recovered from shows in the table too
        since = len(self.events)
        problems = self.counted_problems()
        rest_failures = self.rest_failures()
        invalid_before = len(self.invalid_emissions())
        record = await self.injector.fire(fault)

        def detected() -> str | None:
            if detect_by == "rest":
                return "rest failure counted" if self.rest_failures() > rest_failures else None
            for e in self.events[since:]:
                if isinstance(e, Status) and e.state in DETECTION_STATES and (detect_by != "error" or e.state == ERROR):
                    return f"status {e.state}"
            if detect_by == "counter" and self.counted_problems() > problems:
                return "counter"
            return None

        bound = DETECTION_BOUND.get(fault.kind, DEFAULT_DETECTION_BOUND)
        try:
            await wait_until(lambda: detected() is not None, f"{self.venue_name} detects {fault}", bound)
            result.detected_by = detected()
            result.detection_s = time.monotonic() - record.at
            recovery_bound = RECOVERY_BOUND_BY_KIND.get(fault.kind, RECOVERY_BOUND)
            await self.all_true(max(0.1, recovery_bound - (time.monotonic() - record.at)))
            result.recovery_s = time.monotonic() - record.at
        finally:
            result.invalid_emissions = len(self.invalid_emissions()) - invalid_before
        return result


def report_table(results: list[Result]) -> str:
    by_kind: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        by_kind.setdefault((r.venue, r.kind), []).append(r)
    lines = [
        "| venue | fault | injected | detected | recovered | invalid emissions | worst detection (s) | worst recovery (s) | detected by |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    total = [0, 0, 0, 0]
    worst_d = worst_r = 0.0
    for (venue, kind), rs in sorted(by_kind.items()):
        det = [r for r in rs if r.detection_s is not None]
        rec = [r for r in rs if r.recovery_s is not None]
        inv = sum(r.invalid_emissions for r in rs)
        wd = max((r.detection_s for r in det), default=None)  # type: ignore[type-var]
        wr = max((r.recovery_s for r in rec), default=None)  # type: ignore[type-var]
        total[0] += len(rs)
        total[1] += len(det)
        total[2] += len(rec)
        total[3] += inv
        worst_d = max(worst_d, wd or 0.0)
        worst_r = max(worst_r, wr or 0.0)
        how = ", ".join(sorted({r.detected_by or "-" for r in rs}))
        lines.append(f"| {venue} | {kind} | {len(rs)} | {len(det)} | {len(rec)} | {inv} | "
                     f"{'-' if wd is None else f'{wd:.3f}'} | {'-' if wr is None else f'{wr:.3f}'} | {how} |")
    lines.append(f"| **all** | | {total[0]} | {total[1]} | {total[2]} | {total[3]} | {worst_d:.3f} | {worst_r:.3f} | |")
    return "\n".join(lines) + "\n"

