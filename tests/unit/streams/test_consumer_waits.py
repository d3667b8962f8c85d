"""A stage waiting on purpose keeps its worker in the group, and its partitions are not
taken for stalled (the integration proof is ``test_crm_outage_membership``).

The consumer is built by the real app, not started; aiokafka's subscription state is real, on
the test's loop standing in for the consumer thread's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.consumer.subscription_state import SubscriptionState
from faust.types import TP

import streams.consumer
from streams.app import build_app
from streams.consumer_waits import waiting_on
from streams.settings import Settings

TP0 = TP("unit.paybus.payments.status", 0)


@pytest.fixture
async def app(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    app = build_app(Settings(topic_prefix="unit"))
    consumer = app.consumer
    consumer.loop = asyncio.get_running_loop()  # built outside the test's loop
    thread = consumer._thread
    subscription = SubscriptionState(loop=asyncio.get_running_loop())
    monkeypatch.setattr(thread, "_consumer", SimpleNamespace(_subscription=subscription))
    monkeypatch.setattr(thread, "thread_loop", asyncio.get_running_loop())
    yield app


async def test_a_deliberate_wait_counts_as_polling_until_it_ends(app: Any) -> None:
    subscription = app.consumer._thread._consumer._subscription
    subscription._last_fetch_ended = time.monotonic() - 100  # nothing fetched for 100 s
    assert subscription.fetcher_idle_time >= 100  # past max poll: aiokafka would leave
    with waiting_on(app, TP0.topic):
        await asyncio.sleep(0)  # the consumer thread's loop takes the hold
        assert subscription.fetcher_idle_time == 0
        assert app.consumer.waiting_deliberately(TP0)
    await asyncio.sleep(0)
    assert subscription._fetch_count == 0 and subscription.fetcher_idle_time < 1
    assert not app.consumer.waiting_deliberately(TP0)
    with waiting_on(None, TP0.topic):  # a stage driven by hand: nothing to hold
        pass


async def test_a_waiting_stages_partition_is_not_re_read_nor_reported_stalled(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams.consumer, "GAP_REPAIR_S", 0.0)
    consumer = app.consumer
    seeks: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        seeks.append((tp, offset))

    monkeypatch.setattr(consumer, "seek", seek)
    monkeypatch.setattr(consumer, "highwater", lambda tp: 60)  # records wait behind 10
    consumer._committed_offset[TP0] = 10  # its batch, in the stage's hands, is not acked
    with waiting_on(app, TP0.topic):
        assert consumer._new_offset(TP0) is None
        await asyncio.sleep(0)
        assert seeks == []
        # Faust's own stall check is skipped: unskipped, it asks aiokafka (not started here)
        assert consumer._thread.verify_event_path(time.monotonic(), TP0) is None
    assert consumer._new_offset(TP0) is None  # the wait is over: stalls count again
    await asyncio.sleep(0)
    assert seeks == [(TP0, 10)]


async def test_a_hold_that_cannot_be_taken_does_not_break_the_wait(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Best effort: an aiokafka without the fetch context (a renamed attribute) must not make
    the CRM writer fail mid-outage, nor leave the partition marked waiting for good."""
    monkeypatch.setattr(app.consumer._thread, "_consumer", SimpleNamespace(_subscription=None))
    with waiting_on(app, TP0.topic):
        assert app.consumer.waiting_deliberately(TP0)
    assert not app.consumer.waiting_deliberately(TP0)


async def test_a_seek_runs_on_the_consumer_thread(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka's seek deletes fetched records the consumer thread's fetcher may be reading:
    from any other thread it raced it (a KeyError crashed the worker). Faust's own seek runs
    on the caller's thread; ours hands it to the consumer thread, as Faust's other calls do."""
    import threading

    ran_on: list[int] = []
    consumer_thread = threading.Thread(target=lambda: None)

    class Thread:
        def seek(self, tp: TP, offset: int) -> None:
            ran_on.append(threading.get_ident())

        async def call_thread(self, method: Any, *args: Any) -> Any:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            loop = asyncio.get_running_loop()

            def run() -> None:
                result = method(*args)
                loop.call_soon_threadsafe(done.set_result, result)

            nonlocal consumer_thread
            consumer_thread = threading.Thread(target=run)
            consumer_thread.start()
            return await done

    monkeypatch.setattr(app.consumer, "_thread", Thread())
    await app.consumer.seek(TP0, 5)
    assert ran_on == [consumer_thread.ident] and ran_on[0] != threading.get_ident()
