"""Scale-out: several daemons share one config and each serves a fixed part of its symbols.

``[shard] index = I, count = N`` (or the environment variable ``MARKETFEED_SHARD=I/N``, which wins, so
one config file serves every shard, e.g. a systemd template unit with ``Environment=MARKETFEED_SHARD=%i/4``)
keeps, for every venue, the symbols whose shard is I:

    shard(venue, symbol) = blake2b-64("venue:symbol") mod N

A fixed hash (not Python's ``hash``, which is salted per process) gives every daemon the same answer,
so the N daemons together serve each configured (venue, symbol) exactly once, whatever the order of
the symbols in the file. Not CRC-32: it is linear in the name's bits, so each bit of the result is a
fixed parity of the letters. With two shards, BTC-USDT, ETH-USDT, SOL-USDT and XRP-USDT all landed in
the same shard. A cryptographic hash has no such structure. A venue with none of its symbols in this shard is not connected at all. Consumers
read across the shards from the shared sink (NATS subjects, Redis keys: ``marketfeed.{type}.{venue}.
{symbol}`` does not depend on the shard). Venue-wide statuses (symbol none) come from every shard
that connects to that venue.
"""

from __future__ import annotations

import hashlib
import os

ENV = "MARKETFEED_SHARD"


def shard_of(venue: str, symbol: str, count: int) -> int:
    digest = hashlib.blake2b(f"{venue}:{symbol}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def parse_env(text: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N); ValueError with a message otherwise."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        raise ValueError(f"{text!r} is not INDEX/COUNT such as 0/2") from None
    if not sep or n < 1 or not (0 <= i < n):
        raise ValueError(f"{text!r} is not INDEX/COUNT with 0 <= INDEX < COUNT")
    return i, n


def from_env() -> tuple[int, int] | None:
    text = os.environ.get(ENV)
    return None if not text else parse_env(text)


def split(symbols: dict[str, list[str]], index: int, count: int) -> dict[str, list[str]]:
    """The symbols of shard ``index`` of ``count``, per venue; venues left with none are omitted."""
    out: dict[str, list[str]] = {}
    for venue, names in symbols.items():
        mine = [s for s in names if shard_of(venue, s, count) == index]
        if mine:
            out[venue] = mine
    return out
