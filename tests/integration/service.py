"""A daemon run as a subprocess against the loopback Binance server, as systemd would run it: its
NOTIFY_SOCKET is a real unix datagram socket the test reads, its metrics endpoint is scraped over
HTTP, its logs (JSON on stderr) are collected, and signals are real signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.live import wait_until

REPO = Path(__file__).resolve().parents[2]


def venue_toml(name: str, symbols: list[str], ws_url: str, rest_url: str) -> str:
    quoted = ", ".join(f'"{s}"' for s in symbols)
    return (
        f'[venues.{name}]\nsymbols = [{quoted}]\nws_url = "{ws_url}"\nrest_url = "{rest_url}"\n'
        f'depth = 100\nstale_after = 5.0\nbackoff = {{ base = 0.05, cap = 0.2, reset_after = 5.0 }}\n'
    )


class DaemonProcess:
    """``marketfeed run --config FILE`` with NOTIFY_SOCKET (and WATCHDOG_USEC) set."""

    def __init__(self, config_path: Path, tmp_path: Path, watchdog_usec: int | None = None, env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        # abstract socket name: no path length limits, no files left behind
        self.notify_name = f"@marketfeed-test-{os.getpid()}-{id(self)}"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind("\0" + self.notify_name[1:])
        self.notify.setblocking(False)
        self.messages: list[dict[str, str]] = []
        self.logs: list[dict[str, Any]] = []
        self.raw_stderr: list[str] = []
        self.watchdog_usec = watchdog_usec
        self.extra_env = env or {}
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.metrics_url: str | None = None

    async def start(self) -> None:
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_name, **self.extra_env)
        if self.watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(self.watchdog_usec)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "marketfeed", "run", "--config", str(self.config_path), "--log-format", "json",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=REPO, env=env,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read_stderr())
        await wait_until(lambda: self.metrics_url is not None or self.proc.returncode is not None, "the metrics endpoint log line", 20)
        assert self.metrics_url is not None, self.raw_stderr

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for line in self.proc.stderr:
            text = line.decode(errors="replace").rstrip("\n")
            self.raw_stderr.append(text)
            try:
                entry = json.loads(text)
            except ValueError:
                continue
            self.logs.append(entry)
            if entry.get("event") == "metrics endpoint" and entry.get("url"):
                self.metrics_url = entry["url"].removesuffix("/metrics")

    def read_notifications(self) -> list[dict[str, str]]:
        while self.notify.fileno() != -1:
            try:
                data = self.notify.recv(4096)
            except BlockingIOError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.messages.append(fields)
        return self.messages

    def notified(self, key: str) -> list[dict[str, str]]:
        return [m for m in self.read_notifications() if key in m]

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(f"{self.metrics_url}{path}") as resp:
            return resp.status, await resp.text()

    async def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, text = await self.get("/metrics")
        assert status == 200
        return parse_metrics(text)

    def log_events(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.logs if e.get("event") == event]

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.wait_for(self.proc.wait(), 30)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
            if self._reader is not None:
                await asyncio.wait_for(self._reader, 5)
            self.read_notifications()
            self.notify.close()
        return code


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text format -> {(name, labels): value} with the official parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(metrics: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float | None:
    return metrics.get((name, frozenset(labels.items())))


async def poll(condition: Any, what: str, timeout: float = 20.0) -> Any:
    """Like wait_until, for an async condition; returns its last truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        result = await condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for: {what}")
        await asyncio.sleep(0.05)
