"""What every venue's loopback server shares: serving its aiohttp app on a host and port, its base
URLs for a config's ``ws_url``/``rest_url``, and cancelling its background tasks at clean-up."""

from __future__ import annotations

import asyncio

from aiohttp import web


class LoopbackServer:
    """Base of the venue servers. A subclass builds ``self.app`` and keeps its loops in ``self._tasks``."""

    app: web.Application
    host = "127.0.0.1"
    port = 0
    _runner: web.AppRunner | None = None
    _tasks: list[asyncio.Task[None]] = []

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Serve on ``host``; port 0 picks a free one (read it back from ``port``)."""
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.host = host
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def _on_cleanup(self, app: web.Application) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
