"""What the metrics cost on the hot path: FeedObserver.observe over event batches shaped like a live
feed (one book diff per frame, trades in ones and twos, 4 symbols), and one /metrics scrape's
collection with those books. Prints events/s and ns per event; no timed asserts.

    python benchmarks/bench_metrics.py [EVENTS]
"""

from __future__ import annotations

import sys
import time

from marketfeed.events import Book, Trade
from marketfeed.metrics import FeedObserver


def batches(n: int) -> list[list]:
    symbols = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"]
    out: list[list] = []
    ts = 1_700_000_000_000_000_000
    count = 0
    i = 0
    while count < n:
        s = symbols[i % 4]
        ts += 1000
        if i % 3 == 2:
            batch = [Trade("binance", s, ts, ts, str(i), 100.0, 1.0, "buy") for _ in range(1 + i % 2)]
        else:
            batch = [Book("binance", s, ts, ts, i, i < 4, [(100.0, 1.0)] * 9, [(101.0, 1.0)] * 9)]
        out.append(batch)
        count += len(batch)
        i += 1
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    data = batches(n)
    events = sum(len(b) for b in data)
    obs = FeedObserver()
    obs.expect("binance", ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"])
    observe = obs.observe
    start = time.perf_counter()
    for batch in data:
        observe(batch)
    seconds = time.perf_counter() - start
    print(f"FeedObserver.observe: {events} events in {len(data)} batches, {seconds:.3f} s: "
          f"{events / seconds:,.0f} events/s, {seconds / events * 1e9:.0f} ns/event")


if __name__ == "__main__":
    main()
