"""``make demo``: every venue simulated on loopback, the daemon (``marketfeed run``) pointed at them,
and its normalised stream shown live with a per-venue status summary. No internet needed. Ctrl-C stops
both cleanly.

    python -m marketfeed.simulate.demo [--capture FILE] [--faults SPEC] [--seconds N]

Binance spot serves the books of a real recording when one is given (``make demo`` passes the one in
../shared/captures when it is there); the other venues serve their seeded books.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from marketfeed.simulate.serve import (
    VENUES,
    capture_venue,
    config_toml,
    parse_venue_faults,
    start_venues,
    stop_venues,
)

LINES_PER_SECOND = 8  # of the live stream; every event is counted in the summary


class Summary:
    def __init__(self, venues: list[str]) -> None:
        self.venues = venues
        self.counts: dict[str, Counter[str]] = {v: Counter() for v in venues}
        self.valid: dict[str, dict[str, bool]] = {v: {} for v in venues}
        self.last_status: dict[str, str] = {v: "-" for v in venues}

    def add(self, e: dict) -> None:
        venue = e.get("venue", "?")
        counts = self.counts.setdefault(venue, Counter())
        counts[e["type"]] += 1
        if e["type"] == "book":
            if e.get("snapshot"):
                self.valid.setdefault(venue, {})[e["symbol"]] = True
        elif e["type"] == "status":
            state = e["state"]
            counts[state] += 1
            self.last_status[venue] = f"{state}{' ' + e['symbol'] if e.get('symbol') else ''}"
            if state == "book_invalid" and e.get("symbol"):
                self.valid.setdefault(venue, {})[e["symbol"]] = False

    def text(self, elapsed: float) -> str:
        rows = [f"--- {elapsed:5.1f} s " + "-" * 78,
                f"{'venue':<14}{'trades':>8}{'books':>9}{'valid books':>13}{'invalid':>9}{'disconn.':>10}  last status"]
        for v in self.venues:
            c, valid = self.counts.get(v, Counter()), self.valid.get(v, {})
            rows.append(f"{v:<14}{c['trade']:>8}{c['book']:>9}{sum(valid.values()):>7}/{len(valid):<5}"
                        f"{c['book_invalid']:>9}{c['disconnected']:>10}  {self.last_status.get(v, '-')}")
        return "\n".join(rows)


def line(e: dict) -> str:
    t, v = e["type"], e["venue"]
    if t == "trade":
        return f"{v:<13} {e['symbol']:<14} trade  {e['price']:>12g} x {e['size']:<10g} {e.get('side') or ''}"
    if t == "book":
        bids, asks = e.get("bids") or [], e.get("asks") or []
        kind = "snapshot" if e.get("snapshot") else "diff"
        return f"{v:<13} {e['symbol']:<14} book   {kind:<8} {len(bids)} bids {len(asks)} asks seq={e.get('seq')}"
    return f"{v:<13} {e.get('symbol') or '':<14} status {e.get('state')} {e.get('reason') or ''}"


async def demo(args: argparse.Namespace) -> int:
    venues = list(VENUES)
    captures: dict[str, list[str]] = {}
    for item in args.capture:
        if Path(item).exists():
            captures.setdefault(capture_venue(item), []).append(item)
    faults = parse_venue_faults(args.faults, venues, args.seed)
    served = await start_venues(venues, seed=args.seed, captures=captures, faults=faults)
    tmp = tempfile.TemporaryDirectory(prefix="marketfeed-demo-")
    config = Path(tmp.name) / "marketfeed.toml"
    config.write_text(config_toml(served) + '\n[[sinks]]\ntype = "stdout"\n\n[log]\nlevel = "warning"\nformat = "console"\n')
    print(f"simulator: {', '.join(f'{s.venue} {s.ws_url}' for s in served)}")
    if captures:
        print(f"books from recordings: {captures}")
    print(f"daemon config: {config}\n(Ctrl-C to stop)\n", flush=True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketfeed", "run", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, limit=1 << 24,
    )
    summary = Summary(venues)
    started = time.monotonic()
    next_summary = started + 3.0
    budget, second = LINES_PER_SECOND, int(started)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if args.seconds:
        loop.call_later(args.seconds, stop.set)
    assert proc.stdout is not None
    stopping = asyncio.create_task(stop.wait())
    try:
        while True:
            read = asyncio.create_task(proc.stdout.readline())
            done, _ = await asyncio.wait([read, stopping], return_when=asyncio.FIRST_COMPLETED)
            if read not in done:
                read.cancel()
                await asyncio.gather(read, return_exceptions=True)
                break
            raw = read.result()
            if not raw:
                break
            e = json.loads(raw)
            summary.add(e)
            now = time.monotonic()
            if int(now) != second:
                second, budget = int(now), LINES_PER_SECOND
            if budget > 0 or e["type"] == "status":
                budget -= 1
                print(line(e))
            if now >= next_summary:
                next_summary = now + 3.0
                print(summary.text(now - started), flush=True)
    finally:
        stopping.cancel()
        print(summary.text(time.monotonic() - started), flush=True)
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            rest = await proc.stdout.read()  # the disconnect statuses of the orderly shutdown
            for raw in rest.splitlines():
                summary.add(json.loads(raw))
            await proc.wait()
        await stop_venues(served)
        tmp.cleanup()
    invalidated = sum(summary.counts.get(v, Counter())["book_invalid"] for v in venues)
    print(f"daemon exited with {proc.returncode} (its shutdown marks every book invalid: {invalidated} book_invalid in all)")
    return 0 if proc.returncode == 0 else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="every venue simulated, the daemon on them, the stream shown")
    parser.add_argument("--capture", action="append", default=[], help="a recording for Binance books (skipped if absent)")
    parser.add_argument("--faults", action="append", default=[], help="[VENUE=]SPEC as for marketfeed simulate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=0, help="stop after N seconds (default: until Ctrl-C)")
    args = parser.parse_args(argv)
    return asyncio.run(demo(args))


if __name__ == "__main__":
    sys.exit(main())
