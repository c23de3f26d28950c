"""For every venue and every fault kind its simulator applies: the fault is detected within the stated
bound, every book is valid and equal to the simulator's true book afterwards, and no event was ever
emitted from an invalid book (no diff between a book_invalid and the next snapshot, never a crossed
consumer book, every Kraken/OKX checksum right on the consumer's book).

Detection is a status event (book_invalid, disconnected, stale or error) except where the right
behaviour is to carry on: a duplicate, a malformed or truncated frame that loses nothing is only
counted by the adapter ("counter"); a rejected subscription by an error status for it ("error");
a REST failure is detected when the runtime counts the failed
response ("rest": the gap that made the client ask is a separate, earlier detection).
"""

from __future__ import annotations

import pytest

from marketfeed.simulate.faults import Fault
from marketfeed.simulate.serve import TARGETS
from tests.reliability.harness import Run

pytestmark = pytest.mark.timeout(90)

# kind -> (how it is detected, duration)
KINDS: dict[str, tuple[str, float | None]] = {
    "drop": ("status", None),
    "duplicate": ("counter", None),
    "stall": ("status", 30.0),
    "kill": ("status", None),
    "close": ("status", None),
    "malformed": ("counter", None),
    "truncated": ("counter", None),
    "oversized": ("counter", None),
    "rest429": ("rest", 1.0),
    "rest418": ("rest", 1.0),
    "rest500": ("rest", None),
    "rest_timeout": ("rest", 3.0),
    "server_shutdown": ("status", 1.0),
    "bad_checksum": ("status", None),
    "reject_subscription": ("error", 1.0),
}

# bugs the matrix found in the adapters or the runtime (not ours to fix here): xfail(strict=True)
KNOWN_BUGS: dict[tuple[str, str], str] = {
}


CASES = [
    pytest.param(venue, kind, id=f"{venue}-{kind}",
                 marks=[pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[(venue, kind)])] if (venue, kind) in KNOWN_BUGS else [])
    for venue in ("binance", "binance-usdm", "kraken", "coinbase", "okx")
    for kind in KINDS
    if kind in TARGETS[venue].supported
]


@pytest.mark.parametrize(("venue", "kind"), CASES)
async def test_fault_detected_and_recovered(venue: str, kind: str) -> None:
    detect_by, duration = KINDS[kind]
    fault = Fault(kind, 0, duration, 1011 if kind == "close" else None)
    async with Run(venue, fetch_timeout=1.0) as run:
        result = await run.inject(fault, detect_by)
        assert result.detected_by is not None
        assert run.invalid_emissions() == []
        # a second fault of the same kind after recovery is handled the same way
        await run.inject(fault, detect_by)
        assert run.invalid_emissions() == []
