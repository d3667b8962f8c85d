"""streams.eager: a coroutine run eagerly until it waits, then finished in a task unchanged."""

from __future__ import annotations

import asyncio

import pytest

from streams import eager

pytestmark = pytest.mark.asyncio


async def test_a_coroutine_that_never_waits_completes_without_a_task() -> None:
    calls: list[int] = []

    async def deliver() -> int:
        calls.append(1)
        return 7

    assert eager.step(deliver()) == (True, 7)
    assert calls == [1]


async def test_an_exception_before_any_wait_propagates() -> None:
    async def deliver() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        eager.step(deliver())


async def test_a_coroutine_that_waits_is_finished_by_a_task_with_its_result() -> None:
    gate: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    gate.put_nowait(0)  # full: the next put waits
    trace: list[str] = []

    async def deliver() -> str:
        trace.append("before")
        await gate.put(1)
        trace.append("after")
        await asyncio.sleep(0)
        return "delivered"

    coro = deliver()
    done, pending = eager.step(coro)
    assert not done and trace == ["before"]
    task = asyncio.ensure_future(eager.finish(coro, pending))
    await asyncio.sleep(0.01)
    assert not task.done()
    assert gate.get_nowait() == 0  # room: the put completes
    assert await task == "delivered"
    assert trace == ["before", "after"] and gate.get_nowait() == 1


async def test_cancelling_the_task_cancels_the_waiting_coroutine() -> None:
    release = asyncio.Event()
    trace: list[str] = []

    async def deliver() -> None:
        try:
            await release.wait()
        except asyncio.CancelledError:
            trace.append("cancelled")
            raise

    coro = deliver()
    done, pending = eager.step(coro)
    assert not done
    task = asyncio.ensure_future(eager.finish(coro, pending))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert trace == ["cancelled"]
