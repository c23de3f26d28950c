"""The daemon as a service: systemd notifications on a real NOTIFY_SOCKET, /metrics, /health and
/ready scraped over HTTP, `marketfeed status`, SIGHUP reloads; a subprocess against the loopback
Binance server each time."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from marketfeed import events as ev
from marketfeed.simulate.binance import SPOT, USDM, BinanceSimulator, spot_depth_weight
from tests.helpers import ConsumerBooks
from tests.integration.live import wait_until
from tests.integration.service import (
    REPO,
    DaemonProcess,
    parse_metrics,
    poll,
    value,
    venue_toml,
)

pytestmark = pytest.mark.timeout(120)


async def marketfeed_status(url: str, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketfeed", "status", "--url", url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_systemd_notifications_ready_watchdog_status_stopping(tmp_path: Path) -> None:
    sim = BinanceSimulator(seed=3, interval=0.02)
    await sim.start()
    config = tmp_path / "marketfeed.toml"
    config.write_text(
        venue_toml("binance", ["BTC-USDT", "ETH-USDT"], sim.ws_url, sim.rest_url)
        + f'[[sinks]]\ntype = "jsonl"\npath = "{tmp_path / "events.jsonl"}"\n'
        + "[metrics]\nport = 0\n[service]\nready_timeout = 30\n"
    )
    daemon = DaemonProcess(config, tmp_path, watchdog_usec=200_000)  # WATCHDOG=1 every 0.1 s
    try:
        await daemon.start()
        await wait_until(lambda: daemon.notified("READY"), "READY=1", 20)
        ready = daemon.notified("READY")
        assert len(ready) == 1 and ready[0]["READY"] == "1"
        # READY came once the venue's connection was open: its STATUS says so, the server agrees
        assert "venues 1/1 connected; connections 1/1 open" in ready[0]["STATUS"], ready[0]
        assert len(sim.open_connections(SPOT)) == 1
        await wait_until(lambda: daemon.log_events("connected"), "the connected log line")
        status, body = await daemon.get("/ready")
        assert status == 200 and json.loads(body)["ready"] is True
        # the watchdog keeps coming from the event loop, with a fresh status line
        await wait_until(lambda: len(daemon.notified("WATCHDOG")) >= 5, "five WATCHDOG=1", 20)
        assert all(m["WATCHDOG"] == "1" and m["STATUS"].startswith("books ") for m in daemon.notified("WATCHDOG"))
        await wait_until(lambda: any("books 2/2 valid" in m.get("STATUS", "") for m in daemon.read_notifications()),
                         "a STATUS with both books valid", 20)
        code = await daemon.stop()
    finally:
        await sim.stop()
    assert code == 0, daemon.raw_stderr[-20:]
    stopping = daemon.notified("STOPPING")
    assert len(stopping) == 1 and stopping[0]["STOPPING"] == "1"
    # STOPPING=1 is the last word: no READY or WATCHDOG after it
    messages = daemon.messages
    assert "STOPPING" in messages[-1] or all("WATCHDOG" not in m and "READY" not in m for m in messages[messages.index(stopping[0]) + 1:])


STALL_SINK = """
import time

from marketfeed.config import SinkOptions
from marketfeed.sinks.base import Sink


class StallSink(Sink):
    \"\"\"Blocks the event loop once, for ``seconds``, on its first write after ``after`` events: a hung
    loop as a bug in any part of the daemon could cause.\"\"\"

    name = "stall"

    class Options(SinkOptions, forbid_unknown_fields=True):
        seconds: float = 1.5
        after: int = 200

    def __init__(self, options):
        self.options = options
        self.seen = 0
        self.stalled = False

    @classmethod
    def from_options(cls, options):
        return cls(options)

    async def write(self, events):
        self.seen += len(events)
        if not self.stalled and self.seen >= self.options.after:
            self.stalled = True
            time.sleep(self.options.seconds)
