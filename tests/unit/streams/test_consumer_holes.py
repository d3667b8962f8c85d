"""Records handed over while the flow is suspended are read again, in order.

Faust empties the stream buffers when the flow resumes after a rebalance and drops a record
whose delivery the suspension interrupts. The fetch runs in its own thread, so records fetched
after the rebalance's seek can meet either fate with the fetch position already past them: the
sequencer recovery test lost ~48 records per partition that way, and read 30 s later they came
after records that had overtaken them. The consumer is built by the real app, not started;
where it would hand records to the streams or move the fetch position is recorded instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

import streams.consumer
import streams.consumer_holes
from streams.app import build_app
from streams.settings import Settings

TP0 = TP("unit.paybus.payments.events", 0)


class Msg(SimpleNamespace):
    """A fetched record as the consumer sees it (weak-referenceable, as Faust's are)."""

    __slots__ = ("__weakref__",)
    __hash__ = object.__hash__


class Recorder:
    """The consumer with its streams, fetch position and assignment replaced by records."""

    def __init__(self, consumer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.consumer = consumer
        self.delivered: list[int] = []
        self.seeks: list[tuple[TP, int]] = []
        self.assigned = {TP0}

        async def to_streams(message: Any) -> None:
            self.delivered.append(message.offset)

        async def seek(tp: TP, offset: int) -> None:  # Faust's async seek underneath
            self.seeks.append((tp, offset))

        monkeypatch.setattr(consumer, "_to_streams", to_streams)
        monkeypatch.setattr(consumer, "_seek_now", lambda tp, o: self.seeks.append((tp, o)))
        monkeypatch.setattr(consumer, "_seek", seek)
        monkeypatch.setattr(consumer, "assignment", lambda: self.assigned)

    async def fetched_in_rebalance(self, *offsets: int) -> None:
        """Records handed over while a rebalance suspends the flow (so never to a stage)."""
        self.consumer.stop_flow()
        await self.fetched(*offsets)

    async def fetched(self, *offsets: int) -> list[int]:
        """Hand records to the consumer as its fetcher does; return those the streams got."""
        before = len(self.delivered)
        for offset in offsets:
            message = Msg(tp=TP0, offset=offset)
            await self.consumer.wait_first(
                self.consumer.callback(message), self.consumer.suspend_flow.wait()
            )
        return self.delivered[before:]


@pytest.fixture
async def rec(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Recorder]:
    consumer = build_app(Settings(topic_prefix="unit")).consumer
    consumer.loop = asyncio.get_running_loop()  # built outside the test's loop
    yield Recorder(consumer, monkeypatch)


async def test_records_flow_straight_through_without_a_suspension(rec: Recorder) -> None:
    assert await rec.fetched(5, 6, 7) == [5, 6, 7]
    rec.consumer.resume_flow()
    assert rec.seeks == []
    assert await rec.fetched(8) == [8]


async def test_records_handed_over_while_suspended_are_read_again_before_the_flow_resumes(
    rec: Recorder,
) -> None:
    # A rebalance whose seek to committed offsets has already run; Faust empties its buffers.
    await rec.fetched_in_rebalance(74, 75, 76)
    rec.consumer.resume_flow()
    assert rec.seeks == [(TP0, 74)]  # sought back before anything flows again
    # Records fetched before the seek back, still on their way, must not overtake 74..76.
    assert await rec.fetched(77, 78) == []
    assert await rec.fetched(74, 75, 76, 77, 78) == [74, 75, 76, 77, 78]
    assert await rec.fetched(79) == [79]  # the hole is closed


async def test_a_delivery_interrupted_by_the_suspension_leaves_a_hole(rec: Recorder) -> None:
    blocked = asyncio.Event()

    async def full_buffer(message: Any) -> None:
        await blocked.wait()

    rec.consumer._to_streams = full_buffer
    delivery = asyncio.ensure_future(rec.fetched(30))
    await asyncio.sleep(0.01)
    rec.consumer.stop_flow()  # the rebalance interrupts the waiting delivery
    await delivery
    rec.consumer.resume_flow()
    assert rec.seeks == [(TP0, 30)]


async def test_a_seek_further_back_moves_the_hole_with_it(rec: Recorder) -> None:
    await rec.fetched_in_rebalance(74)
    await rec.consumer.seek(TP0, 60)  # e.g. to the committed offset: 60..73 may be undone too
    rec.consumer.resume_flow()
    assert rec.seeks == [(TP0, 60), (TP0, 60)]
    assert await rec.fetched(61) == []
    assert await rec.fetched(60, 61) == [60, 61]


async def test_a_partition_revoked_meanwhile_is_not_sought(rec: Recorder) -> None:
    await rec.fetched_in_rebalance(74)
    rec.assigned = set()
    rec.consumer.resume_flow()
    assert rec.seeks == []
    assert rec.consumer._holes == {}


async def test_a_record_that_never_comes_back_stops_blocking_after_a_while(
    rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rec.fetched_in_rebalance(74)
    rec.consumer.resume_flow()
    assert await rec.fetched(90) == []
    monkeypatch.setattr(streams.consumer_holes, "HOLE_GIVE_UP_S", 0.0)
    assert await rec.fetched(91, 92) == [91, 92]


async def test_the_stall_repair_keeps_later_records_from_overtaking(
    rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams.consumer, "GAP_REPAIR_S", 0.0)
    consumer = rec.consumer
    consumer._committed_offset[TP0] = 10
    consumer._acked[TP0].extend([12, 13])
    consumer._acked_index[TP0].update([12, 13])
    assert consumer._new_offset(TP0) is None  # 10 and 11 never done: re-read from 10
    await asyncio.sleep(0)
    assert rec.seeks == [(TP0, 10)]
    assert await rec.fetched(14) == []  # already on its way, fetched before the seek
    assert await rec.fetched(10, 11, 12, 13, 14) == [10, 11, 12, 13, 14]


def _queued(offset: int) -> SimpleNamespace:
    return SimpleNamespace(message=SimpleNamespace(tp=TP0, offset=offset, generation_id=0))


async def test_records_emptied_from_a_stream_buffer_are_read_again(rec: Recorder) -> None:
    app = rec.consumer.app
    buffer = app.FlowControlQueue(maxsize=10, clear_on_resume=True)
    events = [_queued(o) for o in (40, 41)]
    for event in events:
        buffer.put_nowait(event)
    # The end of a fresh assignment's recovery: the partitions fetch, then Faust resumes the
    # flow control, which empties the buffers.
    app.flow_control.resume()
    assert buffer.qsize() == 0
    assert rec.seeks == [(TP0, 40)]  # records flow already: sought at once
    assert all(e.message.generation_id == streams.consumer_holes.LOST_GENERATION for e in events)
    assert await rec.fetched(42) == []
    assert await rec.fetched(40, 41, 42) == [40, 41, 42]


async def test_acks_of_records_to_be_read_again_do_not_count(
    rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = rec.consumer
    monkeypatch.setattr(consumer.app.topics, "acks_enabled_for", lambda topic: True)  # a stage's
    consumer._committed_offset[TP0] = 40
    await rec.fetched_in_rebalance(40, 41)
    lost = Msg(tp=TP0, offset=41, generation_id=0, acked=False)
    assert consumer.ack(lost) is False  # the stream skipped it: its copy's ack will count
    old = Msg(tp=TP0, offset=39, generation_id=7, acked=False)
    assert consumer.ack(old) is False  # fetched under an earlier assignment
    assert list(consumer._acked[TP0]) == []
    rec.consumer.resume_flow()
    assert await rec.fetched(40) == [40]
    copy = Msg(tp=TP0, topic=TP0.topic, offset=40, generation_id=0, acked=False)
    assert consumer.ack(copy) is True
    assert consumer._new_offset(TP0) == 41


async def test_a_record_put_in_a_buffer_after_it_was_emptied_is_read_again(
    rec: Recorder,
) -> None:
    app = rec.consumer.app
    room = asyncio.Event()

    async def full_buffer(message: Any) -> None:
        await room.wait()  # the buffer is full; the put completes after the emptying

    rec.consumer._to_streams = full_buffer
    delivery = asyncio.ensure_future(rec.fetched(50))
    await asyncio.sleep(0.01)
    app.flow_control.resume()  # empties the (other) buffers meanwhile
    room.set()
    await delivery
    assert rec.seeks == [(TP0, 50)]  # the flow is on: sought at once
    assert rec.consumer._holes[TP0].offset == 50


async def test_a_hole_whose_record_does_not_come_back_is_sought_again(
    rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rec.fetched_in_rebalance(74)
    rec.consumer.resume_flow()
    assert rec.seeks == [(TP0, 74)]
    rec.consumer._new_offset(TP0)  # a commit soon after: the record may still be on its way
    assert rec.seeks == [(TP0, 74)]
    monkeypatch.setattr(streams.consumer_holes, "HOLE_RESEEK_S", 0.0)
    rec.consumer._new_offset(TP0)  # the seek raced the fetcher and was lost: seek again
    assert rec.seeks == [(TP0, 74), (TP0, 74)]
    assert await rec.fetched(74) == [74]
    rec.consumer._new_offset(TP0)  # closed: no more seeks
    assert rec.seeks == [(TP0, 74), (TP0, 74)]
