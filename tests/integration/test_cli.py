"""The ``marketfeed`` command as a user runs it: a subprocess, its exit code, its stdout and stderr.

check-config: exit 0 with a summary, or exit 2 with one line naming the file and key.
replay: a capture this test writes with CaptureWriter, replayed to stdout and to a file; bad captures
(truncated gzip, not gzip, unknown version) exit 1 naming the file and line.
run: against the loopback Binance server (spot and USD-M), then SIGTERM: exit 0, the consumer's books
equal the server's true books, every sink flushed, and the recording replays to the very same events.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from marketfeed import events as ev
from marketfeed.capture import CaptureWriter
from marketfeed.events import Book, Status, Trade
from tests.helpers import ConsumerBooks

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "marketfeed.toml"
pytestmark = pytest.mark.timeout(120)


def marketfeed(*args: str, console_script: bool = False) -> subprocess.CompletedProcess[bytes]:
    if console_script:
        cmd = [str(Path(sys.executable).parent / "marketfeed"), *args]
    else:
        cmd = [sys.executable, "-m", "marketfeed", *args]
    return subprocess.run(cmd, capture_output=True, cwd=REPO, timeout=90)


def stderr_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stderr.decode().splitlines()


def decode_all(data: bytes) -> list[ev.Event]:
    return [ev.decode(line) for line in data.splitlines()]


# --- check-config ------------------------------------------------------------------------------------


def test_check_config_accepts_the_example() -> None:
    result = marketfeed("check-config", str(EXAMPLE), console_script=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert out.startswith(f"ok: {EXAMPLE}: ")
    assert "binance: BTC-USDT, ETH-USDT (trades+book)" in out and "binance-usdm: BTC-USDT-PERP" in out
    assert "sinks: stdout" in out
    assert result.stderr == b""


@pytest.mark.parametrize(
    "text,key",
    [
        ('[venues.binance]\nsymbols = ["BTC-USDT"]\ndepth = "deep"\n', "venues.binance.depth"),
        ('[venues.binance]\nsymbols = ["BTC-USDT"]\n[[sinks]]\ntype = "jsonl"\n', "sinks[0].path"),
        ('[venues.binance]\nsymbols = ["BTC-USDT"]\n[log]\nlevel = "chatty"\n', "log.level"),
        ('[venues.krakn]\nsymbols = ["BTC-USD"]\n', "venues.krakn"),
        # venue-specific limits that the adapter itself checks
        ('[venues.binance]\nsymbols = ["BTC-USDT"]\ndepth = 6000\n', "venues.binance.depth"),
        ('[venues.binance-usdm]\nsymbols = ["BTC-USDT-PERP"]\ndepth = 7\n', "venues.binance-usdm.depth"),
        ('[venues.okx]\nsymbols = ["BTC-USDT"]\nbook_channel = "books5"\n', "venues.okx.book_channel"),
    ],
)
def test_bad_config_exits_2_with_one_line_naming_file_and_key(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    for args in (["check-config", str(path)], ["run", "--config", str(path)]):
        result = marketfeed(*args)
        assert result.returncode == 2, result
        (line,) = stderr_lines(result)
        assert str(path) in line and f"{key}:" in line, line
        assert result.stdout == b""


def test_usage_errors_exit_2() -> None:
    assert marketfeed("run").returncode == 2  # --config is required
    assert marketfeed("replay", "x.capture.jsonl", "--out", "-", "--speed", "0").returncode == 2
    assert marketfeed("frobnicate").returncode == 2
    assert marketfeed().returncode == 2


# --- replay ------------------------------------------------------------------------------------------

TS = 1_795_300_000_000_000_000
COMBINED = "wss://stream.binance.com:9443/stream?streams=btcusdt@depth@100ms/btcusdt@trade"


def depth_frame(U: int, u: int, bids=(), asks=()) -> str:
    data = {"e": "depthUpdate", "E": 1_795_300_000_000, "s": "BTCUSDT", "U": U, "u": u,
            "b": [[str(p), str(q)] for p, q in bids], "a": [[str(p), str(q)] for p, q in asks]}
    return json.dumps({"stream": "btcusdt@depth@100ms", "data": data})


def trade_frame(tid: int, price: str, qty: str, buyer_is_maker: bool) -> str:
    data = {"e": "trade", "E": 1_795_300_000_100, "s": "BTCUSDT", "t": tid, "p": price, "q": qty,
            "T": 1_795_300_000_099, "m": buyer_is_maker}
    return json.dumps({"stream": "btcusdt@trade", "data": data})


def write_capture(path: Path) -> None:
    """A tiny Binance spot recording: a diff that arrives before the snapshot (it must be buffered and
    bridge the snapshot), the REST snapshot, a later diff, two trades, the close."""
    with CaptureWriter(path, ["binance"], source="tests/integration/test_cli.py") as w:
        w.open(TS, "c1", "binance", COMBINED)
        w.recv(TS + 1, "c1", depth_frame(98, 101, bids=[("99.00", "1.5")]))
        w.rest(TS + 2, "binance", "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000", 200,
               json.dumps({"lastUpdateId": 100, "bids": [["99.00", "2"], ["98.00", "3"]], "asks": [["101.00", "4"]]}))
        w.recv(TS + 3, "c1", depth_frame(102, 103, bids=[("98.00", "0")], asks=[("101.50", "0.00000015")]))
        w.recv(TS + 4, "c1", trade_frame(7, "100.25", "0.006", True))
        w.recv(TS + 5, "c1", trade_frame(8, "100.50", "1", False))
        w.close_conn(TS + 6, "c1", 1000, "end of test")


def check_small_capture_events(events: list[ev.Event]) -> None:
    """What the capture's own content says the events must be."""
    consumer = ConsumerBooks()
    for e in events:
        consumer.apply(e)
    assert consumer.violations == []
    books = [e for e in events if isinstance(e, Book)]
    assert books[0].snapshot and books[0].symbol == "BTC-USDT"
    assert [(b.seq, b.snapshot) for b in books] == [(100, True), (101, False), (103, False)]
    final = consumer.books[("binance", "BTC-USDT")]
    assert final.bids.levels == {99.0: 1.5}  # the bridging diff's 1.5 overrides the snapshot's 2
    assert final.asks.levels == {101.0: 4.0, 101.5: 1.5e-07}
    trades = [e for e in events if isinstance(e, Trade)]
    assert [(t.trade_id, t.price, t.size, t.side, t.ts_recv, t.ts_exchange) for t in trades] == [
        ("7", 100.25, 0.006, "sell", TS + 4, 1_795_300_000_099_000_000),
        ("8", 100.5, 1.0, "buy", TS + 5, 1_795_300_000_099_000_000),
    ]
    # the close: the connection is down and the book it carried is no longer valid
    at_close = [(e.symbol, e.state) for e in events if e.ts_recv == TS + 6]
    assert sorted(at_close, key=str) == sorted([(None, ev.DISCONNECTED), ("BTC-USDT", ev.BOOK_INVALID)], key=str)