"""


async def test_a_hung_event_loop_misses_the_watchdog(tmp_path: Path) -> None:
    """WATCHDOG=1 comes from the event loop itself: while the loop is blocked no ping goes out, so
    systemd (WatchdogSec) would restart the daemon; once the loop runs again the pings resume."""
    plugin = tmp_path / "plugin"
    (plugin / "stallsink-1.0.dist-info").mkdir(parents=True)
    (plugin / "stallsink.py").write_text(STALL_SINK)
    (plugin / "stallsink-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: stallsink\nVersion: 1.0\n")
    (plugin / "stallsink-1.0.dist-info" / "entry_points.txt").write_text("[marketfeed.sinks]\nstall = stallsink:StallSink\n")
    sim = BinanceSimulator(seed=10, interval=0.02)
    await sim.start()
    config = tmp_path / "marketfeed.toml"
    config.write_text(
        venue_toml("binance", ["BTC-USDT"], sim.ws_url, sim.rest_url)
        + '[[sinks]]\ntype = "stall"\nseconds = 1.5\nafter = 200\n'
        + "[metrics]\nport = 0\n[service]\nready_timeout = 30\n"
    )
    daemon = DaemonProcess(config, tmp_path, watchdog_usec=200_000, env={"PYTHONPATH": str(plugin)})  # a ping every 0.1 s
    arrivals: list[float] = []  # when each WATCHDOG=1 arrived, read every 10 ms

    async def collect() -> None:
        seen = 0
        while True:
            pings = daemon.notified("WATCHDOG")
            now = asyncio.get_running_loop().time()
            arrivals.extend([now] * (len(pings) - seen))
            seen = len(pings)
            await asyncio.sleep(0.01)

    try:
        await daemon.start()
        collector = asyncio.get_running_loop().create_task(collect())
        await wait_until(lambda: any(b - a > 1.0 for a, b in zip(arrivals, arrivals[1:])),
                         "a gap in the WATCHDOG pings while the loop is blocked", 30)
        gap_at = next(i for i, (a, b) in enumerate(zip(arrivals, arrivals[1:])) if b - a > 1.0)
        await wait_until(lambda: len(arrivals) >= gap_at + 10, "the pings resuming", 20)
        collector.cancel()
        code = await daemon.stop()
    finally:
        await sim.stop()
    assert code == 0, daemon.raw_stderr[-20:]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    assert gap_at >= 3, "pings came regularly before the stall"
    # the blocked loop missed the watchdog by far more than WATCHDOG_USEC (0.2 s): systemd would act
    assert 1.2 < gaps[gap_at] < 5, gaps
    # before and after it the pings kept their pace (the median: a loaded machine may delay one)
    others = sorted(gaps[:gap_at] + gaps[gap_at + 1 : gap_at + 9])
    assert others[len(others) // 2] < 0.2, gaps


async def test_ready_after_the_bounded_wait_when_a_venue_is_down(tmp_path: Path) -> None:
    sim = BinanceSimulator(seed=4, interval=0.02)
    await sim.start()
    config = tmp_path / "marketfeed.toml"
    # binance is up; binance-usdm points at a port nobody listens on
    config.write_text(
        venue_toml("binance", ["BTC-USDT"], sim.ws_url, sim.rest_url)
        + venue_toml("binance-usdm", ["BTC-USDT-PERP"], "ws://127.0.0.1:9", "http://127.0.0.1:9")
        + f'[[sinks]]\ntype = "jsonl"\npath = "{tmp_path / "events.jsonl"}"\n'
        + "[metrics]\nport = 0\n[service]\nready_timeout = 1.0\nhealth_grace = 0.5\n"
    )
    daemon = DaemonProcess(config, tmp_path)
    try:
        await daemon.start()
        await wait_until(lambda: daemon.notified("READY"), "READY=1 after ready_timeout", 20)
        assert "venues 1/2 connected" in daemon.notified("READY")[0]["STATUS"]
        await wait_until(lambda: daemon.log_events("ready without every connection open"), "the log line saying so")

        async def unhealthy_usdm_only() -> dict | None:
            status, body = await daemon.get("/health")
            data = json.loads(body)
            names = [(b["venue"], b["symbol"]) for b in data["not_valid"]]
            return data if status == 503 and names == [("binance-usdm", "BTC-USDT-PERP")] else None

        data = await poll(unhealthy_usdm_only, "/health 503 naming only the usdm book")
        assert data["books"] == 2 and data["valid"] == 1
        assert data["not_valid"][0]["in_grace"] is False and data["not_valid"][0]["synced_before"] is False
        code, out = await marketfeed_status(daemon.metrics_url)
        assert code == 1, out
        assert "UNHEALTHY" in out and "binance-usdm BTC-USDT-PERP" in out
        code = await daemon.stop()
    finally:
        await sim.stop()
    assert code == 0


async def test_metrics_gap_and_health(tmp_path: Path) -> None:
    sim = BinanceSimulator(seed=5, interval=0.02)
    await sim.start()
    config = tmp_path / "marketfeed.toml"
    events = tmp_path / "events.jsonl"
    config.write_text(
        venue_toml("binance", ["BTC-USDT", "ETH-USDT"], sim.ws_url, sim.rest_url)
        + f'[[sinks]]\ntype = "jsonl"\npath = "{events}"\n'
        + "[metrics]\nport = 0\n[service]\nhealth_grace = 0\n"
    )
    daemon = DaemonProcess(config, tmp_path)
    try:
        await daemon.start()

        async def healthy() -> bool:
            return (await daemon.get("/health"))[0] == 200

        await poll(healthy, "/health 200 with both books synced")
        m = await daemon.scrape()
        for symbol in ("BTC-USDT", "ETH-USDT"):
            assert value(m, "marketfeed_book_valid", venue="binance", symbol=symbol) == 1
            assert value(m, "marketfeed_gaps_total", venue="binance", symbol=symbol) == 0
        # a dropped diff: the next one is a gap; the resync snapshot is held back 1.5 s by the server
        sim.slow_depth(1.5)
        sim.drop_next_diff("BTCUSDT")

        async def gap_seen() -> tuple[int, dict] | None:
            status, body = await daemon.get("/health")
            return (status, json.loads(body)) if status == 503 else None

        _, body = await poll(gap_seen, "/health 503 after the gap")
        assert [(b["venue"], b["symbol"]) for b in body["not_valid"]] == [("binance", "BTC-USDT")]
        assert body["not_valid"][0]["synced_before"] is True
        m = await daemon.scrape()
        assert value(m, "marketfeed_book_valid", venue="binance", symbol="BTC-USDT") == 0
        assert value(m, "marketfeed_book_valid", venue="binance", symbol="ETH-USDT") == 1
        assert value(m, "marketfeed_healthy") == 0
        code, out = await marketfeed_status(daemon.metrics_url)
        assert code == 1 and "binance BTC-USDT" in out, out
        await poll(healthy, "/health 200 again after the resync")
        m = await daemon.scrape()
        assert value(m, "marketfeed_gaps_total", venue="binance", symbol="BTC-USDT") == 1
        assert value(m, "marketfeed_gaps_total", venue="binance", symbol="ETH-USDT") == 0
        assert value(m, "marketfeed_resyncs_total", venue="binance", symbol="BTC-USDT") == 1
        assert value(m, "marketfeed_book_snapshots_total", venue="binance", symbol="BTC-USDT") == 2
        assert value(m, "marketfeed_adapter_counter_total", venue="binance", counter="gaps") == 1
        assert value(m, "marketfeed_book_valid", venue="binance", symbol="BTC-USDT") == 1
        # REST: what the server saw is what we count
        depth = sim.depth_requests(SPOT)
        assert len(depth) == 3
        assert sum(h.weight for h in depth) == 3 * spot_depth_weight(100)
        assert value(m, "marketfeed_rest_requests_total", venue="binance") == len(sim.rest_log)  # exchangeInfo too
        assert value(m, "marketfeed_rest_weight_total", venue="binance") == sum(h.weight for h in sim.rest_log)
        # connection
        assert value(m, "marketfeed_connection_state", venue="binance", connection="0", url=f"{sim.ws_url}/stream", state="open") == 1 or \
            value(m, "marketfeed_connections_open", venue="binance") == 1
        assert value(m, "marketfeed_connections_open", venue="binance") == 1
        assert value(m, "marketfeed_reconnects_total", venue="binance") == 0
        assert value(m, "marketfeed_messages_total", venue="binance") > 0
        # every event the observer counted went to the sink's queue: the same number
        sink = f"jsonl:{events}"
        counted = sum(v for (name, _), v in m.items() if name == "marketfeed_events_total")
        assert counted > 0 and value(m, "marketfeed_sink_queued_total", sink=sink) == counted
        assert value(m, "marketfeed_sink_dropped_total", sink=sink) == 0
        assert value(m, "marketfeed_sink_errors_total", sink=sink) == 0
        assert value(m, "marketfeed_sink_queue_depth", sink=sink) is not None
        assert value(m, "marketfeed_last_message_age_seconds", venue="binance", symbol="BTC-USDT") < 60
        assert value(m, "marketfeed_ready") == 1
        assert value(m, "marketfeed_info", version="0.1.0") == 1
        assert value(m, "marketfeed_process_resident_memory_bytes") > 0
        assert value(m, "marketfeed_process_open_fds") > 0
        code, out = await marketfeed_status(daemon.metrics_url)
        assert code == 0 and out.startswith("healthy"), out
        # the server drops the connection: one reconnect, counted per venue and per connection
        frames = value(m, "marketfeed_messages_total", venue="binance")
        assert sim.kill_connections(SPOT) == 1

        async def reconnected() -> dict | None:
            m = await daemon.scrape()
            return m if value(m, "marketfeed_reconnects_total", venue="binance") == 1 and \
                value(m, "marketfeed_connections_open", venue="binance") == 1 else None

        m = await poll(reconnected, "one reconnect")
        assert value(m, "marketfeed_connection_reconnects_total", venue="binance", connection="0") == 1
        assert value(m, "marketfeed_messages_total", venue="binance") >= frames
        # the dashboard only uses metric names this daemon exports
        check_dashboard((await daemon.get("/metrics"))[1])
        code = await daemon.stop()
    finally:
        await sim.stop()
    assert code == 0


def check_dashboard(exposition: str) -> None:
    """Every metric name in the dashboard's queries is one the daemon exports (declared in the scrape,
    with or without samples: the bot stream's clients have none without a [server] section)."""
    import re

    dashboard = json.loads((REPO / "packaging" / "grafana" / "marketfeed-dashboard.json").read_text())
    names = {name for name, _ in parse_metrics(exposition)}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", exposition, re.M):
        names.add(name + "_total" if kind == "counter" and not name.endswith("_total") else name)
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    used = {n for e in exprs for n in re.findall(r"\bmarketfeed_[a-z_]+\b", e)}
    assert used, exprs
    missing = sorted(n for n in used if n not in names)
    assert not missing, f"dashboard uses metrics the daemon does not export: {missing}"


