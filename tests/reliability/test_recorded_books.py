"""Every venue's simulator driven by a real recording (../shared/captures): older protocol versions
(Kraken v1, OKX without seqId, Coinbase's legacy level2) are served as today's messages built from the
replayed book. Our daemon's consumer book equals the server's true book, checksums hold on every
message, and a gap (or a corrupted checksum) is detected and recovered from."""

from __future__ import annotations

import pytest

from marketfeed.simulate.faults import Fault
from tests.helpers import shared_capture
from tests.reliability.harness import Run

pytestmark = [pytest.mark.timeout(90), pytest.mark.shared]

CAPTURES = {
    "binance": "binance/spot-btcusdt-20240808.capture.jsonl.gz",
    "binance-usdm": "binance-usdm/usdm-btcusdt-20240808.capture.jsonl.gz",
    "kraken": "kraken/v1-book10-xbtusd.capture.jsonl.gz",
    "coinbase": "coinbase/cryptofeed-legacy-level2-20210417.capture.jsonl.gz",
    "okx": "okx/cryptofeed-books-20220513.capture.jsonl.gz",
}
FAULTS = {"kraken": "bad_checksum", "okx": "bad_checksum"}


@pytest.mark.parametrize("venue", list(CAPTURES))
async def test_recorded_books_served_and_recovered(venue: str) -> None:
    capture = str(shared_capture(CAPTURES[venue]))
    # a recorded Binance book is deeper than a 1000-level snapshot: compare the top 500
    depth = 500 if venue.startswith("binance") else None
    extra = {"depth": 10} if venue == "kraken" else {}
    async with Run(venue, capture=[capture], compare_depth=depth, fetch_timeout=2.0, **extra) as run:
        await run.all_true()
        for kind in ("drop", FAULTS.get(venue, "kill")):
            await run.inject(Fault(kind, 0))
        assert run.invalid_emissions() == []
        if venue in ("kraken", "okx"):
            assert run.checked > 0  # the checksum was verified on the consumer's book