def test_replay_to_stdout_and_to_a_file_gives_the_same_events(tmp_path: Path) -> None:
    capture = tmp_path / "small.capture.jsonl.gz"
    write_capture(capture)
    to_stdout = marketfeed("replay", str(capture), "--out", "-")
    assert to_stdout.returncode == 0, to_stdout.stderr
    events = decode_all(to_stdout.stdout)
    check_small_capture_events(events)
    # logs went to stderr, as JSON (stderr is not a terminal here), never onto stdout
    assert any(json.loads(line).get("event") == "replay finished" for line in stderr_lines(to_stdout))

    out = tmp_path / "events.jsonl"
    to_file = marketfeed("replay", str(capture), "--out", str(out), "--speed", "1000", console_script=True)
    assert to_file.returncode == 0, to_file.stderr
    assert out.read_bytes() == to_stdout.stdout
    assert to_file.stdout == b""

    out_gz = tmp_path / "events.jsonl.gz"
    assert marketfeed("replay", str(capture), "--out", str(out_gz)).returncode == 0
    assert gzip.decompress(out_gz.read_bytes()) == to_stdout.stdout


def test_replay_of_several_files_is_one_recording(tmp_path: Path) -> None:
    one = tmp_path / "one.capture.jsonl"
    write_capture(one)
    lines = one.read_bytes().splitlines(keepends=True)
    header = lines[0]
    # split after the snapshot: the second file resumes connection c1, as the recorder writes it
    first, second = tmp_path / "a.capture.jsonl", tmp_path / "b.capture.jsonl"
    first.write_bytes(b"".join(lines[:4]))
    resumed = json.dumps({"ev": "open", "ts": TS + 3, "conn": "c1", "venue": "binance", "url": COMBINED, "resumed": True})
    second.write_bytes(header + resumed.encode() + b"\n" + b"".join(lines[4:]))
    whole = marketfeed("replay", str(one), "--out", "-")
    split = marketfeed("replay", str(first), str(second), "--out", "-")
    assert whole.returncode == split.returncode == 0
    assert split.stdout == whole.stdout