async def test_status_when_nothing_listens(tmp_path: Path) -> None:
    code, out = await marketfeed_status("http://127.0.0.1:9")
    assert code == 2 and "cannot reach http://127.0.0.1:9" in out
    # the endpoint from a config's [metrics] section
    config = tmp_path / "marketfeed.toml"
    config.write_text('[venues.binance]\nsymbols = ["BTC-USDT"]\n[metrics]\nhost = "0.0.0.0"\nport = 9\n')
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "marketfeed", "status", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
    )
    out_bytes, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2 and "cannot reach http://127.0.0.1:9:" in out_bytes.decode()


async def test_sighup_reload_adds_a_symbol_removes_a_sink_keeps_other_venues_and_survives_a_bad_config(tmp_path: Path) -> None:
    sim = BinanceSimulator(seed=6, interval=0.02)
    await sim.start()
    config = tmp_path / "marketfeed.toml"
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    usdm = venue_toml("binance-usdm", ["BTC-USDT-PERP"], sim.ws_url, sim.rest_url)
    sinks_ab = f'[[sinks]]\ntype = "jsonl"\npath = "{a}"\nflush_interval = 0\n[[sinks]]\ntype = "jsonl"\npath = "{b}"\nflush_interval = 0\n'
    tail = "[metrics]\nport = 0\n[service]\nhealth_grace = 0\n"
    config.write_text(venue_toml("binance", ["BTC-USDT"], sim.ws_url, sim.rest_url) + usdm + sinks_ab + tail)
    daemon = DaemonProcess(config, tmp_path)
    try:
        await daemon.start()

        async def healthy() -> bool:
            return (await daemon.get("/health"))[0] == 200

        await poll(healthy, "healthy before the reload")
        usdm_conns = {id(c) for c in sim.open_connections(USDM)}
        spot_conns = {id(c) for c in sim.open_connections(SPOT)}
        assert usdm_conns and spot_conns
        messages_before = value(await daemon.scrape(), "marketfeed_messages_total", venue="binance")
        assert messages_before > 0
        # 1. add ETH-USDT to binance, remove sink b, add sink c
        config.write_text(
            venue_toml("binance", ["BTC-USDT", "ETH-USDT"], sim.ws_url, sim.rest_url) + usdm
            + f'[[sinks]]\ntype = "jsonl"\npath = "{a}"\nflush_interval = 0\n'
            + f'[[sinks]]\ntype = "jsonl"\npath = "{c}"\nflush_interval = 0\n' + tail
        )
        daemon.signal(signal.SIGHUP)

        async def eth_valid() -> dict | None:
            m = await daemon.scrape()
            return m if value(m, "marketfeed_book_valid", venue="binance", symbol="ETH-USDT") == 1 else None

        m = await poll(eth_valid, "ETH-USDT synced after the reload")
        assert value(m, "marketfeed_config_reloads_total", result="ok") == 1
        # the restarted venue's message counter carries on from before (a counter never goes back)
        assert value(m, "marketfeed_messages_total", venue="binance") > messages_before
        assert value(m, "marketfeed_sink_written_total", sink=f"jsonl:{b}") is None  # sink b is gone
        assert value(m, "marketfeed_sink_written_total", sink=f"jsonl:{a}") > 0
        await wait_until(lambda: daemon.log_events("config reloaded"), "the reload's log line")
        reloaded = daemon.log_events("config reloaded")
        assert len(reloaded) == 1
        assert reloaded[0]["venues_restarted"] == ["binance"] and reloaded[0]["venues_unchanged"] == ["binance-usdm"]
        assert reloaded[0]["sinks_removed"] == [f"jsonl:{b}"] and reloaded[0]["sinks_added"] == [f"jsonl:{c}"]
        # binance-usdm kept its very connection; binance got a new one
        assert {id(c) for c in sim.open_connections(USDM)} == usdm_conns
        assert not {id(c) for c in sim.open_connections(SPOT)} & spot_conns
        await poll(healthy, "healthy after the reload")
        # sink b was drained and closed: its file ends with whole lines and grows no more
        size_b = b.stat().st_size
        assert size_b > 0 and b.read_bytes().endswith(b"\n")
        # 2. a bad config is refused, everything keeps running
        config.write_text('[venues.binance]\nsymbols = "BTC-USDT"\n')
        daemon.signal(signal.SIGHUP)

        async def refused() -> dict | None:
            m = await daemon.scrape()
            return m if value(m, "marketfeed_config_reloads_total", result="failed") == 1 else None

        m = await poll(refused, "the bad config refused")
        await wait_until(lambda: daemon.log_events("config reload failed: the running config is kept"), "the refusal's log line")
        failed = daemon.log_events("config reload failed: the running config is kept")
        assert len(failed) == 1 and "venues.binance.symbols" in failed[0]["error"]
        status, body = await daemon.get("/health")
        assert status == 200 and "venues.binance.symbols" in json.loads(body)["last_reload_error"]
        await wait_until(lambda: any("last reload FAILED" in m.get("STATUS", "") for m in daemon.read_notifications()),
                         "STATUS= telling systemd the reload failed")
        assert value(m, "marketfeed_book_valid", venue="binance", symbol="ETH-USDT") == 1
        assert {id(c) for c in sim.open_connections(USDM)} == usdm_conns
        assert daemon.proc is not None and daemon.proc.returncode is None
        assert b.stat().st_size == size_b
        # 3. valid TOML that the adapter refuses (Binance spot snapshots go up to 5000 levels): kept too
        config.write_text(venue_toml("binance", ["BTC-USDT"], sim.ws_url, sim.rest_url).replace("depth = 100", "depth = 6000") + usdm + tail)
        daemon.signal(signal.SIGHUP)

        async def refused_twice() -> dict | None:
            m = await daemon.scrape()
            return m if value(m, "marketfeed_config_reloads_total", result="failed") == 2 else None

        m = await poll(refused_twice, "the refused depth")
        await wait_until(lambda: len(daemon.log_events("config reload failed: the running config is kept")) == 2, "the second refusal's log line")
        failed = daemon.log_events("config reload failed: the running config is kept")
        assert len(failed) == 2 and "venues.binance.depth" in failed[1]["error"]
        assert value(m, "marketfeed_book_valid", venue="binance", symbol="ETH-USDT") == 1
        assert value(m, "marketfeed_sink_written_total", sink=f"jsonl:{c}") > 0
        assert {id(c) for c in sim.open_connections(USDM)} == usdm_conns
        code = await daemon.stop()
    finally:
        await sim.stop()
    assert code == 0, daemon.raw_stderr[-20:]
    # sink c joined mid-stream: it got the running usdm book as a snapshot first, so a consumer of c
    # alone keeps a correct book, equal at the end to the one of sink a, which saw everything
    books_a, books_c = ConsumerBooks(), ConsumerBooks()
    for path, books in ((a, books_a), (c, books_c)):
        for line in path.read_bytes().splitlines():
            books.apply(ev.decode(line))
        assert books.violations == [], (path, books.violations[:3])
    key = ("binance-usdm", "BTC-USDT-PERP")
    assert books_c.book_events > 0 and key in books_c.books
    assert dict(books_c.books[key].bids.levels) == dict(books_a.books[key].bids.levels)
    assert dict(books_c.books[key].asks.levels) == dict(books_a.books[key].asks.levels)


