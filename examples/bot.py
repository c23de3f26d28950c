"""A small trading-bot skeleton on marketfeed.client: prints the spread of one book and its trades.

    marketfeed run --config examples/marketfeed.toml     # with a [server] section
    python examples/bot.py --venue binance --symbol BTC-USDT [--url ws://127.0.0.1:8765/v1/stream] [--token ...]
    python examples/bot.py --url redis://127.0.0.1:6379/0      # from a [[sinks]] type = "redis" (JSON format)
    python examples/bot.py --url nats://127.0.0.1:4222         # from a [[sinks]] type = "nats" (JSON format)

The token may also come from the MARKETFEED_TOKEN environment variable. The client reconnects by
itself; while the book is invalid (a venue gap, or the stream is down) the bot says so and waits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from marketfeed.client import StreamClient
from marketfeed.events import BOOK_INVALID, Book, Status, Trade
from marketfeed.sources import NatsSource, RedisSource


async def run(url: str, venue: str, symbol: str, token: str | None, limit: int | None) -> int:
    channels = [f"book:{venue}:{symbol}", f"trade:{venue}:{symbol}"]
    seen = 0
    last_spread: tuple[float, float] | None = None
    channels.append(f"status:{venue}:*")  # book_invalid: Redis and NATS send only what is asked for
    feed: StreamClient | RedisSource | NatsSource
    if url.startswith(("redis://", "rediss://")):
        # from the oldest entry kept: a book needs a snapshot, and the sinks store a snapshot only when
        # the daemon (re)synchronises; diffs before the first kept snapshot are ignored
        feed = RedisSource(url, channels, start="0")
    elif url.startswith(("nats://", "tls://")):
        feed = NatsSource(url, channels, start=None)
    else:
        feed = StreamClient(url, channels[:2], token=token)
    async with feed:
        async for event in feed:
            if isinstance(event, Book):
                book = feed.book(venue, symbol)
                if book is None:
                    continue
                bid, ask = book.best_bid(), book.best_ask()
                if bid is None or ask is None:
                    continue
                spread = (bid[0], ask[0])
                if spread != last_spread:  # print only when the top changes
                    last_spread = spread
                    mid = (bid[0] + ask[0]) / 2
                    print(f"{venue} {symbol} bid {bid[0]} x {bid[1]}  ask {ask[0]} x {ask[1]}  "
                          f"spread {ask[0] - bid[0]:.10g} ({(ask[0] - bid[0]) / mid * 1e4:.2f} bp)", flush=True)
            elif isinstance(event, Trade):
                print(f"{venue} {symbol} trade {event.side or '?':>4} {event.size} @ {event.price}", flush=True)
            elif isinstance(event, Status) and event.state == BOOK_INVALID and event.symbol == symbol:
                last_spread = None
                print(f"{venue} {symbol} book invalid ({event.reason}): waiting for a snapshot", flush=True)
            seen += 1
            if limit is not None and seen >= limit:
                return 0
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="ws://127.0.0.1:8765/v1/stream")
    parser.add_argument("--venue", default="binance")
    parser.add_argument("--symbol", default="BTC-USDT")
    parser.add_argument("--token", default=os.environ.get("MARKETFEED_TOKEN"))
    parser.add_argument("--limit", type=int, default=None, help="stop after this many events")
    args = parser.parse_args()
    try:
        return asyncio.run(run(args.url, args.venue, args.symbol, args.token, args.limit))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
