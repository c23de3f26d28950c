"""The compiled event encoder (marketfeed/_events.c) against msgspec's.

EVENTS.md is a public contract: for any event, the C encoder's lines must be msgspec's bytes. It writes
Book, Trade and Top events of short decimals itself and hands every other event to msgspec; random events
of every kind check both, and typical market events must take its own path."""

from __future__ import annotations

import math
import random
import struct

import msgspec
import pytest

from marketfeed import events
from marketfeed.events import Book, Status, Top, Trade

_events = pytest.importorskip("marketfeed._events", reason="the C extension is not built here")
_events.configure(Book, Trade, Top, events._encoder.encode)  # as marketfeed.events does where built


def msgspec_lines(evs: list) -> bytes:
    return events._encoder.encode_lines(evs)


def check(evs: list) -> None:
    buffer = bytearray(b"kept|")
    _events.encode_lines(evs, buffer)
    assert bytes(buffer) == b"kept|" + msgspec_lines(evs)
    for ev in evs:
        line = _events.plain_line(ev)
        if line is not None:
            assert line == msgspec_lines([ev])


def short_decimal(rng: random.Random) -> float:
    """A price or size as venues send them: up to 8 decimals, from 0.00001 to below 10,000,000."""
    decimals = rng.randint(0, 8)
    value = round(rng.uniform(0, 10 ** rng.randint(-4, 7)), decimals)
    if 0 < value < 1e-5 or value >= 1e7:
        value = 0.0
    return value * rng.choice((1, 1, 1, -1))


def any_float(rng: random.Random) -> float:
    kind = rng.random()
    if kind < 0.5:
        return short_decimal(rng)
    if kind < 0.7:
        return struct.unpack("<d", rng.randbytes(8))[0]  # any bits: NaN, inf, subnormals, huge
    if kind < 0.8:
        return rng.choice((0.0, -0.0, 1e-5, 9.99999e-6, 1e7, 9999999.99999999, 1e15, 1e16, 1e-6, 0.1, 0.3, 5e-324))
    return rng.uniform(-1e9, 1e9)  # 17-digit values


def any_value(rng: random.Random, kind: str) -> object:
    r = rng.random()
    if kind == "str":
        return rng.choice(("binance", "BTC-USDT", "a\"b", "back\\slash", "café", "tab\t", "del\x7f", "", "12345", "buy"))
    if kind == "int":
        return rng.choice((0, -1, 1723161256322000000, 2**63 - 1, -(2**63), 2**63, True)) if r < 0.3 else rng.randrange(-(10**18), 10**18)
    if kind == "float":
        return any_float(rng) if r < 0.95 else rng.choice((1, None, True))
    raise AssertionError(kind)


def levels(rng: random.Random, plain: bool) -> list:
    out = []
    for _ in range(rng.randint(0, 6)):
        p, s = (short_decimal(rng), abs(short_decimal(rng))) if plain else (any_value(rng, "float"), any_value(rng, "float"))
        out.append((p, s) if plain or rng.random() < 0.7 else [p, s] if rng.random() < 0.8 else [p, s, 1.0])
    return out


def book(rng: random.Random, plain: bool) -> Book:
    opt = (lambda kind: rng.randrange(10**15) if plain else (None if rng.random() < 0.3 else any_value(rng, kind)))
    return Book(
        "binance" if plain else any_value(rng, "str"), "BTC-USDT" if plain else any_value(rng, "str"),
        rng.randrange(10**18) if plain else any_value(rng, "int"), opt("int"), opt("int"),
        rng.random() < 0.5, levels(rng, plain), levels(rng, plain), None if plain or rng.random() < 0.5 else any_value(rng, "int"),
    )


def trade(rng: random.Random, plain: bool) -> Trade:
    return Trade(
        "okx" if plain else any_value(rng, "str"), "ETH-USDT-PERP" if plain else any_value(rng, "str"),
        rng.randrange(10**18) if plain else any_value(rng, "int"), rng.choice((None, rng.randrange(10**18))),
        str(rng.randrange(10**12)) if plain else any_value(rng, "str"),
        short_decimal(rng) if plain else any_value(rng, "float"), abs(short_decimal(rng)) if plain else any_value(rng, "float"),
        rng.choice(("buy", "sell", None)) if plain else (None if rng.random() < 0.3 else any_value(rng, "str")),
    )


def top(rng: random.Random, plain: bool) -> Top:
    b = book(rng, plain)
    return Top(b.venue, b.symbol, b.ts_recv, b.ts_exchange, b.seq, b.bids, b.asks)


def test_market_events_are_written_here_as_msgspec_writes_them() -> None:
    rng = random.Random(1)
    evs = [(book, trade, top)[i % 3](rng, True) for i in range(6000)]
    for ev in evs:
        assert _events.plain_line(ev) is not None, ev  # short decimals: never handed to msgspec
    check(evs)


def test_any_event_gets_msgspecs_bytes() -> None:
    rng = random.Random(2)
    for _ in range(300):
        evs = []
        for _ in range(rng.randint(0, 20)):
            r = rng.random()
            if r < 0.4:
                evs.append(book(rng, rng.random() < 0.3))
            elif r < 0.8:
                evs.append(trade(rng, rng.random() < 0.3))
            elif r < 0.9:
                evs.append(Status("kraken", rng.choice((None, "XBT-USD")), 1, "stale", rng.choice((None, "silent for 30 s"))))
            else:
                evs.append(top(rng, rng.random() < 0.3))
        try:
            expected = msgspec_lines(evs)
        except (msgspec.EncodeError, TypeError, OverflowError) as exc:
            with pytest.raises(type(exc)):
                _events.encode_lines(evs, bytearray())
            continue
        buffer = bytearray()
        _events.encode_lines(evs, buffer)
        assert bytes(buffer) == expected


@pytest.mark.parametrize(
    "value",
    [0.0, -0.0, 1e-5, 9.99999e-06, 0.00001234, 1e-6, 0.1, 0.3, 4.0, 61799.92, 9999999.99999999, 1e7, 1e15, 1e16,
     123456789.123, 0.1 + 0.2, math.nan, math.inf, -math.inf, 5e-324, -61799.92, 2.5e-05],
)
def test_float_forms_match_msgspec(value: float) -> None:
    check([Trade("binance", "BTC-USDT", 1, None, "1", value, value, "buy")])


def test_the_module_writes_with_the_c_encoder_where_built() -> None:
    if events.ACCELERATED:
        assert events.encode_lines is _events.encode_lines


def test_many_floats_are_written_as_msgspec_writes_them_or_left_to_it() -> None:
    rng = random.Random(4)
    written_here = 0
    for _ in range(50_000):
        values = []
        for _ in range(2):
            r = rng.random()
            if r < 0.4:
                values.append(round(rng.uniform(-1e7, 1e7) * 10 ** -rng.randint(0, 12), rng.randint(0, 12)))
            elif r < 0.6:
                values.append(struct.unpack("<d", rng.randbytes(8))[0])
            else:
                values.append(rng.randrange(1, 10**15) / 10 ** rng.randint(0, 14))
        ev = Book("binance", "BTC-USDT", 1, None, None, False, list(zip(values[::2], values[1::2])), [])
        line = _events.plain_line(ev)
        if line is not None:
            written_here += 1
            assert line == msgspec_lines([ev]), values
    assert written_here > 1000
