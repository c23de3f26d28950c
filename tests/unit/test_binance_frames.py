"""The compiled Binance frame readers (adapters/binance/_frames.c) against the msgspec path.

The C reader takes a strict subset of frames; for those it must give exactly what the msgspec path
gives (same event, same float bits, same last id, same counter), and for everything else it must
return 0 without touching any state, so the msgspec path decides. Fuzzed frames check the subset
property: whatever the C reader takes, msgspec reads the same way."""

from __future__ import annotations

import json
import math
import random

import msgspec
import pytest
from marketfeed.adapters.binance import frames, schemas
from marketfeed.adapters.binance.adapter import BinanceAdapter, SymbolState

from marketfeed.events import ERROR, Status, Trade
from tests.unit.fuzzing import mutated

_frames = pytest.importorskip("marketfeed.adapters.binance._frames", reason="the C extension is not built here")

VENUE = "binance"


def trade_frame(tid: int = 3735683259, p: str = "61798.31000000", q: str = "0.94786588", m: bool = True, agg: bool = False) -> str:
    if agg:
        data = f'{{"e":"aggTrade","E":1723161256322,"s":"BTCUSDT","a":{tid},"p":"{p}","q":"{q}","f":1,"l":2,"T":1723161256322,"m":{json.dumps(m)},"M":true}}'
        return f'{{"stream":"btcusdt@aggTrade","data":{data}}}'
    data = f'{{"e":"trade","E":1723161256322,"s":"BTCUSDT","t":{tid},"p":"{p}","q":"{q}","T":1723161256322,"m":{json.dumps(m)},"M":true}}'
    return f'{{"stream":"btcusdt@trade","data":{data}}}'


def state(last: int = -1) -> SymbolState:
    st = SymbolState("BTCUSDT", "BTC-USDT", False)
    st.last_trade_id = st.last_agg_id = last
    return st


def python_path(frame: str, st: SymbolState, agg: bool) -> tuple[list, dict]:
    """What the msgspec path does with ``frame``: (events, counters); raises DecodeError if unreadable."""
    adapter = BinanceAdapter(VENUE)
    decoder = schemas.agg_trade_frame_decoder if agg else schemas.trade_frame_decoder
    payload = decoder.decode(frame).data
    (adapter._on_agg_trade if agg else adapter._on_trade)("c1", 7, payload, st)
    return adapter.take_events(), dict(adapter.counters)


def c_path(frame: str, st: SymbolState, agg: bool) -> tuple[int, list]:
    events: list = []
    taken = (_frames.agg_trade if agg else _frames.trade)(frame, 7, st, VENUE, events)
    return taken, events


def same_events(a: list, b: list) -> bool:
    """Equal, and every float with the same bits (so -0.0 is not 0.0)."""
    if a != b:
        return False
    for x, y in zip(a, b):
        for f in ("price", "size"):
            if math.copysign(1.0, getattr(x, f)) != math.copysign(1.0, getattr(y, f)):
                return False
    return True


def check_same(frame: str, agg: bool = False, last: int = -1) -> int:
    """Run both paths on fresh states; when the C reader takes the frame, everything must agree."""
    c_state, py_state = state(last), state(last)
    taken, c_events = c_path(frame, c_state, agg)
    if taken == 0:
        assert c_events == [] and c_state.last_trade_id == last and c_state.last_agg_id == last
        return 0
    py_events, counters = python_path(frame, py_state, agg)  # must not raise: C took it
    assert same_events(c_events, py_events), (frame, c_events, py_events)
    assert (c_state.last_trade_id, c_state.last_agg_id) == (py_state.last_trade_id, py_state.last_agg_id)
    expected = 2 if counters.get("duplicate_trades") else 3 if counters.get("trade_id_jumps") else 1
    assert taken == expected, (frame, taken, counters)
    return taken


