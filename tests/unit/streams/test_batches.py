"""take_ready: batches form while the stage works, never above the maximum, acked after use.

Runs a real Faust agent over Faust's in-memory test channel (no broker): the events carry
real messages, so acks are the stream's own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import faust
import pytest

from streams import metrics
from streams.agents.batches import backlog, run_batches

pytestmark = pytest.mark.asyncio


class Harness:
    """An agent whose handler records each batch and, when told to, blocks until released."""

    def __init__(self, max_events: int, linger_s: float) -> None:
        self.app = faust.App("take-ready-test", broker="kafka://127.0.0.1:1", store="memory://")
        self.batches: list[list[int]] = []
        self.acked_at_handle: list[list[bool]] = []
        self.events: list[Any] = []
        self.release = asyncio.Event()
        self.release.set()
        self.entered = asyncio.Event()

        async def handle(events: list[Any]) -> None:
            self.batches.append([e.value for e in events])
            self.acked_at_handle.append([e.message.acked for e in events])
            self.events.extend(events)
            self.entered.set()
            await self.release.wait()

        def process(stream: faust.StreamT[int]) -> AsyncIterator[None]:
            return run_batches(stream, "test", handle, max_events=max_events, linger_s=linger_s)

        self.agent = self.app.agent(name="take-ready")(process)

    async def until(self, predicate: Any, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(0.005)

    async def while_busy(self, count: int) -> None:
        """Put 0 and hold its batch in the handler while 1..count-1 arrive; then release
        and wait until all ``count`` were handled."""
        async with self.agent.test_context() as agent:
            self.release.clear()
            await agent.put(0, wait=False)
            await self.until(self.entered.is_set)
            for value in range(1, count):
                await agent.put(value, wait=False)
            await asyncio.sleep(0.05)
            self.release.set()
            await self.until(lambda: sum(len(b) for b in self.batches) == count)


async def test_an_idle_stage_hands_over_a_single_event_without_waiting_for_more() -> None:
    h = Harness(max_events=100, linger_s=0.0)
    async with h.agent.test_context() as agent:
        await agent.put(1, wait=False)
        await h.until(lambda: h.batches)
        await agent.put(2, wait=False)
        await h.until(lambda: len(h.batches) == 2)
    assert h.batches == [[1], [2]]


async def test_events_arriving_while_a_batch_is_handled_form_the_next_batch() -> None:
    h = Harness(max_events=100, linger_s=0.0)
    await h.while_busy(6)
    assert h.batches == [[0], [1, 2, 3, 4, 5]]


async def test_each_batch_size_is_observed_for_its_stage() -> None:
    sizes = metrics.STAGE_BATCH_EVENTS.labels("test")
    count_before, sum_before = _histogram(sizes)
    h = Harness(max_events=100, linger_s=0.0)
    await h.while_busy(6)
    assert _histogram(sizes) == (count_before + 2, sum_before + 6)  # batches [0], [1..5]


async def test_each_event_age_on_arrival_is_observed_for_its_stage() -> None:
    ages = metrics.STAGE_PICKUP_AGE.labels("test")
    count_before, sum_before = _histogram(ages, "paybus_stage_pickup_age_seconds")
    h = Harness(max_events=100, linger_s=0.0)
    async with h.agent.test_context() as agent:
        now = time.time()
        await agent.put(1, timestamp=now - 0.3, wait=False)
        await agent.put(2, timestamp=now - 0.05, wait=False)
        await h.until(lambda: sum(len(b) for b in h.batches) == 2)
    count, total = _histogram(ages, "paybus_stage_pickup_age_seconds")
    assert count == count_before + 2
    assert 0.35 <= total - sum_before < 0.35 + 2.0  # the Kafka stamps' ages, plus this test's


def _histogram(child: Any, name: str = "paybus_stage_batch_events") -> tuple[float, float]:
    samples = {s.name: s.value for m in child.collect() for s in m.samples}
    return samples[f"{name}_count"], samples[f"{name}_sum"]


async def test_a_batch_never_holds_more_than_the_maximum_and_order_is_kept() -> None:
    h = Harness(max_events=3, linger_s=0.0)
    await h.while_busy(8)
    assert all(len(b) <= 3 for b in h.batches)
    assert [v for b in h.batches for v in b] == list(range(8))


async def test_the_first_event_lingers_for_company() -> None:
    h = Harness(max_events=100, linger_s=0.3)
    async with h.agent.test_context() as agent:
        await agent.put(1, wait=False)
        await asyncio.sleep(0.05)
        await agent.put(2, wait=False)
        await h.until(lambda: h.batches)
    assert h.batches == [[1, 2]]


async def test_events_are_acked_only_after_their_batch_was_handled() -> None:
    h = Harness(max_events=100, linger_s=0.0)
    async with h.agent.test_context() as agent:
        h.release.clear()
        await agent.put(1, wait=False)
        await h.until(h.entered.is_set)
        h.release.set()
        await agent.put(2, wait=False)
        await h.until(lambda: len(h.batches) == 2)
        await h.until(lambda: h.events[0].message.acked)
    assert h.acked_at_handle == [[False], [False]]


class _Consumer:
    def __init__(self, highwaters: dict[str, int]) -> None:
        self.highwaters = highwaters

    def highwater(self, tp: str) -> int:
        return self.highwaters[tp]


def _event(tp: str, offset: int) -> Any:
    message = type("Message", (), {"tp": tp, "offset": offset})()
    return type("Event", (), {"message": message})()


async def test_backlog_counts_what_waits_beyond_the_newest_event_of_each_partition() -> None:
    app = type("App", (), {"consumer": _Consumer({"p0": 100, "p1": 11})})()
    stream = type("Stream", (), {"app": app})()
    events = [_event("p0", 10), _event("p0", 40), _event("p1", 10)]
    assert backlog(stream, events) == (100 - 1 - 40) + 0


async def test_backlog_is_zero_when_the_consumer_cannot_tell() -> None:
    stream = type("Stream", (), {"app": type("App", (), {"consumer": _Consumer({})})()})()
    assert backlog(stream, [_event("p9", 3)]) == 0
