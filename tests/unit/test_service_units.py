"""Service plumbing without a daemon: the sd_notify client on real unix datagram sockets, the systemd
unit checked by systemd's own verifier, secrets in the config, the health rule of FeedObserver."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from marketfeed.config import ConfigError, parse_config
from marketfeed.events import Book, Status, Trade
from marketfeed.metrics import FeedObserver, invalidation_cause
from marketfeed.notify import Notifier

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "packaging" / "systemd" / "marketfeed.service"


def receive(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_notify_to_a_path_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setblocking(False)
        n = Notifier(environ={"NOTIFY_SOCKET": str(path)})
        assert n.enabled and n.watchdog_interval is None
        assert n.ready("books 2/2 valid")
        assert n.watchdog()
        assert n.status("line one\nline two")  # a newline would start a new key: it becomes a space
        assert n.stopping()
        n.close()
        assert receive(sock) == ["READY=1\nSTATUS=books 2/2 valid", "WATCHDOG=1", "STATUS=line one line two", "STOPPING=1"]


def test_notify_to_an_abstract_socket() -> None:
    name = f"marketfeed-unit-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        n = Notifier(environ={"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        n.close()
        assert receive(sock) == ["READY=1"]


def test_notify_without_systemd_is_a_no_op_and_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    n = Notifier(environ={})
    assert not n.enabled and not n.ready() and not n.watchdog()
    gone = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert gone.enabled and not gone.ready() and not gone.watchdog()  # logged once, never raised


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() -> None:
    assert Notifier(environ={"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    mine = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(environ=mine).watchdog_interval == 1.0
    other = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(environ=other).watchdog_interval is None
    assert Notifier(environ={"WATCHDOG_USEC": "0"}).watchdog_interval is None


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own checker: unknown keys, bad values, a missing ExecStart binary are all reported.
    ExecStart is pointed at this checkout's console script (the unit names the installed path)."""
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is needed (.ci/run installs the systemd package)"
    text = UNIT.read_text()
    for key in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "DynamicUser=yes", "StateDirectory=marketfeed",
                "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
                "ExecReload=/bin/kill -HUP $MAINPID", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"):
        assert f"\n{key}" in text, key
    script = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "marketfeed"
    if not script.exists():
        script = REPO / ".venv" / "bin" / "marketfeed"
    unit = tmp_path / "marketfeed.service"
    unit.write_text(text.replace("/opt/marketfeed/bin/marketfeed", str(script)))
    result = subprocess.run([analyze, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    ours = [line for line in result.stderr.splitlines() if "marketfeed.service" in line]
    assert ours == [], ours
    # the shard template, checked as an instance (specifiers resolved: %I is "0/4")
    template = (REPO / "packaging" / "systemd" / "marketfeed@.service").read_text()
    assert "MARKETFEED_SHARD=%I" in template and "StateDirectory=marketfeed/shard-%i" in template
    instance = tmp_path / "marketfeed@0-4.service"
    instance.write_text(template.replace("/opt/marketfeed/bin/marketfeed", str(script)))
    result = subprocess.run([analyze, "verify", str(instance)], check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and [line for line in result.stderr.splitlines() if "marketfeed@" in line] == [], result.stderr
    # and the checker does catch a mistake
    unit.write_text(text.replace("/opt/marketfeed/bin/marketfeed", str(script)).replace("Restart=on-failure", "Restart=on-failure\nRestartt=always"))
    bad = subprocess.run([analyze, "verify", str(unit)], check=False, capture_output=True, text=True, timeout=60)
    assert "Restartt" in bad.stderr


VENUE = '[venues.binance]\nsymbols = ["BTC-USDT"]\n'


def test_secrets_from_environment_and_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MF_TEST_TOKEN", "t0ken")
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    config = parse_config(VENUE.replace("]\n", ']\nws_url = "ws://u:${env:MF_TEST_TOKEN}@h"\nrest_url = "http://u:${file:' + str(secret) + '}@h"\n', 1))
    assert config.venues["binance"].ws_url == "ws://u:t0ken@h"
    assert config.venues["binance"].rest_url == "http://u:s3cret@h"
    escaped = parse_config(VENUE.replace("]\n", ']\nws_url = "ws://$${env:MF_TEST_TOKEN}"\n', 1))
    assert escaped.venues["binance"].ws_url == "ws://${env:MF_TEST_TOKEN}"


def test_missing_secret_names_the_key_and_the_variable_not_a_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MF_TEST_MISSING", raising=False)
    with pytest.raises(ConfigError, match=r"venues\.binance\.ws_url: environment variable MF_TEST_MISSING is not set"):
        parse_config(VENUE.replace("]\n", ']\nws_url = "${env:MF_TEST_MISSING}"\n', 1))
    with pytest.raises(ConfigError, match=r"venues\.binance\.rest_url: cannot read secret file"):
        parse_config(VENUE.replace("]\n", ']\nrest_url = "${file:' + str(tmp_path / "none") + '}"\n', 1))


def test_metrics_and_service_sections() -> None:
    config = parse_config(VENUE)
    assert (config.metrics.enabled, config.metrics.host, config.metrics.port) == (True, "127.0.0.1", 9464)
    assert (config.service.ready_timeout, config.service.health_grace) == (30.0, 30.0)
    with pytest.raises(ConfigError, match=r"metrics\.port: must be 0\.\.65535"):
        parse_config(VENUE + "[metrics]\nport = 70000\n")
    with pytest.raises(ConfigError, match=r"service\.health_grace"):
        parse_config(VENUE + "[service]\nhealth_grace = -1\n")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_health_follows_snapshots_and_invalidations_with_a_grace_period() -> None:
    clock = Clock()
    obs = FeedObserver(clock)
    obs.expect("binance", ["BTC-USDT", "ETH-USDT"])
    healthy, body = obs.health(5.0)
    assert healthy and body["valid"] == 0 and all(b["in_grace"] for b in body["not_valid"])
    clock.now += 6
    assert not obs.health(5.0)[0]
    snap = lambda s: Book("binance", s, 1, None, 1, True, [(1.0, 1.0)], [(2.0, 1.0)])
    obs.observe([snap("BTC-USDT"), snap("ETH-USDT"), Trade("binance", "BTC-USDT", 2, None, "1", 1.5, 1.0, "buy")])
    healthy, body = obs.health(5.0)
    assert healthy and body["valid"] == 2 and body["not_valid"] == []
    obs.observe([Status("binance", "BTC-USDT", 3, "book_invalid", "gap: expected U=5, got 7")])
    healthy, body = obs.health(5.0)
    assert healthy and [b["symbol"] for b in body["not_valid"]] == ["BTC-USDT"]
    clock.now += 5
    healthy, body = obs.health(5.0)
    assert not healthy and body["not_valid"][0]["synced_before"] and not body["not_valid"][0]["in_grace"]
    obs.observe([snap("BTC-USDT")])
    assert obs.health(5.0)[0]
    assert obs.books[("binance", "BTC-USDT")].invalidations == {"gap": 1}
    assert obs.events[(Trade, "binance", "BTC-USDT")] == 1 and obs.events[(Book, "binance", "BTC-USDT")] == 2
    assert obs.last_ts[("binance", "BTC-USDT")] == 1  # the last event of that book (the snapshot)


@pytest.mark.parametrize("reason,cause", [
    ("gap: expected U=5123107852949, got 5123107852960", "gap"),
    ("checksum mismatch: venue 1, computed 2", "checksum"),
    ("snapshot checksum mismatch: venue 1, computed 2", "checksum"),
    ("crossed book at u=7", "crossed"),
    ("disconnected: stale: no data for 5.0 s", "disconnect"),
    ("sink jsonl:x dropped events (queue full or write failed)", "sink"),
    (None, "other"),
])
def test_invalidation_causes(reason: str | None, cause: str) -> None:
    assert invalidation_cause(reason) == cause


def test_sink_names_in_logs_and_metric_labels_carry_no_password() -> None:
    from marketfeed.bus import SinkChannel
    from marketfeed.logging import redact
    from marketfeed.sinks.base import Sink

    class Named(Sink):
        name = "redis:redis://:t0ken@127.0.0.1:6379/0"

    assert SinkChannel(Named()).name == "redis:redis://:***@127.0.0.1:6379/0"
    assert redact("nats:nats://user:pa55@h:4222/EVENTS") == "nats:nats://user:***@h:4222/EVENTS"
    assert redact("jsonl:/var/lib/marketfeed/events.jsonl") == "jsonl:/var/lib/marketfeed/events.jsonl"
    assert redact("postgres:postgresql://reader@db/market") == "postgres:postgresql://reader@db/market"


def test_a_sinks_own_counters_are_exported() -> None:
    """Network sinks count retries, failures, connects and given-up batches: Prometheus shows them
    per sink, beside the queue's counters; a sink without counters adds nothing."""
    from types import SimpleNamespace

    from marketfeed.metrics import DaemonCollector

    def channel(name: str, stats: dict | None) -> SimpleNamespace:
        sink = SimpleNamespace(stats=stats) if stats is not None else SimpleNamespace()
        counters = {"queued": 5, "written": 4, "dropped": 1, "errors": 0, "depth": 0, **(stats or {})}
        return SimpleNamespace(name=name, queue_size=10, sink=sink, counters=lambda: counters)

    redis = channel("redis:redis://127.0.0.1:6379", {"retries": 7, "failures": 3, "connects": 2, "given_up": 1})
    daemon = SimpleNamespace(bus=SimpleNamespace(channels=[redis, channel("stdout", None)]), stream=None)
    families = {f.name: f for f in DaemonCollector(daemon)._sinks(daemon)}
    samples = {(s.labels["sink"], s.labels["counter"]): s.value for s in families["marketfeed_sink_counter"].samples}
    assert samples == {
        ("redis:redis://127.0.0.1:6379", "retries"): 7, ("redis:redis://127.0.0.1:6379", "failures"): 3,
        ("redis:redis://127.0.0.1:6379", "connects"): 2, ("redis:redis://127.0.0.1:6379", "given_up"): 1,
    }
    assert {s.labels["sink"]: s.value for s in families["marketfeed_sink_written"].samples} == {"redis:redis://127.0.0.1:6379": 4, "stdout": 4}
