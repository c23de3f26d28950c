"""Reconnect backoff and the REST weight budget, driven by an injected random source and a fake clock
(the budget's sleeps advance the fake clock instead of waiting)."""

from __future__ import annotations

import asyncio

import pytest

from marketfeed.runtime.backoff import ReconnectBackoff
from marketfeed.runtime.budget import WeightBudget

# -- backoff ------------------------------------------------------------------------------------


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    b = ReconnectBackoff(base=1.0, cap=10.0, reset_after=60.0, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_is_full_jitter_between_zero_and_the_ceiling() -> None:
    draws = iter([0.0, 0.5, 0.25])
    b = ReconnectBackoff(base=2.0, cap=60.0, reset_after=60.0, rand=lambda: next(draws))
    assert b.next_delay() == 0.0  # random(0, 2)
    assert b.next_delay() == 2.0  # half of 4
    assert b.next_delay() == 2.0  # a quarter of 8


def test_backoff_resets_after_a_healthy_period_only() -> None:
    b = ReconnectBackoff(base=1.0, cap=60.0, reset_after=30.0, rand=lambda: 1.0)
    for _ in range(4):
        b.next_delay()
    assert b.next_delay(healthy_for=29.9) == 16.0  # not healthy long enough: keeps backing off
    assert b.next_delay(healthy_for=30.0) == 1.0  # a healthy spell: start over
    assert b.next_delay() == 2.0


def test_backoff_survives_very_many_attempts() -> None:
    b = ReconnectBackoff(base=1.0, cap=60.0, rand=lambda: 0.999)
    for _ in range(5000):
        delay = b.next_delay()
    assert 0 <= delay <= 60.0


def test_backoff_rejects_a_base_above_the_cap() -> None:
    with pytest.raises(ValueError):
        ReconnectBackoff(base=5.0, cap=1.0)


# -- budget -------------------------------------------------------------------------------------


class FakeClock:
    """time.monotonic and asyncio.sleep stand-ins: sleeping moves the clock forward at once. The
    budget serialises its waiters, so at most one of them sleeps at a time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def make_budget(per_minute: float, capacity: float | None = None) -> tuple[WeightBudget, FakeClock]:
    clock = FakeClock()
    return WeightBudget(per_minute, capacity, clock=clock, sleep=clock.sleep), clock


async def test_budget_grants_the_burst_at_once_then_paces_by_the_refill_rate() -> None:
    budget, clock = make_budget(600, capacity=100)  # 10 weight per second
    granted: list[float] = []

    async def take(weight: int) -> None:
        await budget.acquire(weight)
        granted.append(clock.now)

    await asyncio.gather(*(take(50) for _ in range(5)))
    # two fit in the burst; each later one waits for 50 weight to refill: 5 s apart
    assert granted == [1000.0, 1000.0, 1005.0, 1010.0, 1015.0]
    assert budget.spent == 250 and budget.granted == 5 and budget.waiting == 0


async def test_budget_serves_waiters_in_arrival_order() -> None:
    budget, clock = make_budget(60, capacity=1)  # 1 weight per second
    await budget.acquire(1)
    order: list[str] = []

    async def take(name: str, weight: int) -> None:
        await budget.acquire(weight)
        order.append(name)

    await asyncio.gather(take("first", 1), take("second", 1), take("third", 1))
    assert order == ["first", "second", "third"]
    assert clock.now == 1003.0


async def test_pause_until_holds_every_waiter_until_the_deadline() -> None:
    budget, clock = make_budget(600, capacity=600)
    await budget.acquire(10)
    budget.pause_until(clock.now + 30.0)  # a 429 with Retry-After: 30
    times: list[float] = []

    async def take() -> None:
        await budget.acquire(10)
        times.append(clock.now)

    await asyncio.gather(take(), take(), take())
    assert times == [1030.0, 1030.0, 1030.0]


async def test_a_pause_during_a_wait_is_honoured() -> None:
    budget, clock = make_budget(60, capacity=10)  # 1 weight per second
    await budget.acquire(10)  # empty
    waiter = asyncio.ensure_future(budget.acquire(5))  # would be granted at +5 s
    await asyncio.sleep(0)
    budget.pause_until(clock.now + 20.0)
    await waiter
    assert clock.now >= 1020.0


async def test_an_earlier_pause_does_not_shorten_a_later_one() -> None:
    budget, clock = make_budget(600)
    budget.pause_until(clock.now + 60.0)
    budget.pause_until(clock.now + 10.0)
    await budget.acquire(1)
    assert clock.now == 1060.0


async def test_a_weight_above_the_capacity_is_charged_as_the_capacity() -> None:
    budget, clock = make_budget(60, capacity=10)
    await budget.acquire(250)  # would never fit otherwise
    await budget.acquire(5)
    assert clock.now == 1005.0
    assert budget.spent == 255


async def test_budget_waits_without_polling() -> None:
    budget, clock = make_budget(120, capacity=2)  # 2 per second
    await budget.acquire(2)
    await budget.acquire(2)
    assert clock.sleeps == [1.0]  # one sleep of exactly the refill time, not a loop of small ones


async def test_a_cancelled_waiter_releases_its_turn() -> None:
    budget = WeightBudget(60, capacity=1)  # the real clock: refill takes a second
    await budget.acquire(1)
    stuck = asyncio.ensure_future(budget.acquire(1))
    await asyncio.sleep(0.001)
    stuck.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stuck
    assert budget.waiting == 0
    assert not budget._lock.locked()