@pytest.mark.parametrize("agg", [False, True])
def test_plain_frames_give_the_msgspec_paths_events(agg: bool) -> None:
    assert check_same(trade_frame(agg=agg), agg) == 1
    assert check_same(trade_frame(m=False, agg=agg), agg) == 1
    assert check_same(trade_frame(tid=10, agg=agg), agg, last=10) == 2  # seen
    assert check_same(trade_frame(tid=9, agg=agg), agg, last=10) == 2  # older
    assert check_same(trade_frame(tid=11, agg=agg), agg, last=10) == 1
    # a jump is counted for trade ids only, as _on_trade does; aggTrade ids are not checked for jumps
    assert check_same(trade_frame(tid=15, agg=agg), agg, last=10) == (1 if agg else 3)
    assert check_same(trade_frame(tid=2**63 - 1, agg=agg), agg) == 1  # the largest id in 64 bits


def test_the_event_is_the_normalised_trade() -> None:
    st = state()
    taken, events = c_path(trade_frame(), st, False)
    assert taken == 1 and st.last_trade_id == 3735683259
    (ev,) = events
    assert (ev.venue, ev.symbol, ev.ts_recv, ev.ts_exchange, ev.trade_id) == (VENUE, "BTC-USDT", 7, 1723161256322 * 10**6, "3735683259")
    assert (ev.price, ev.size, ev.side) == (61798.31, 0.94786588, "sell")  # m: the buyer made, the taker sold


@pytest.mark.parametrize(
    "p",
    ["0", "0.0", "-0.0", "1", "0.1", "0.3", "123456789012345", "1.00000000000000", "0.00000001", "99999.99999999",
     "0.000000000000000000001", "7.000000000000001", "5e-324", "1e5", "00.1", ".5", "5.", "+1", "1.2.3", "", "nan",
     "1234567890123456", "9007199254740993", "0.12345678901234567890"],
)
def test_prices_either_match_msgspec_bit_for_bit_or_are_left_to_it(p: str) -> None:
    frame = trade_frame(p=p, q=p)
    try:
        python_path(frame, state(), False)
        readable = True
    except msgspec.DecodeError:
        readable = False
    taken = check_same(frame)
    assert readable or taken == 0


def test_random_decimals_round_exactly_as_msgspec() -> None:
    rng = random.Random(5)
    for _ in range(20_000):
        digits = rng.randint(1, 16)
        mantissa = str(rng.randrange(10**digits))
        point = rng.randint(0, len(mantissa))
        text = (mantissa[:point] or "0") + ("." + mantissa[point:] if point < len(mantissa) else "")
        text = text.lstrip("0") or "0"
        if text.startswith("."):
            text = "0" + text
        check_same(trade_frame(p=text, q=("-" + text) if rng.random() < 0.1 else text))


NOT_PLAIN = [
    trade_frame().replace('"s":"BTCUSDT"', '"s":"BTC\\u0055SDT"'),  # an escape
    trade_frame().replace('"p":"61798.31000000"', '"p":61798.31'),  # a number, not a string
    trade_frame().replace('"t":3735683259', '"t":3735683259.0'),  # an id that is not an integer
    trade_frame().replace('"t":3735683259', '"t":"3735683259"'),  # an id as a string
    trade_frame().replace('"t":3735683259', '"t":9223372036854775808'),  # beyond int64
    trade_frame().replace('"t":3735683259', '"t":03735683259'),  # a leading zero
    trade_frame().replace('"t":3735683259', '"t":-0'),
    trade_frame().replace(',"m":true', ""),  # a field missing
    trade_frame().replace('"m":true', '"m":true,"m":false'),  # a field twice
    trade_frame().replace('"m":true', '"m":1'),
    trade_frame().replace('"M":true', '"M":{"x":1}'),  # nested
    trade_frame().replace('"M":true', '"M":[1]'),
    trade_frame().replace('"M":true', '"M":1.2.3'),  # a bad number in an unknown field
    trade_frame().replace('"M":true', '"M":tru'),
    trade_frame().replace('"BTCUSDT"', '"BTCUSDT€"'),  # not ASCII
    trade_frame().replace('"T":1723161256322', '"T":9223372036855'),  # its ns beyond int64
    trade_frame() + "x",  # trailing garbage
    trade_frame()[:-1],  # truncated
    trade_frame()[:60],
    trade_frame().replace('"data"', '"dat"'),
    trade_frame().replace('{"stream":"btcusdt@trade",', '{"id":1,"stream":"btcusdt@trade",'),
    trade_frame()[:-1] + ',"x":1}',  # another field after data
    '{"stream":"btcusdt@trade","data":{}}',
    "",
]


