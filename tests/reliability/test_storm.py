"""Reconnect storms: the venue refuses every connection (503 to each WebSocket handshake); the
runtime's attempts stay within the adapter's published connection budget and its minimum interval
once the fast retries are spent, while the configured backoff keeps the attempts coming."""

from __future__ import annotations

import itertools

import pytest

from marketfeed.config import Backoff
from marketfeed.simulate.faults import RefusingListener
from marketfeed.simulate.serve import make_server
from tests.integration.live import LiveVenue, wait_until

pytestmark = pytest.mark.timeout(60)


def most_in_window(times: list[float], window: float) -> int:
    """The most attempts any ``window`` seconds held (each attempt starts a window)."""
    best = 0
    for i, t in enumerate(times):
        best = max(best, sum(1 for u in times[i:] if u < t + window))
    return best


async def test_okx_storm_stays_within_connect_budget() -> None:
    refuser = RefusingListener()
    await refuser.start()
    okx, _, symbols = make_server("okx")
    await okx.start()  # REST (instruments) answers; only the WebSocket refuses
    try:
        async with LiveVenue("okx", symbols, refuser.ws_url, okx.rest_url,
                             backoff=Backoff(base=0.01, cap=0.05, reset_after=5.0)) as live:
            await wait_until(lambda: len(refuser.attempts) >= 12, "12 refused attempts", 20.0)
            limit, window = live.adapter.connect_budget
        attempts = sorted(refuser.attempts)
        # without the budget, a 10-50 ms backoff would make ~40 attempts a second. The runtime counts an
        # attempt when it starts it, the server when it accepts it: allow 50 ms of connect latency
        assert most_in_window(attempts, window - 0.05) <= limit, attempts
        assert live.runner.counters["connect_budget_waits"] > 0
        assert not any(live.statuses("connected"))
    finally:
        await okx.stop()
        await refuser.stop()


async def test_kraken_storm_respects_minimum_interval_after_fast_retries() -> None:
    refuser = RefusingListener()
    await refuser.start()
    kraken, _, symbols = make_server("kraken")
    await kraken.start()
    try:
        async with LiveVenue("kraken", symbols[:1], refuser.ws_url, kraken.rest_url, depth=25,
                             backoff=Backoff(base=0.01, cap=0.05, reset_after=5.0)) as live:
            fast = live.adapter.reconnect_fast_attempts
            floor = live.adapter.reconnect_min_interval
            await wait_until(lambda: len(refuser.attempts) >= fast + 3, f"{fast + 3} refused attempts", 30.0)
        attempts = sorted(refuser.attempts)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        # the first attempt and `fast` quick retries, then at least `floor` seconds between attempts
        assert all(g >= floor - 0.01 for g in gaps[fast:]), gaps
        assert all(g < floor for g in gaps[:fast]), gaps
    finally:
        await kraken.stop()
        await refuser.stop()
