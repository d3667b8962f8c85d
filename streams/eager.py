"""Run a coroutine eagerly: to completion without a task when it never has to wait.

Faust hands every fetched record to the streams through ``Service.wait_first(deliver,
suspend_flow.wait())``, which wraps both in tasks and waits on four futures (the two, plus the
consumer's stopped and crashed events) so that a rebalance can interrupt a delivery blocked
on a full stream buffer. That machinery was a quarter of a worker's CPU (profile of the
normaliser at 2,000 webhooks/s: ``wait_first`` 13 %, ``Event.wait`` 6 %, ``asyncio.wait``
7 %), while nearly every delivery completes at once: the buffer has room. :func:`step`
runs the coroutine up to its first suspension; only a delivery that really waits goes on as
a task, through the original path.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any


class Resumed:
    """An awaitable that continues ``coro``, which already yielded ``pending`` to its runner.

    Awaited inside a task, it hands ``pending`` (the future ``coro`` waits on) to that task and
    forwards every value and exception the task sends back, exactly as if the task had been
    running ``coro`` from the start.
    """

    def __init__(self, coro: Coroutine[Any, Any, Any], pending: Any) -> None:
        self.coro = coro
        self.pending = pending

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self.coro, self.pending
        while True:
            try:
                value = yield pending
            except BaseException as exc:  # thrown in by the task: a cancellation
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    pending = coro.send(value)
                except StopIteration as stop:
                    return stop.value


async def finish(coro: Coroutine[Any, Any, Any], pending: Any) -> Any:
    """The rest of a coroutine that :func:`step` left suspended, as a coroutine."""
    return await Resumed(coro, pending)


def step(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Run ``coro`` until it completes or first suspends.

    Returns ``(True, result)`` when it completed (an exception it raises propagates), or
    ``(False, pending)``: what it yielded, to be continued with :func:`finish`.
    """
    try:
        pending = coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    return False, pending
