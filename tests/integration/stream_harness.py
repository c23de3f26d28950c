"""A daemon (in process, real sockets) against the loopback Binance simulator, with the stream on."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import marketfeed.config as config_module
from marketfeed.config import Backoff, Config, JsonlSinkConfig, VenueConfig
from marketfeed.daemon import Daemon
from marketfeed.options import ServerConfig, TopConfig
from marketfeed.simulate.binance import BinanceSimulator
from tests.integration.live import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_config(sim: BinanceSimulator, sink_path: Any, port: int = 0, top: TopConfig | None = None, **server: Any) -> Config:
    """Binance spot BTC-USDT and ETH-USDT from the simulator, a JSONL sink at ``sink_path``, the stream
    on ``port`` (0: any free port), and no other listening endpoint."""
    venue = VenueConfig(
        symbols=["BTC-USDT", "ETH-USDT"], ws_url=sim.ws_url, rest_url=sim.rest_url, stale_after=2.0,
        backoff=Backoff(base=0.05, cap=0.2, reset_after=5.0), top=top,
    )
    extra: dict[str, Any] = {}
    if hasattr(config_module, "MetricsConfig"):  # the metrics endpoint would take a fixed port
        extra["metrics"] = config_module.MetricsConfig(enabled=False)
    sinks = [JsonlSinkConfig(path=str(sink_path), flush_interval=0.0)]
    return Config(venues={"binance": venue}, sinks=sinks, server=ServerConfig(port=port, **server), **extra)


class RunningDaemon:
    def __init__(self, config: Config) -> None:
        self.daemon = Daemon(config, shutdown_timeout=2.0)
        self.task: asyncio.Task[int] | None = None

    async def __aenter__(self) -> RunningDaemon:
        self.task = asyncio.get_running_loop().create_task(self.daemon.run())
        await wait_until(lambda: self.daemon.stream.port is not None or self.task.done(), "stream listening")  # type: ignore[union-attr]
        assert not self.task.done(), self.task.result()
        return self

    @property
    def url(self) -> str:
        return self.daemon.stream.url  # type: ignore[no-any-return]

    def valid(self, symbol: str) -> bool:
        state = self.daemon.feed.books.get("binance", symbol)
        return state is not None and state.valid

    async def __aexit__(self, exc_type: object, *exc: object) -> None:
        self.daemon.request_stop()
        assert self.task is not None
        code = await self.task
        if exc_type is None:
            assert code == 0
