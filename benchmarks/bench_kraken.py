"""Kraken v2 book throughput at depth 1000, the checksum verified on every message.

Frames come from the Kraken simulator's true book (marketfeed.simulate.kraken.book_frames): BTC/USD
(price precision 1, quantity precision 8), 1-3 changes per message, JSON numbers without trailing
zeros, the implicit truncation and the republished levels as Kraken sends them, and the true CRC32 of
the top 10 on every message. Measured: decode, book apply, truncation, checksum verification and the
``Book`` event, through ``KrakenAdapter.on_frame``. The garbage collector is frozen and disabled as in
replay. Prints messages/s (best of a few runs) for a top-heavy mix (70% of changes near the top, the
rest anywhere in the 1000 levels) and for a mix with every change near the top; and how often a
message changed the top 10 (the case that costs a new checksum text).

    .venv/bin/python benchmarks/bench_kraken.py [messages] [runs]
"""

from __future__ import annotations

import gc
import re
import sys
import time

from marketfeed.adapters.kraken.adapter import KrakenAdapter
from marketfeed.simulate.kraken import DEFAULT_PAIRS, asset_pairs_body, book_frames

TS = 1_763_700_000_000_000_000
DEPTH = 1000
_CHECKSUM = re.compile(r'"checksum":(\d+)')


def run(snapshot: str, frames: list[str]) -> float:
    adapter = KrakenAdapter("kraken", None)
    adapter.on_rest(TS, "https://api.kraken.com/0/public/AssetPairs", 200, asset_pairs_body())
    adapter.on_open("c1", TS, "wss://ws.kraken.com/v2", {"book": ["BTC/USD"], "depth": DEPTH, "trade": []})
    adapter.on_frame("c1", TS, snapshot)
    adapter.take_events()
    adapter.take_commands()
    on_frame = adapter.on_frame
    take_events = adapter.take_events
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        start = time.perf_counter()
        for i, frame in enumerate(frames):
            on_frame("c1", TS + i, frame)
            take_events()  # after each frame, as the runtime and replay do
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
        gc.unfreeze()
    c = adapter.counters
    assert c["books"] == len(frames) + 1 and c["checksum_failures"] == 0, dict(c)
    return len(frames) / elapsed


def top_changed_share(frames: list[str]) -> float:
    last = None
    changed = 0
    for f in frames:
        crc = _CHECKSUM.search(f).group(1)  # type: ignore[union-attr]
        changed += crc != last
        last = crc
    return changed / len(frames)


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    spec = DEFAULT_PAIRS[0]
    for label, near_top in (("top-heavy mix", 0.7), ("all changes near the top", 1.0)):
        _, snapshot, frames = book_frames(spec, DEPTH, n, seed=11, near_top=near_top)
        best = max(run(snapshot, frames) for _ in range(runs))
        print(f"kraken book depth {DEPTH}, checksum on every message, {label} "
              f"(top 10 changed in {top_changed_share(frames):.0%} of messages): {best:,.0f} messages/s")


if __name__ == "__main__":
    main()