def free_port_pair() -> int:
    """A port P with P and P + 1 both free right now."""
    import socket

    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise AssertionError("no two free consecutive ports")


async def test_shard_serves_metrics_on_port_plus_its_index(tmp_path: Path) -> None:
    """Shards of one config side by side (the marketfeed@I-N template): shard I listens on port + I."""
    sim = BinanceSimulator(seed=8, interval=0.02)
    await sim.start()
    port = free_port_pair()
    config = tmp_path / "marketfeed.toml"
    config.write_text(
        venue_toml("binance", ["BTC-USDT", "ETH-USDT"], sim.ws_url, sim.rest_url)
        + venue_toml("binance-usdm", ["BTC-USDT-PERP", "ETH-USDT-PERP"], sim.ws_url, sim.rest_url)
        + f'[[sinks]]\ntype = "jsonl"\npath = "{tmp_path / "events.jsonl"}"\n'
        + f"[metrics]\nport = {port}\n"
    )
    daemon = DaemonProcess(config, tmp_path, env={"MARKETFEED_SHARD": "1/2"})
    try:
        await daemon.start()
        assert daemon.metrics_url == f"http://127.0.0.1:{port + 1}"
        _, body = await daemon.get("/health")
        # this shard's books, as marketfeed.shard splits them: /health counts exactly those
        from marketfeed.shard import split

        configured = {"binance": ["BTC-USDT", "ETH-USDT"], "binance-usdm": ["BTC-USDT-PERP", "ETH-USDT-PERP"]}
        mine = {(venue, symbol) for venue, symbols in split(configured, 1, 2).items() for symbol in symbols}
        assert 0 < len(mine) < 4
        names = {(b["venue"], b["symbol"]) for b in json.loads(body)["not_valid"]}
        assert json.loads(body)["books"] == len(mine) and names <= mine

        async def all_mine_valid() -> bool:
            books = {tuple(dict(labels)[k] for k in ("venue", "symbol")): v
                     for (name, labels), v in (await daemon.scrape()).items() if name == "marketfeed_book_valid"}
            return set(books) == mine and all(v == 1 for v in books.values())

        await poll(all_mine_valid, "exactly this shard's books, all valid")
        code = await daemon.stop()
    finally:
        await sim.stop()
    assert code == 0