@pytest.mark.parametrize("frame", NOT_PLAIN, ids=range(len(NOT_PLAIN)))
def test_frames_outside_the_plain_form_are_left_to_msgspec(frame: str) -> None:
    assert check_same(frame) == 0


def test_whitespace_key_order_and_unknown_fields_are_read() -> None:
    data = {"M": True, "m": False, "T": 1723161256322, "q": "2.5", "p": "0.001", "t": 42, "s": "BTCUSDT", "e": "trade", "X": "MARKET", "n": None, "f": -1.5e-3}
    assert check_same(json.dumps({"stream": "btcusdt@trade", "data": data})) == 1  # json.dumps puts spaces after : and ,
    assert check_same(json.dumps({"stream": "btcusdt@trade", "data": data}, indent=1)) == 1


def test_fuzzed_frames_are_taken_only_as_msgspec_reads_them() -> None:
    rng = random.Random(11)
    alphabet = '{}[]",:.-+0123456789eEtrufalsn \\x'
    taken_count = 0
    for i in range(30_000):
        agg = i % 2 == 1
        frame = mutated(rng, trade_frame(tid=rng.randrange(10**6), agg=agg), alphabet)
        if check_same(frame, agg):
            taken_count += 1
    assert taken_count > 1000  # the fuzz also exercises frames the reader takes


@pytest.mark.parametrize(
    "frame",
    ['{"stream":"btcusdt@trade","data":{}}', '{"stream":"', '{"stream":"x', '{"stream":""}', '{"id":1}', "", b'{"stream":"a"}',
     '{"stream":"é@trade","data":{}}', '{"stream":"é', '{"stream":"é"', '{"strea', ' {"stream":"a"}'],
)
def test_stream_name_is_the_python_forms(frame: str | bytes) -> None:
    expected = frames._stream_name_py(frame)
    assert _frames.stream_name(frame) == expected
    if frame == '{"stream":"btcusdt@trade","data":{}}':
        assert expected == "btcusdt@trade"


def test_adapter_counts_what_the_reader_reports() -> None:
    adapter = BinanceAdapter(VENUE)
    adapter.on_open("c1", 1, "wss://x/stream?streams=btcusdt@trade", None)
    for tid in (5, 6, 6, 4, 9):
        adapter.on_frame("c1", 2, trade_frame(tid=tid))
    assert [e.trade_id for e in adapter.take_events() if type(e) is Trade] == ["5", "6", "9"]
    assert adapter.counters["duplicate_trades"] == 2 and adapter.counters["trade_id_jumps"] == 1
    adapter.on_frame("c1", 3, trade_frame(tid=10).replace('"m":true', '"m":"yes"'))  # msgspec path: malformed
    assert adapter.counters["malformed"] == 1
    assert [(type(e), e.state) for e in adapter.take_events()] == [(Status, ERROR)]


# -- depth ------------------------------------------------------------------------------------------


def depth_frame(bids: str = '["61798.31000000","0.94786588"],["61798.30000000","0.00000000"]', asks: str = '["61798.32000000","1.50000000"]', futures: bool = False) -> str:
    if futures:
        data = f'{{"e":"depthUpdate","E":1723161256322,"T":1723161256320,"s":"BTCUSDT","U":100,"u":105,"pu":99,"b":[{bids}],"a":[{asks}]}}'
        return f'{{"stream":"btcusdt@depth@100ms","data":{data}}}'
    data = f'{{"e":"depthUpdate","E":1723161256322,"s":"BTCUSDT","U":100,"u":105,"b":[{bids}],"a":[{asks}]}}'
    return f'{{"stream":"btcusdt@depth@100ms","data":{data}}}'


