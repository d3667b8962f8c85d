"""The API call budget: a burst after quiet, then the average held to the rate."""

from __future__ import annotations

import asyncio

import pytest

from connectors.salesforce.budget import CallBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_goes_at_once_then_calls_wait_off_their_debt() -> None:
    clock = Clock()
    budget = CallBudget(60, burst=4, clock=clock)  # one call a second
    for _ in range(2):
        assert budget.delay() == 0
        budget.spend(2)  # a read and a write
    assert budget.delay() == 0  # exactly spent, not in debt
    budget.spend(2)
    assert budget.delay() == pytest.approx(2.0)
    clock.now += 1.5
    assert budget.delay() == pytest.approx(0.5)
    clock.now += 0.5
    assert budget.delay() == 0


def test_quiet_time_refills_only_up_to_the_burst() -> None:
    clock = Clock()
    budget = CallBudget(120, clock=clock)  # 2 a second: burst of ten seconds' worth
    assert budget.burst == 20
    budget.spend(20)
    clock.now += 3600
    budget.spend(21)
    assert budget.delay() == pytest.approx(0.5)


def test_over_a_long_run_calls_keep_to_the_rate() -> None:
    clock = Clock()
    budget = CallBudget(30, clock=clock)  # 0.5 calls a second
    start, calls = clock.now, 0
    while clock.now - start < 600:
        clock.now += budget.delay()  # the writer waits its turn...
        budget.spend(2)  # ...and each batch costs a read and a write
        calls += 2
    assert calls <= budget.burst + 0.5 * (clock.now - start) + 2


def test_wait_turn_sleeps_the_delay() -> None:
    budget = CallBudget(600, burst=1)  # 10 a second, real clock
    budget.spend(1.5)

    async def run() -> float:
        return await budget.wait_turn()

    waited = asyncio.run(run())
    assert 0.04 <= waited <= 0.2
    assert budget.delay() == 0


def test_a_budget_must_be_positive() -> None:
    with pytest.raises(ValueError):
        CallBudget(0)
