"""Coinbase level2 throughput: Advanced Trade ``l2_data`` update frames through the adapter.

Each message is the text of a frame shaped like Coinbase's (envelope with ``timestamp`` and
``sequence_num``; one ``update`` event of 1-4 ``bid``/``offer`` levels with ``event_time``, about a
fifth of them deletions), over a book of a few thousand levels per side. Measured: decode, sequence
check, book apply, the ``Book`` event. The garbage collector is frozen and disabled as in replay.
Prints messages/s, best of a few runs, by this process's CPU time (the machine is shared: wall time
would measure the neighbours too).

    .venv/bin/python benchmarks/bench_coinbase.py [messages] [runs]
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time

from marketfeed.adapters.coinbase.adapter import CoinbaseAdapter

TS = 1_763_700_000_000_000_000
PRODUCTS = ('{"products":[{"product_id":"BTC-USD","base_currency_id":"BTC","quote_currency_id":"USD",'
            '"product_type":"SPOT"}]}')


def replay_adapter() -> CoinbaseAdapter:
    """An adapter in replay mode that has seen the products metadata, as a recording would hold it."""
    adapter = CoinbaseAdapter("coinbase", None)
    adapter.on_rest(TS, "https://api.coinbase.com/api/v3/brokerage/market/products", 200, PRODUCTS)
    adapter.on_open("c1", TS, "wss://advanced-trade-ws.coinbase.com", None)
    return adapter


def make_frames(n: int, seed: int = 7) -> tuple[str, list[str]]:
    rng = random.Random(seed)
    tick = 0.01
    mid = 90_000.0
    levels = 3000

    def price(p: float) -> str:
        return f"{p:.2f}"

    snapshot = [{"side": "bid", "event_time": "2026-11-21T10:00:00.000000Z", "price_level": price(mid - tick * (i + 1)),
                 "new_quantity": f"{rng.uniform(0.001, 3):.8f}"} for i in range(levels)]
    snapshot += [{"side": "offer", "event_time": "2026-11-21T10:00:00.000000Z", "price_level": price(mid + tick * i),
                  "new_quantity": f"{rng.uniform(0.001, 3):.8f}"} for i in range(levels)]
    snap = json.dumps({"channel": "l2_data", "client_id": "", "timestamp": "2026-11-21T10:00:00.000000000Z",
                       "sequence_num": 0, "events": [{"type": "snapshot", "product_id": "BTC-USD", "updates": snapshot}]},
                      separators=(",", ":"))
    frames = []
    for seq in range(1, n + 1):
        updates = []
        for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
            side = rng.choice(("bid", "offer"))
            # most activity near the top of the book
            k = int(rng.expovariate(1 / 40))
            p = mid - tick * (k + 1) if side == "bid" else mid + tick * k
            qty = "0" if rng.random() < 0.2 else f"{rng.uniform(0.0001, 2):.8f}"
            us = seq * 37 % 1_000_000
            updates.append({"side": side, "event_time": f"2026-11-21T10:00:01.{us:06d}Z", "price_level": price(p),
                            "new_quantity": qty})
        ns = seq * 37_123 % 1_000_000_000
        frames.append(json.dumps({"channel": "l2_data", "client_id": "", "timestamp": f"2026-11-21T10:00:01.{ns:09d}Z",
                                  "sequence_num": seq, "events": [{"type": "update", "product_id": "BTC-USD",
                                                                   "updates": updates}]}, separators=(",", ":")))
    return snap, frames


def run(snap: str, frames: list[str]) -> float:
    adapter = replay_adapter()
    adapter.on_frame("c1", TS, snap)
    adapter.take_events()
    on_frame = adapter.on_frame
    take_events = adapter.take_events
    start = time.process_time()
    for i, frame in enumerate(frames):
        on_frame("c1", TS + i, frame)
        take_events()  # after each frame, as the runtime and replay do
    elapsed = time.process_time() - start
    assert adapter.counters["gaps"] == 0 and adapter.counters["malformed"] == 0
    return len(frames) / elapsed


def snapshot_cost(levels_per_side: int = 25_000) -> tuple[int, float]:
    """Size in bytes of one full-book snapshot frame and the seconds the adapter takes for it (decode,
    load, the snapshot event): full books are unbounded on Coinbase (EXCHANGES.md 4.1)."""
    snap, _ = make_frames(0)
    body = json.loads(snap)
    rng = random.Random(3)
    updates = [{"side": "bid", "event_time": "2026-11-21T10:00:00.000000Z", "price_level": f"{90000 - 0.01 * (i + 1):.2f}",
                "new_quantity": f"{rng.uniform(0.001, 3):.8f}"} for i in range(levels_per_side)]
    updates += [{"side": "offer", "event_time": "2026-11-21T10:00:00.000000Z", "price_level": f"{90000 + 0.01 * i:.2f}",
                 "new_quantity": f"{rng.uniform(0.001, 3):.8f}"} for i in range(levels_per_side)]
    body["events"][0]["updates"] = updates
    frame = json.dumps(body, separators=(",", ":"))
    best = float("inf")
    for _ in range(3):
        adapter = replay_adapter()
        start = time.perf_counter()
        adapter.on_frame("c1", TS, frame)
        best = min(best, time.perf_counter() - start)
    return len(frame.encode()), best


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    snap, frames = make_frames(n)
    gc.collect()
    gc.freeze()
    gc.disable()
    best = max(run(snap, frames) for _ in range(runs))
    avg = sum(len(json.loads(f)["events"][0]["updates"]) for f in frames[:10_000]) / 10_000
    print(f"coinbase level2 updates: {best:,.0f} messages/s (best of {runs}, {n:,} messages, "
          f"{avg:.2f} levels/message)")
    size, seconds = snapshot_cost()
    print(f"coinbase level2 snapshot of 50,000 levels: {size / 2**20:.1f} MiB frame, {seconds * 1000:.0f} ms "
          f"({size / 50_000:.0f} bytes/level)")


if __name__ == "__main__":
    main()