def test_replay_of_a_shared_capture_when_present(tmp_path: Path) -> None:
    from tests.helpers import shared_capture

    capture = shared_capture("binance/spot-btcusdt-20240808.capture.jsonl.gz")
    result = marketfeed("replay", str(capture), "--out", "-")
    assert result.returncode == 0, result.stderr
    events = decode_all(result.stdout)
    consumer = ConsumerBooks()
    for e in events:
        consumer.apply(e)
    assert consumer.violations == []
    assert sum(isinstance(e, Trade) for e in events) == 19_904  # the capture's trade frames, each once
    assert consumer.book_events > 6_000


def bad_capture_message(path: Path) -> str:
    result = marketfeed("replay", str(path), "--out", "-")
    assert result.returncode == 1, result
    (line,) = [line for line in stderr_lines(result) if line.startswith("marketfeed replay:")]
    return line


def test_replay_of_a_truncated_gzip_names_file_and_line(tmp_path: Path) -> None:
    capture = tmp_path / "long.capture.jsonl.gz"
    with CaptureWriter(capture, ["binance"]) as w:
        w.open(TS, "c1", "binance", COMBINED)
        for i in range(20_000):
            # incompressible enough that the cut lands well inside the records
            w.recv(TS + i, "c1", trade_frame(i + 1, f"{100 + (i * 7919) % 997}.{i % 100:02d}", f"0.{(i * 104729) % 99991:05d}", i % 2 == 0))
    data = capture.read_bytes()
    capture.write_bytes(data[: len(data) // 2])
    line = bad_capture_message(capture)
    m = re.search(re.escape(str(capture)) + r":(\d+): ", line)
    assert m is not None, line
    assert 2 < int(m.group(1)) < 20_002
    assert "truncated" in line


def test_replay_of_a_file_that_is_not_gzip_nor_a_capture_names_file_and_line(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.capture.jsonl.gz"
    garbage.write_bytes(b"\x00\x01\x02 this is not a capture\nat all\n")
    line = bad_capture_message(garbage)
    assert f"{garbage}:1: " in line


def test_replay_of_an_unknown_version_names_file_and_line(tmp_path: Path) -> None:
    future = tmp_path / "future.capture.jsonl"
    future.write_text('{"capture": "marketfeed", "version": 99, "venues": ["binance"]}\n{"ev": "open"}\n')
    line = bad_capture_message(future)
    assert f"{future}:1: " in line and "version 99" in line


def test_replay_of_a_bad_record_names_file_and_line(tmp_path: Path) -> None:
    capture = tmp_path / "bad-record.capture.jsonl"
    write_capture(capture)
    lines = capture.read_text().splitlines()
    lines.insert(3, '{"ev": "recv", "ts": "soon"}')
    capture.write_text("\n".join(lines) + "\n")
    line = bad_capture_message(capture)
    assert f"{capture}:4: " in line


def test_replay_of_a_missing_file(tmp_path: Path) -> None:
    line = bad_capture_message(tmp_path / "absent.capture.jsonl.gz")
    assert "absent.capture.jsonl.gz" in line


# --- run ---------------------------------------------------------------------------------------------


async def wait_until(condition: Callable[[], bool], what: str, proc: asyncio.subprocess.Process, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.returncode is not None:
            pytest.fail(f"marketfeed exited with {proc.returncode} while waiting for: {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(0.02)


async def test_run_against_loopback_binance_then_sigterm(tmp_path: Path) -> None:
    from marketfeed.simulate.binance import SPOT, USDM, BinanceSimulator

    sim = BinanceSimulator(seed=11, interval=0.02, trade_probability=0.5)
    await sim.start()
    events_file = tmp_path / "out" / "events.jsonl"
    record_dir = tmp_path / "rec"
    config = tmp_path / "live.toml"
    config.write_text(
        f"""
[venues.binance]
symbols = ["BTC-USDT", "ETH-USDT"]
ws_url = "{sim.ws_url}"
rest_url = "{sim.rest_url}"
backoff = {{ base = 0.05, cap = 0.2 }}

[venues.binance-usdm]
symbols = ["BTC-USDT-PERP"]
ws_url = "{sim.ws_url}"
rest_url = "{sim.rest_url}"
backoff = {{ base = 0.05, cap = 0.2 }}

[[sinks]]
type = "stdout"

[[sinks]]
type = "jsonl"
path = "{events_file}"
flush_interval = 0.5

[log]
level = "info"
"""
    )
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "marketfeed", "run", "--config", str(config), "--record", str(record_dir),
            stdout=asyncio.subprocess.PIPE, stderr=stderr, cwd=REPO,
        )
    raw = bytearray()
    events: list[ev.Event] = []
    consumer = ConsumerBooks()
    last_seq: dict[tuple[str, str], int] = {}

    async def read_stdout() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            raw.extend(line)
            e = ev.decode(line)  # every stdout line is an event: logs never land here
            events.append(e)
            consumer.apply(e)
            if isinstance(e, Book) and e.seq is not None:
                last_seq[(e.venue, e.symbol)] = e.seq

    reader = asyncio.create_task(read_stdout())
    keys = {("binance", "BTC-USDT"): ("BTCUSDT", SPOT), ("binance", "ETH-USDT"): ("ETHUSDT", SPOT),
            ("binance-usdm", "BTC-USDT-PERP"): ("BTCUSDT", USDM)}
    try:
        def synced_and_moving() -> bool:
            return all(consumer.valid.get(k) for k in keys) and sum(isinstance(e, Book) for e in events) > 60 \
                and any(isinstance(e, Trade) for e in events)

        await wait_until(synced_and_moving, "books synced on both venues, diffs and trades flowing", proc)
        sim.pause()

        def caught_up() -> bool:
            return all(last_seq.get(k) == sim.true_book(*where)[0] for k, where in keys.items())

        await wait_until(caught_up, "the consumer reached the paused server's update ids", proc)
        for key, (symbol, market) in keys.items():
            _, true_bids, true_asks = sim.true_book(symbol, market)
            book = consumer.books[key]
            assert book.bids.levels == true_bids, key
            assert book.asks.levels == true_asks, key
        assert consumer.violations == []

        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)
        await asyncio.wait_for(reader, 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        reader.cancel()
        await sim.stop()
    log = stderr_path.read_text()
    assert code == 0, log
    # intake stopped in order: every connection's disconnect was published and reached stdout
    disconnected = {e.venue for e in events if isinstance(e, Status) and e.state == ev.DISCONNECTED}
    assert disconnected == {"binance", "binance-usdm"}
    assert isinstance(events[-1], Status)
    # logs are JSON lines on stderr (stdout is a pipe here), with the shutdown in them
    log_events = [json.loads(line)["event"] for line in log.splitlines() if line.startswith("{")]
    assert "shutting down" in log_events and "marketfeed stopped" in log_events
    # the jsonl sink was drained and flushed: the same bytes as stdout
    assert events_file.read_bytes() == bytes(raw)
    # the recording replays, through the same adapters and the same config, to the very same events
    captures = sorted(record_dir.glob("*.capture.jsonl.gz"))
    assert captures
    replayed = tmp_path / "replayed.jsonl"
    result = await asyncio.to_thread(marketfeed, "replay", *map(str, captures), "--config", str(config), "--out", str(replayed))
    assert result.returncode == 0, result.stderr
    assert replayed.read_bytes() == bytes(raw)


def test_python_dash_m_and_console_script_are_the_same_program() -> None:
    a = marketfeed("--help")
    b = marketfeed("--help", console_script=True)
    assert a.returncode == b.returncode == 0
    assert b"check-config" in a.stdout and b"replay" in a.stdout
    assert os.path.basename(sys.executable)  # the venv's interpreter runs both


async def test_a_second_signal_during_shutdown_exits_1_at_once(tmp_path: Path) -> None:
    """Shutdown waits for the sinks to drain; a stdout nobody reads never drains. A second SIGTERM
    must end the process at once, with code 1."""
    from marketfeed.simulate.binance import BinanceSimulator

    sim = BinanceSimulator(seed=5, interval=0.02)
    await sim.start()
    config = tmp_path / "live.toml"
    config.write_text(f'[venues.binance]\nsymbols = ["BTC-USDT"]\nws_url = "{sim.ws_url}"\nrest_url = "{sim.rest_url}"\n')
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:  # fill the pipe ourselves: the daemon's first stdout write will block for good
        while True:
            os.write(write_fd, b" " * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_fd, True)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketfeed", "run", "--config", str(config), "--log-format", "json",
        stdout=write_fd, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    os.close(write_fd)
    seen: list[str] = []

    async def until_logged(event: str) -> None:
        assert proc.stderr is not None
        while event not in seen:
            line = await proc.stderr.readline()
            if not line:
                pytest.fail(f"stderr ended before {event!r}; got {seen}")
            if line.startswith(b"{"):
                seen.append(json.loads(line)["event"])

    try:
        # a connection is open: its status events are on their way to the blocked stdout
        await asyncio.wait_for(until_logged("connected"), 30)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(until_logged("shutting down"), 30)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        rest = await proc.stderr.read() if proc.stderr else b""
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(read_fd)
        await sim.stop()
    assert code == 1
    assert b"second signal: exiting without finishing the shutdown" in rest


async def test_run_stops_in_order_when_the_reader_of_stdout_goes_away(tmp_path: Path) -> None:
    """`marketfeed run | head -n 1`: once head exits, the daemon shuts down by itself, with code 0."""
    from marketfeed.simulate.binance import BinanceSimulator

    sim = BinanceSimulator(seed=9, interval=0.02)
    await sim.start()
    config = tmp_path / "live.toml"
    config.write_text(f'[venues.binance]\nsymbols = ["BTC-USDT"]\nws_url = "{sim.ws_url}"\nrest_url = "{sim.rest_url}"\n')
    read_fd, write_fd = os.pipe()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketfeed", "run", "--config", str(config), "--log-format", "json",
        stdout=write_fd, stderr=asyncio.subprocess.PIPE, cwd=REPO,
    )
    os.close(write_fd)
    try:
        assert proc.stderr is not None
        with os.fdopen(read_fd, "rb") as reader:
            first = await asyncio.wait_for(asyncio.to_thread(reader.readline), 30)
            assert isinstance(ev.decode(first), Status)
        # the reader has exited: the pipe has no reading end any more
        code = await asyncio.wait_for(proc.wait(), 60)
        log = await proc.stderr.read()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await sim.stop()
    events = [json.loads(line)["event"] for line in log.splitlines() if line.startswith(b"{")]
    assert code == 0, log
    assert "shutting down: nobody reads stdout any more" in events and "marketfeed stopped" in events


def test_run_exits_1_when_a_sink_cannot_start(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the sink wants a directory")
    config = tmp_path / "bad-sink.toml"
    config.write_text(
        '[venues.binance]\nsymbols = ["BTC-USDT"]\nws_url = "ws://127.0.0.1:9"\nrest_url = "http://127.0.0.1:9"\n'
        f'[[sinks]]\ntype = "jsonl"\npath = "{blocker}/events.jsonl"\n'
    )
    result = marketfeed("run", "--config", str(config), "--log-format", "json")
    assert result.returncode == 1
    logged = [json.loads(line) for line in stderr_lines(result) if line.startswith("{")]
    assert any(e["event"] == "cannot start sinks" and "not-a-dir" in e["error"] for e in logged)
    assert result.stdout == b""


def test_check_config_summarises_sinks_and_recording(tmp_path: Path) -> None:
    config = tmp_path / "full.toml"
    config.write_text(
        '[venues.binance]\nsymbols = ["BTC-USDT"]\nchannels = ["book"]\n'
        '[[sinks]]\ntype = "jsonl"\npath = "out/e.jsonl"\n[[sinks]]\ntype = "stdout"\n[record]\ndir = "rec"\n'
    )
    result = marketfeed("check-config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == (
        f"ok: {config}: venues: binance: BTC-USDT (book); sinks: jsonl out/e.jsonl, stdout; record: rec"
    )
