"""Binance-shaped benchmark data: a true book evolving by a seeded random walk, as diff-depth frames,
trade frames, and a capture file (REST snapshot + diffs) for the replay benchmark.

Shape taken from the real BTCUSDT recording: about 18 changed levels per diff, 23% of them deletions,
a 1000-level snapshot, prices on a 0.01 tick around 61,800, sizes with 5 decimals.
"""

from __future__ import annotations

import json
import random
from bisect import insort
from pathlib import Path

from marketfeed.capture import CaptureWriter

TICK = 0.01
MID = 61_800.0


def _fmt(x: float, decimals: int) -> str:
    return f"{x:.{decimals}f}"


class BookWalk:
    """A true book whose diffs look like Binance's: absolute sizes, "0" deletes. Each change is a
    deletion (23%), a new level (23%, so the book keeps its size) or a new size for an existing level,
    mostly near the top of the book. Both sides are kept as sorted keys, best first: bids as negative
    ticks, asks as ticks."""

    def __init__(self, seed: int = 7, levels: int = 1000) -> None:
        self.rng = random.Random(seed)
        self.update_id = 50_000_000_000
        self.levels = levels
        mid = int(MID / TICK)
        self.keys = {"b": [-(mid - 2 * i) for i in range(1, levels + 1)], "a": [mid + 2 * i for i in range(1, levels + 1)]}
        self.sizes = {side: {k: self._size() for k in keys} for side, keys in self.keys.items()}

    def _size(self) -> float:
        return round(self.rng.uniform(0.0001, 5.0), 5)

    @staticmethod
    def _price(key: int) -> str:
        return _fmt(abs(key) * TICK, 8)

    def snapshot(self, depth: int = 1000) -> dict:
        out: dict = {"lastUpdateId": self.update_id}
        for side, name in (("b", "bids"), ("a", "asks")):
            sizes = self.sizes[side]
            out[name] = [[self._price(k), _fmt(sizes[k], 8)] for k in self.keys[side][:depth]]
        return out

    def diff(self, changes: int = 18, delete_share: float = 0.23) -> dict:
        rng = self.rng
        out: dict[str, list] = {"b": [], "a": []}
        for _ in range(changes):
            side = "b" if rng.random() < 0.5 else "a"
            keys, sizes = self.keys[side], self.sizes[side]
            r = rng.random()
            # keep each side near its starting size: a short side gets a new level instead
            if r < delete_share and len(keys) < 0.9 * self.levels:
                r = delete_share
            elif delete_share <= r < 2 * delete_share and len(keys) > 1.1 * self.levels:
                r = 0.0
            if r < delete_share:
                key = keys.pop(min(int(rng.expovariate(1 / 30)), len(keys) - 1))
                del sizes[key]
                size = 0.0
            elif r < 2 * delete_share:
                # a new level somewhere in the top of the book, behind the best (never crossing)
                key = keys[0] + 1 + int(rng.expovariate(1 / 60))
                while key in sizes:  # find a free price so the book keeps its size
                    key += 1 + int(rng.expovariate(1 / 60))
                insort(keys, key)
                size = sizes[key] = self._size()
            else:
                key = keys[min(int(rng.expovariate(1 / 30)), len(keys) - 1)]
                size = sizes[key] = self._size()
            out[side].append([self._price(key), _fmt(size, 8)])
        first = self.update_id + 1
        self.update_id += rng.randint(1, 30)
        return {"e": "depthUpdate", "E": 1_723_161_255_208, "s": "BTCUSDT", "U": first, "u": self.update_id,
                "b": out["b"], "a": out["a"]}


def depth_frames(n: int, seed: int = 7) -> tuple[str, list[str]]:
    """(REST snapshot body, n combined-stream diff frames that follow it)."""
    walk = BookWalk(seed)
    snap = json.dumps(walk.snapshot(), separators=(",", ":"))
    frames = [
        json.dumps({"stream": "btcusdt@depth@100ms", "data": walk.diff()}, separators=(",", ":")) for _ in range(n)
    ]
    return snap, frames


def trade_frames(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    frames = []
    for i in range(n):
        data = {"e": "trade", "E": 1_723_161_256_322, "s": "BTCUSDT", "t": 3_735_683_259 + i,
                "p": _fmt(MID + rng.randint(-500, 500) * TICK, 8), "q": _fmt(rng.uniform(0.00001, 1), 8),
                "T": 1_723_161_256_322, "m": rng.random() < 0.5, "M": True}
        frames.append(json.dumps({"stream": "btcusdt@trade", "data": data}, separators=(",", ":")))
    return frames


def write_depth_capture(path: Path, diffs: int, seed: int = 7) -> Path:
    """A gzip capture as the daemon records it: open, one diff, the REST snapshot, then the rest."""
    walk = BookWalk(seed)
    ts = 1_723_161_253_937_085_767
    with CaptureWriter(path, ["binance"], source="benchmarks/binance_data.py", note=f"{diffs} synthetic diffs") as w:
        w.open(ts, "c1", "binance", "wss://stream.binance.com:9443/stream", {"streams": ["btcusdt@depth@100ms"]})
        first = walk.diff()
        snap = walk.snapshot()
        snap["lastUpdateId"] = first["u"]  # the snapshot includes the first diff
        w.recv(ts + 1, "c1", json.dumps({"stream": "btcusdt@depth@100ms", "data": first}, separators=(",", ":")))
        w.rest(ts + 2, "binance", "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000", 200,
               json.dumps(snap, separators=(",", ":")))
        for i in range(diffs - 1):
            ts += 100_000
            w.recv(ts, "c1", json.dumps({"stream": "btcusdt@depth@100ms", "data": walk.diff()}, separators=(",", ":")))
    return path
