"""Batches that form while a stage works: low latency when idle, large batches when busy.

Faust's ``Stream.take_events(max, within)`` waits ``within`` for a batch to fill before it
yields, every time: at any rate below ``max / within`` each event pays that wait, and the
stages are chained (normaliser -> sequencer -> CRM writer), so the waits add up along the
path from webhook to CRM record. :func:`take_ready` batches the way a database's group
commit does instead: the first event of a batch waits at most ``linger_s`` for company, and
whatever arrives while the stage handles a batch forms the next one, up to ``max_events``.
An idle stage answers at once. A stage that is behind (the partitions of its batch hold at
least a batch more in Kafka) waits up to ``FILL_S`` for a full batch instead: its per-batch
costs, a produce round trip and a changelog write per aggregate, are spread over many
events, which is how a backlog is worked off fastest.

The buffering follows Faust's own ``take_events`` (a processor on the stream fills the
buffer, the stream is drained passively, acks are off and each batch's events are acked
after the consumer has handled it, so an offset is committed only for settled events), with
two differences besides the wake-up rule: the buffer is handed out and emptied at once, so
events keep arriving while the batch is being handled, and a batch is acked only once its
consumer asks for the next one, never when the generator is closed half-way.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import faust
from faust.types import ChannelT, EventT

from streams import metrics
from streams.agents.guard import guarded
from streams.settings import Settings

#: How long a batch of a stage that is behind waits to fill (``max_events`` records wait in
#: Kafka): full batches spread the per-batch costs (measured on the sequencer: 2,400 events/s
#: in the batches that formed while it worked, 3,500/s in full ones).
FILL_S = 0.05


def backlog(stream: Any, events: list[EventT[Any]]) -> int:
    """Records waiting in Kafka beyond the newest of ``events`` in each of their partitions
    (from the high-water marks of the consumer's last fetches); 0 when unknown."""
    newest: dict[Any, int] = {}
    for event in events:
        newest[event.message.tp] = event.message.offset
    try:
        consumer = stream.app.consumer
        return sum(max(consumer.highwater(tp) - 1 - offset, 0) for tp, offset in newest.items())
    except Exception:  # no consumer yet, a partition just revoked: treat as caught up
        return 0


async def take_ready(
    stream: faust.StreamT[Any],
    max_events: int,
    linger_s: float,
    fill_s: float = FILL_S,
    stage: str | None = None,
) -> AsyncIterator[list[EventT[Any]]]:
    """Yield lists of 1..``max_events`` events: what is buffered, once the oldest has
    waited ``linger_s`` or the buffer is full; a stage that is behind waits up to ``fill_s``
    more for a full batch (see the module doc). With ``stage``, each event's age on arrival
    is observed as ``paybus_stage_pickup_age_seconds``."""
    pickup_age = metrics.STAGE_PICKUP_AGE.labels(stage) if stage else None
    s = cast(Any, stream)
    buffer: list[EventT[Any]] = []
    first_at = 0.0
    arrived = asyncio.Event()  # buffer not empty
    full = asyncio.Event()  # buffer at max_events
    room = asyncio.Event()  # buffer below max_events
    room.set()

    async def add(value: Any) -> Any:
        nonlocal first_at
        while not room.is_set():  # strict: never more than max_events in one batch
            await s.wait(room)
            if s.should_stop:
                return value
        event = s.current_event
        if event is None:
            raise RuntimeError("take_ready found no current event")
        if not buffer:
            first_at = time.monotonic()
        buffer.append(event)
        stamp = event.message.timestamp
        if pickup_age is not None and stamp and stamp > 0:
            pickup_age.observe(max(time.time() - stamp, 0.0))
        arrived.set()
        if len(buffer) >= max_events:
            full.set()
            room.clear()
        return value

    enable_acks = s.enable_acks
    s.enable_acks = False
    s.add_processor(add)
    s._enable_passive(cast(ChannelT[Any], aiter(s.channel)))
    try:
        while not s.should_stop:
            if not buffer:
                arrived.clear()
                if await s.wait_for_stopped(arrived):
                    break
            wait = first_at + linger_s - time.monotonic()
            if wait > 0 and not full.is_set():
                await s.wait_for_stopped(full, timeout=wait)
            if not buffer:
                continue
            if not full.is_set() and backlog(s, buffer) >= max_events - len(buffer):
                # Behind: enough is waiting in Kafka to fill the batch, so let it fill.
                await s.wait_for_stopped(full, timeout=fill_s)
            batch = buffer[:]
            buffer.clear()
            full.clear()
            room.set()
            yield batch
            # Acked only when the consumer asks for more, i.e. has handled the batch; a
            # generator closed at the yield (a stop mid-batch) leaves it unacked, so it is
            # delivered again instead of being committed unhandled.
            for event in batch:
                await s.ack(event)
    finally:
        s.enable_acks = enable_acks
        s._processors.remove(add)


async def run_batches(
    stream: faust.StreamT[Any],
    stage: str,
    handle: Callable[[list[EventT[Any]]], Awaitable[Any]],
    *,
    max_events: int,
    linger_s: float,
) -> AsyncIterator[None]:
    """An agent body: each batch of :func:`take_ready` through ``handle``, guarded (a batch
    that raises is dead-lettered instead of stopping the agent, see ``guard``)."""
    sizes = metrics.STAGE_BATCH_EVENTS.labels(stage)
    async for events in take_ready(stream, max_events, linger_s, stage=stage):
        sizes.observe(len(events))
        await guarded(stage, handle, events)
        yield None


def batched(
    settings: Settings,
    stage: str,
    handle: Callable[[list[EventT[Any]]], Awaitable[Any]],
    *,
    max_events: int | None = None,
    linger_s: float | None = None,
) -> Callable[[faust.StreamT[Any]], AsyncIterator[None]]:
    """The agent function of a batch stage: :func:`run_batches` with the stage settings
    (``batch_max_events``, ``batch_linger_s``) unless given."""
    most = max_events or settings.batch_max_events
    linger = settings.batch_linger_s if linger_s is None else linger_s

    def process(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        return run_batches(stream, stage, handle, max_events=most, linger_s=linger)

    return process
