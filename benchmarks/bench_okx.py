"""OKX books throughput: ``books``-channel frames through the adapter with seqId continuity and the
top-25 checksum verified on every message.

Frames are shaped like OKX's (``{"arg":…,"action":"update","data":[{"asks":[["px","sz","0","n"],…],
"bids":…,"ts":…,"checksum":…,"prevSeqId":…,"seqId":…}]}``) over a 400-level book per side that stays at
400 levels as OKX's does (a level entering the window pushes the worst one out with an explicit
delete). Checksums are computed by the generator from its own book with the reference function, so a
wrong apply would fail verification (the script checks that none did). Two shapes:

- ``tbt``: 1-4 levels per message (``books-l2-tbt``'s 10 ms pushes, and what most of a busy stream
  looks like) — the headline figure;
- ``books``: about 20 levels per message (the public ``books`` channel aggregates 100 ms; the real
  2022 capture's median is 19 levels).

Measured: envelope + payload decode, continuity check, book apply with the exact-text fragments, the
checksum, the ``Book`` event. The garbage collector is frozen and disabled as in replay. Prints
messages/s, best of a few runs.

    .venv/bin/python benchmarks/bench_okx.py [messages] [runs]
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time

from sortedcontainers import SortedList

from marketfeed.adapters.okx.adapter import OkxAdapter
from marketfeed.adapters.okx.checksum import okx_checksum

TS = 1_763_700_000_000_000_000
INST = "BTC-USDT"
DEPTH = 400
INSTRUMENTS = json.dumps({"code": "0", "msg": "", "data": [
    {"instType": "SPOT", "instId": INST, "baseCcy": "BTC", "quoteCcy": "USDT", "tickSz": "0.1", "lotSz": "0.00000001", "state": "live"}]})


def px(tick: int) -> str:
    """Price text for a tick index at tick size 0.1, in OKX's form (no trailing zeros)."""
    whole, frac = divmod(tick, 10)
    return f"{whole}.{frac}" if frac else str(whole)


def make_frames(n: int, levels_per_msg: tuple[int, ...], seed: int = 11) -> tuple[str, list[str]]:
    rng = random.Random(seed)
    mid = 300_000  # 30000.0 in ticks of 0.1
    bids = {mid - 1 - i: f"{rng.randint(1, 300_000_000) / 1e8:.8f}".rstrip("0").rstrip(".") for i in range(DEPTH)}
    asks = {mid + i: f"{rng.randint(1, 300_000_000) / 1e8:.8f}".rstrip("0").rstrip(".") for i in range(DEPTH)}
    bid_ticks = SortedList(bids)
    ask_ticks = SortedList(asks)

    def checksum() -> int:
        b = [(px(t), bids[t]) for t in bid_ticks[-1:-26:-1]]
        a = [(px(t), asks[t]) for t in ask_ticks[:25]]
        return okx_checksum(b, a)

    def level(side: dict, t: int) -> list[str]:
        return [px(t), side.get(t, "0"), "0", "1" if t in side else "0"]

    seq = 5_000_000
    arg = {"channel": "books", "instId": INST}
    snap = json.dumps({"arg": arg, "action": "snapshot", "data": [{
        "asks": [level(asks, t) for t in ask_ticks], "bids": [level(bids, t) for t in reversed(bid_ticks)],
        "ts": "1763700000000", "checksum": checksum(), "prevSeqId": -1, "seqId": seq}]}, separators=(",", ":"))
    frames = []
    for i in range(n):
        changed_b: dict[int, None] = {}
        changed_a: dict[int, None] = {}
        for _ in range(rng.choice(levels_per_msg)):
            is_bid = rng.random() < 0.5
            side, ticks, changed = (bids, bid_ticks, changed_b) if is_bid else (asks, ask_ticks, changed_a)
            other = ask_ticks if is_bid else bid_ticks
            k = int(rng.expovariate(1 / 12))
            best = ticks[-1] if is_bid else ticks[0]
            t = best - k if is_bid else best + k
            if rng.random() < 0.1:
                t = best + 1 if is_bid else best - 1  # a new inside level
                if (is_bid and t >= other[0]) or (not is_bid and t <= other[-1]):
                    continue
            r = rng.random()
            if t in side and r < 0.2 and len(side) > DEPTH - 5:
                del side[t]
                ticks.remove(t)
            else:
                if t not in side:
                    ticks.add(t)
                side[t] = f"{rng.randint(1, 300_000_000) / 1e8:.8f}".rstrip("0").rstrip(".")
            changed[t] = None
            while len(ticks) > DEPTH:  # the window: the worst level leaves with an explicit delete
                worst = ticks[0] if is_bid else ticks[-1]
                ticks.remove(worst)
                del side[worst]
                changed[worst] = None
            while len(ticks) < DEPTH:  # a deeper level enters the window
                worst = ticks[0] if is_bid else ticks[-1]
                t2 = worst - 1 if is_bid else worst + 1
                ticks.add(t2)
                side[t2] = "1"
                changed[t2] = None
        prev, seq = seq, seq + rng.randint(1, 4)
        frames.append(json.dumps({"arg": arg, "action": "update", "data": [{
            "asks": [level(asks, t) for t in sorted(changed_a)],
            "bids": [level(bids, t) for t in sorted(changed_b, reverse=True)],
            "ts": str(1763700000000 + i), "checksum": checksum(), "prevSeqId": prev, "seqId": seq}]},
            separators=(",", ":")))
    return snap, frames


def run(snap: str, frames: list[str]) -> tuple[float, float, OkxAdapter]:
    """(messages per wall-clock second, messages per CPU second, the adapter)"""
    adapter = OkxAdapter("okx", None)  # replay mode, as a recording is replayed
    adapter.on_rest(TS, "https://www.okx.com/api/v5/public/instruments?instType=SPOT", 200, INSTRUMENTS)
    adapter.on_open("c1", TS, "wss://ws.okx.com:8443/ws/v5/public", None)
    adapter.on_frame("c1", TS, json.dumps({"event": "subscribe", "arg": {"channel": "books", "instId": INST}}))
    adapter.on_frame("c1", TS, snap)
    adapter.take_events()
    on_frame = adapter.on_frame
    take_events = adapter.take_events
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        t0 = time.perf_counter()
        c0 = time.process_time()
        ts = TS
        for frame in frames:
            ts += 1000
            on_frame("c1", ts, frame)
            take_events()  # after each frame, as the runtime and replay do
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
    finally:
        gc.enable()
        gc.unfreeze()
    return len(frames) / elapsed, len(frames) / cpu, adapter


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    for name, shape in (("tbt (1-4 levels/msg)", (1, 1, 2, 2, 3, 4)), ("books (~20 levels/msg)", (16, 18, 20, 22, 24))):
        snap, frames = make_frames(n if shape[0] < 10 else n // 4, shape)
        best = best_cpu = 0.0
        for _ in range(runs):
            rate, cpu_rate, adapter = run(snap, frames)
            best_cpu = max(best_cpu, cpu_rate)
            c = adapter.counters
            assert c["checksum_failures"] == 0 and c["gaps"] == 0 and c["resyncs"] == 0, dict(c)
            assert c["checksums_verified"] == len(frames) + 1, dict(c)
            best = max(best, rate)
        levels = sum(f.count('","0","') for f in frames) / len(frames)
        print(f"okx {name}: {best:,.0f} messages/s with seqId continuity + checksum verified on every message "
              f"({len(frames):,} messages, {levels:.1f} levels/msg, best of {runs}; {best_cpu:,.0f}/s per CPU-second, "
              "which differs when other processes share the cores)")


if __name__ == "__main__":
    main()
