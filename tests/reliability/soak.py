"""``make soak``: the daemon (``marketfeed run``) against the Binance simulator at a high message rate
for minutes. Checks, and prints as a summary:

* memory: the daemon's RSS after the warm-up against its RSS at the end (growth must stay under 5%);
* no lost or duplicated events: every symbol's trade ids are consecutive with no repeat (the simulator
  numbers its fills one by one), book diffs arrive in rising update ids, and no status other than the
  start-up and shutdown ones appears;
* the consumer book rebuilt from the written events equals the simulator's true book at the end.

    python tests/reliability/soak.py [--seconds 180] [--symbols 4] [--interval 0.004]

Exit status 0 when every check holds.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from marketfeed.events import Book, Status, Trade, decode
from marketfeed.simulate.binance import SPOT, BinanceSimulator, SymbolSpec
from tests.helpers import ConsumerBooks

START_STATES = {"connected", "subscribed"}
SHUTDOWN_STATES = {"disconnected", "book_invalid"}


def rss_kib(pid: int) -> int:
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        if row.startswith("VmRSS:"):
            return int(row.split()[1])
    raise RuntimeError("no VmRSS")


async def soak(args: argparse.Namespace) -> int:
    specs = [SymbolSpec(f"C{i}USDT", f"C{i}", "USDT", "0.01", "0.0001", 1000.0 * (i + 1), levels=100, mean_lots=500) for i in range(args.symbols)]
    sim = BinanceSimulator(spot=specs, usdm=[], seed=11, interval=args.interval, trade_probability=0.8, ping_interval=5.0)
    await sim.start()
    tmp = tempfile.TemporaryDirectory(prefix="marketfeed-soak-")
    out = Path(tmp.name) / "events.jsonl"
    config = Path(tmp.name) / "marketfeed.toml"
    symbols = [f"C{i}-USDT" for i in range(args.symbols)]
    config.write_text(
        "[venues.binance]\nsymbols = [" + ", ".join(f'"{s}"' for s in symbols) + "]\n"
        f'ws_url = "{sim.ws_url}"\nrest_url = "{sim.rest_url}"\nstale_after = 10.0\n'
        f'\n[[sinks]]\ntype = "jsonl"\npath = "{out}"\nqueue_size = 1000000\n\n[log]\nlevel = "warning"\n'
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "marketfeed", "run", "--config", str(config), cwd=REPO)
    warmup = min(30.0, args.seconds / 4)
    samples: list[tuple[float, int]] = []
    started = time.monotonic()
    frames0 = 0
    try:
        while time.monotonic() - started < args.seconds:
            await asyncio.sleep(2.0)
            if proc.returncode is not None:
                print(f"daemon exited early with {proc.returncode}")
                return 1
            t = time.monotonic() - started
            samples.append((t, rss_kib(proc.pid)))
            if not frames0 and t >= warmup:
                frames0 = sum(c.frames_sent for c in sim.connections)
        frames = sum(c.frames_sent for c in sim.connections) - frames0
        elapsed = time.monotonic() - started - warmup
        sim.pause()
        await asyncio.sleep(1.0)  # everything sent reaches the daemon
        truth = {f"C{i}-USDT": sim.true_book(f"C{i}USDT", SPOT) for i in range(args.symbols)}
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 10.0)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sim.stop()

    after_warmup = [r for t, r in samples if t >= warmup]
    base, peak, end = after_warmup[0], max(after_warmup), after_warmup[-1]
    growth = (end - base) / base * 100

    books = ConsumerBooks()
    last_trade: dict[str, int] = {}
    last_seq: dict[str, int] = {}
    problems: list[str] = []
    events = trades = diffs = 0
    for raw in out.read_bytes().splitlines():
        e = decode(raw)
        events += 1
        books.apply(e)
        if isinstance(e, Trade):
            trades += 1
            tid = int(e.trade_id)
            prev = last_trade.get(e.symbol)
            if prev is not None and tid != prev + 1:
                problems.append(f"{e.symbol}: trade {tid} after {prev} ({'duplicate' if tid <= prev else 'lost'})")
            last_trade[e.symbol] = tid
        elif isinstance(e, Book):
            if not e.snapshot:
                diffs += 1
                prev = last_seq.get(e.symbol)
                if prev is not None and e.seq is not None and e.seq <= prev:
                    problems.append(f"{e.symbol}: book seq {e.seq} after {prev}")
            if e.seq is not None:
                last_seq[e.symbol] = e.seq
        elif isinstance(e, Status) and e.state not in START_STATES and (
            e.state not in SHUTDOWN_STATES or "shutdown" not in (e.reason or "")
        ):
            problems.append(f"unexpected status {e.state} {e.symbol} {e.reason}")
    for symbol, (_, bids, asks) in truth.items():
        book = books.books.get(("binance", symbol))
        if book is None or book.bids.levels != bids or book.asks.levels != asks:
            problems.append(f"{symbol}: the consumer book differs from the true book at the end")
    problems += books.violations
    tmp.cleanup()

    print("soak summary")
    print(f"  run: {args.seconds:.0f} s ({warmup:.0f} s warm-up), {args.symbols} symbols, daemon exit code {code}")
    print(f"  rate after warm-up: {frames / elapsed:,.0f} frames/s sent by the simulator")
    print(f"  events written: {events:,} ({trades:,} trades, {diffs:,} book diffs)")
    print(f"  RSS (KiB): after warm-up {base:,}, peak {peak:,}, end {end:,}: growth {growth:+.2f}% (limit 5%)")
    print(f"  lost or duplicated events, other problems: {len(problems)}")
    for p in problems[:20]:
        print(f"    {p}")
    ok = code == 0 and growth < 5.0 and not problems
    print("  result:", "OK" if ok else "FAILED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "180")))
    parser.add_argument("--symbols", type=int, default=8)
    parser.add_argument("--interval", type=float, default=0.004, help="seconds between diffs of each symbol")
    return asyncio.run(soak(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