def msgspec_depth(frame: str) -> schemas.DepthUpdate | None:
    try:
        return schemas.depth_frame_decoder.decode(frame).data
    except msgspec.DecodeError:
        return None


def levels_bits(levels: list) -> list:
    return [(math.copysign(1.0, p), math.copysign(1.0, q)) for p, q in levels]


def check_depth(frame: str) -> bool:
    """The C reader gives msgspec's DepthUpdate (or its DecodeError). True if it read the frame itself,
    which it may only do where msgspec reads it the same way."""
    expected = msgspec_depth(frame)
    plain = _frames.plain_depth_update(frame)
    if expected is None:
        assert plain is None, frame
        with pytest.raises(msgspec.DecodeError):
            _frames.depth_update(frame)
        return False
    for got in (plain, _frames.depth_update(frame)):
        if got is None:
            continue
        assert type(got) is schemas.DepthUpdate and got == expected, (frame, got, expected)
        assert levels_bits(got.b) == levels_bits(expected.b) and levels_bits(got.a) == levels_bits(expected.a)
        assert all(type(level) is tuple for level in got.b + got.a)
    return plain is not None


@pytest.mark.parametrize("futures", [False, True])
def test_depth_frames_give_msgspecs_update(futures: bool) -> None:
    assert check_depth(depth_frame(futures=futures))  # read by the C reader itself
    assert check_depth(depth_frame(bids="", asks="", futures=futures))  # empty sides
    assert check_depth(json.dumps(json.loads(depth_frame(futures=futures)), indent=2))


DEPTH_NOT_PLAIN = [
    depth_frame().replace('"U":100', '"U":100.5'),
    depth_frame().replace('"U":100', '"U":"100"'),
    depth_frame().replace(',"U":100', ""),  # a required field missing
    depth_frame().replace('"u":105', '"u":105,"u":106'),  # twice
    depth_frame().replace('"b":[', '"b":[],"b":['),
    depth_frame().replace('"s":"BTCUSDT"', '"s":"BTCUSDT","s":"ETHUSDT"'),
    depth_frame().replace('"u":105', '"u":105,"pu":null'),
    depth_frame().replace('"u":105', '"u":105,"ts":5'),  # our own field, set by msgspec
    depth_frame(bids='["1","2","3"]'),  # three elements
    depth_frame(bids='["1"]'),
    depth_frame(bids="[1,2]"),  # numbers, not strings
    depth_frame(bids='["1e3","2"]'),
    depth_frame(bids='["-0","2"]'),
    depth_frame(bids='["1","2"],'),
    depth_frame(bids='{"1":"2"}'),
    depth_frame(bids='["1.12345678901234567","2"]'),
    depth_frame().replace('"b":[', '"b":null,"x":['),
    depth_frame().replace('"e":"depthUpdate"', '"e":"depth\\u0055pdate"'),
    depth_frame()[:-1],
    depth_frame() + " x",
    depth_frame()[:90],
    '{"stream":"btcusdt@depth@100ms","data":{}}',
]


@pytest.mark.parametrize("frame", DEPTH_NOT_PLAIN, ids=range(len(DEPTH_NOT_PLAIN)))
def test_depth_frames_outside_the_plain_form_get_msgspecs_answer(frame: str) -> None:
    assert not check_depth(frame)


def test_fuzzed_depth_frames_give_msgspecs_answer() -> None:
    rng = random.Random(12)
    alphabet = '{}[]",:.-+0123456789eEtrufalsn \\x'
    read_by_c = 0
    for i in range(20_000):
        levels = ",".join(f'["{rng.randrange(1, 10**6) / 100:.8f}","{rng.randrange(0, 10**5) / 1000:.8f}"]' for _ in range(rng.randint(0, 4)))
        read_by_c += check_depth(mutated(rng, depth_frame(bids=levels, futures=i % 2 == 1), alphabet))
    assert read_by_c > 1000


def test_depth_reader_is_the_adapters_reader_where_built() -> None:
    if frames.ACCELERATED:
        assert frames.read_depth_frame is _frames.depth_update