async def test_sighup_reload_replaces_one_venue_by_another(tmp_path: Path) -> None:
    sim = BinanceSimulator(seed=9, interval=0.02)
    await sim.start()
    config = tmp_path / "marketfeed.toml"
    sinks = f'[[sinks]]\ntype = "jsonl"\npath = "{tmp_path / "events.jsonl"}"\n[metrics]\nport = 0\n[service]\nhealth_grace = 0\n'
    config.write_text(venue_toml("binance", ["BTC-USDT"], sim.ws_url, sim.rest_url) + sinks)
    daemon = DaemonProcess(config, tmp_path)
    try:
        await daemon.start()

        async def healthy_with(books: set) -> dict | None:
            status, body = await daemon.get("/health")
            data = json.loads(body)
            return data if status == 200 and data["books"] == len(books) and data["valid"] == len(books) else None

        await poll(lambda: healthy_with({("binance", "BTC-USDT")}), "binance synced")
        assert len(sim.open_connections(SPOT)) == 1
        config.write_text(venue_toml("binance-usdm", ["ETH-USDT-PERP"], sim.ws_url, sim.rest_url) + sinks)
        daemon.signal(signal.SIGHUP)

        async def switched() -> dict | None:
            m = await daemon.scrape()
            usdm = value(m, "marketfeed_book_valid", venue="binance-usdm", symbol="ETH-USDT-PERP")
            return m if usdm == 1 and value(m, "marketfeed_book_valid", venue="binance", symbol="BTC-USDT") is None else None

        m = await poll(switched, "usdm synced, binance gone")
        assert await healthy_with({("binance-usdm", "ETH-USDT-PERP")})
        assert value(m, "marketfeed_book_valid", venue="binance-usdm", symbol="ETH-USDT-PERP") == 1
        assert value(m, "marketfeed_book_valid", venue="binance", symbol="BTC-USDT") is None
        assert value(m, "marketfeed_connections_open", venue="binance") is None
        await wait_until(lambda: not sim.open_connections(SPOT), "the binance connection closed")
        await wait_until(lambda: daemon.log_events("config reloaded"), "the reload's log line")
        reloaded = daemon.log_events("config reloaded")[0]
        assert reloaded["venues_added"] == ["binance-usdm"] and reloaded["venues_removed"] == ["binance"]
        code = await daemon.stop()
    finally:
        await sim.stop()
    assert code == 0
