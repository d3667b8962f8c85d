"""The worker's Kafka consumer: Faust's, with what it commits and delivers made safe.

Faust's consumer has three habits that lose or reorder records, each seen on the embedded
broker and each fixed here:

* **Commits over records not yet done.** Faust lets a run of acked offsets start one past the
  committed offset, so a record acked late could be committed over before it was processed
  (:meth:`_Consumer._new_offset`).
* **Skipping by "last offset read".** Across a rebalance a batch fetched before the seek to
  committed offsets can be delivered after it; Faust then skipped the re-fetched records and
  committed over them as a gap (:class:`_NoReadOffsets`).
* **Records fetched and then thrown away, with nothing to read them again.** Faust empties the
  stream buffers on a rebalance and again whenever the flow resumes, and drops a record whose
  hand-over a suspension interrupts, counting on a seek to committed offsets to fetch them
  again. But at the end of an assignment's recovery it resumes the streams' partitions, seeks,
  and only then empties the buffers, and the fetch runs in the consumer's own thread: records
  fetched after the seek are emptied away with the fetch position already past them. Measured
  on the sequencer recovery test: ~48 records per partition never reached the stage, the
  commits stuck, and when the partitions were read again 30 s later the later records had
  overtaken them, so the stage saw histories out of order and dropped events as stale. Now
  each such record leaves a *hole*: its partition is sought back to it, nothing after it is
  delivered until it has been, and a copy of it still on its way is skipped
  (:meth:`_Consumer._deliver`, :meth:`_Consumer._watch_buffers`, :meth:`_Consumer.ack`).

Every paybus stage is idempotent (event-id dedup, idempotency keys, version guard), so a record
delivered twice in order is harmless; what must never happen is a later record of a partition
reaching a stage before an earlier one it has not seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

from streams import eager
from streams.offsets import fetch_highwaters

if TYPE_CHECKING:
    from streams.app import PaybusApp

log = logging.getLogger(__name__)

#: The code of ``asyncio.Event.wait``: how the fetcher's ``suspend_flow.wait()`` is recognised.
_SUSPEND_WAIT_CODE = asyncio.Event.wait.__code__

#: Seconds a partition's commit may wait on a record that later records overtook before the
#: partition is re-read from its committed offset (longer than any batch takes to process).
GAP_REPAIR_S = 30.0

#: Seconds a hole may wait for its record before later records are let through anyway (the
#: record was deleted by retention, say, and the fetcher restarted past it).
HOLE_GIVE_UP_S = 120.0

#: Seconds a hole may wait for its record, with records flowing, before its partition is
#: sought again (a seek that raced the fetcher's own position update is not lost for good).
HOLE_RESEEK_S = 5.0

#: The generation given to a record that is to be read again: Faust's streams skip a record
#: whose generation is not the consumer's, so a copy of it still on its way is dropped.
LOST_GENERATION = -1


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Consumer thread whose fetch max wait comes from settings (Faust hard-codes 1.5 s)."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        paybus: PaybusApp = self.app  # type: ignore[assignment]
        consumer._fetch_max_wait_ms = paybus.settings.effective_fetch_max_wait_ms
        return consumer

    async def _highwaters(self, partitions: list[Any]) -> Mapping[Any, int]:
        """End offsets for changelog recovery; from fetch responses where ListOffsets is wrong."""
        listed = await super()._highwaters(partitions)
        paybus: PaybusApp = self.app  # type: ignore[assignment]
        if paybus.settings.effective_end_offsets != "fetch":
            return listed
        return await fetch_highwaters(paybus.settings.bootstrap_servers, listed)


class _NoReadOffsets(dict[Any, Any]):
    """Faust's "last offset read" per partition, deliberately never remembered.

    Faust skips a fetched record whose offset is below the last one read, and treats a jump
    above it as a gap that it later commits as if processed. Across a rebalance a batch fetched
    before the seek to committed offsets can be delivered after it: Faust then skips the
    re-fetched records and commits over the gap, so records are acknowledged that no stage ever
    saw (measured: 2-12 of 2,000 intents lost under repeated kill -9 on the embedded broker).
    The worker takes every record aiokafka returns instead; holes (see the module doc) keep
    the order.
    """

    def __getitem__(self, key: Any) -> None:
        return None

    def __setitem__(self, key: Any, value: Any) -> None:
        return None


@dataclass
class _Hole:
    """A partition's first record that was fetched but never delivered to its stream."""

    offset: int
    seek_needed: bool = True  # the fetch position may be past it: seek before the flow resumes
    since: float = field(default_factory=time.monotonic)
    sought_at: float = field(default_factory=time.monotonic)


def _message_of(deliver: Any) -> Any:
    """The record a ``_deliver(message)`` coroutine carries (None once it has finished)."""
    frame = getattr(deliver, "cr_frame", None)
    return None if frame is None else frame.f_locals.get("message")


class _Consumer(faust_aiokafka.Consumer):
    """Faust's consumer, with fixes to what it commits and delivers (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = _NoReadOffsets()
        self._gap_seen: dict[Any, float] = {}
        self._repairs: set[asyncio.Future[Any]] = set()
        self._holes: dict[Any, _Hole] = {}
        self._clears = 0
        self._to_streams = self.callback
        self.callback = self._deliver
        self._watch_buffers(self.app.flow_control)

    def _watch_buffers(self, flow_control: Any) -> None:
        """Make every emptying of the stream buffers leave holes for the records in them.

        Faust empties them on a rebalance and again whenever the flow resumes; on a fresh
        assignment the streams' partitions are already fetching by then."""
        clear = flow_control.clear

        def clear_and_remember() -> None:
            self._clears += 1
            for queue in list(flow_control._queues):
                for item in list(getattr(queue, "_queue", ())):
                    message = getattr(item, "message", None)
                    if message is not None:
                        self._lost(message, seek=False)
            clear()
            if not self.suspend_flow.is_set():  # records flow: seek now, not at a resume
                self._seek_holes()

        flow_control.clear = clear_and_remember

    def _lost(self, message: Any, *, seek: bool = True) -> None:
        """``message`` will not reach its stage this time: read its partition again from it
        (seeking at once unless the flow is suspended: then :meth:`resume_flow` does), and
        make sure a copy of it still on its way is skipped by the stream."""
        message.generation_id = LOST_GENERATION
        self._hole_at(message.tp, message.offset)
        if seek and not self.suspend_flow.is_set():
            self._seek_holes()

    async def _deliver(self, message: Any) -> Any:
        """Hand ``message`` to its streams unless its partition has a hole before it.

        A record after a hole is dropped (the seek to the hole fetches it again, in order); the
        record at the hole closes it. Records before the hole are delivered: they come from a
        seek further back and are in order."""
        tp = message.tp
        hole = self._holes.get(tp)
        if hole is not None:
            if message.offset > hole.offset:
                if time.monotonic() - hole.since < HOLE_GIVE_UP_S:
                    return None
                log.warning(
                    "%s[%d]: record %d never came back; going on from %d",
                    tp.topic, tp.partition, hole.offset, message.offset,
                )  # fmt: skip
                del self._holes[tp]
            elif message.offset == hole.offset:
                del self._holes[tp]
        clears = self._clears
        try:
            return await self._to_streams(message)
        finally:
            if self._clears != clears:  # put in a buffer that was emptied meanwhile, or after
                self._lost(message)

    def ack(self, message: Any) -> bool:
        """Faust's ack, except for a record that is to be read again (at or after a hole of
        its partition, or fetched before the current assignment): its next copy's ack counts.

        Faust's streams ack the records they skip (fetched before a rebalance, or marked lost
        here); counting those acks could commit over a record before any stage has seen it."""
        hole = self._holes.get(message.tp)
        generation = getattr(message, "generation_id", None)
        stale = generation is not None and generation != self.app.consumer_generation_id
        if stale or (hole is not None and message.offset >= hole.offset):
            message.acked = True
            self._unacked_messages.discard(message)
            return False
        acked: bool = super().ack(message)
        return acked

    def _hole_at(self, tp: Any, offset: int) -> None:
        """Record that the record at ``offset`` of ``tp`` was fetched and not delivered."""
        hole = self._holes.get(tp)
        if hole is None or offset < hole.offset:
            if hole is None:
                from streams import metrics

                metrics.UNDELIVERED_REREADS.labels(tp.topic).inc()
                log.info("%s[%d]: record %d not delivered; reading it again", tp.topic,
                         tp.partition, offset)  # fmt: skip
            self._holes[tp] = _Hole(offset)
        else:
            hole.seek_needed = True

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        """Faust's per-record ``wait_first(deliver(record), suspend_flow.wait())``, eagerly,
        and remembering a record it drops.

        A delivery that completes without waiting (the stream buffer has room) costs no task
        and no futures; one that must wait goes on as a task through the original path, so a
        rebalance can still interrupt it (see :mod:`streams.eager`). A record handed over while
        the flow is suspended leaves a hole (see the module doc)."""
        if not (
            len(coros) == 2
            and timeout is None
            and getattr(coros[1], "cr_code", None) is _SUSPEND_WAIT_CODE
            and asyncio.iscoroutine(coros[0])
        ):
            return await super().wait_first(*coros, timeout=timeout)
        deliver, suspend = coros
        runner: Any = deliver
        if not self.suspend_flow.is_set():
            done, pending = eager.step(deliver)
            if done:
                suspend.close()
                return WaitResults([deliver], [pending], False)
            message = _message_of(deliver)  # waiting in the buffer: the frame is still there
            runner = asyncio.ensure_future(eager.finish(deliver, pending))
        else:
            message = _message_of(deliver)
        results: WaitResults = await super().wait_first(runner, suspend)
        # Dropped, or put in a stream buffer while the flow was suspended: Faust empties
        # those buffers when the flow resumes, so either way the record never reaches a stage.
        if message is not None and (runner not in results.done or self.suspend_flow.is_set()):
            self._lost(message)
        return results

    def resume_flow(self) -> None:
        """Seek each partition with a hole back to it, then let records flow again: the fetch
        position may be past records dropped while the flow was suspended."""
        self._seek_holes()
        super().resume_flow()

    def _seek_holes(self) -> None:
        try:
            assigned = set(self.assignment())
        except Exception:  # no consumer yet
            assigned = set()
        for tp, hole in list(self._holes.items()):
            if tp not in assigned:
                del self._holes[tp]  # its new owner reads it from the committed offset
            elif hole.seek_needed:
                hole.seek_needed = False
                self._seek_now(tp, hole.offset)

    def _seek_now(self, tp: Any, offset: int) -> None:
        """Move the fetch position of ``tp`` at once (aiokafka's seek only sets state)."""
        hole = self._holes.get(tp)
        if hole is not None:
            hole.sought_at = time.monotonic()
        try:
            self._thread.seek(tp, offset)
        except Exception as exc:  # revoked in the meantime: its next owner reads it
            log.warning("%s[%d]: seek to %d failed: %r", tp.topic, tp.partition, offset, exc)
            self._holes.pop(tp, None)

    async def seek(self, partition: Any, offset: int) -> None:
        """Faust's seek; a hole of the partition moves back with it (records before the hole
        and after ``offset`` may not have been done either)."""
        self._hole_below(partition, offset)
        await super().seek(partition, offset)

    def _hole_below(self, tp: Any, offset: int) -> None:
        hole = self._holes.get(tp)
        if hole is not None and offset < hole.offset:
            hole.offset = offset

    def _new_offset(self, tp: Any) -> int | None:
        """The offset to commit: the end of the run of acked offsets that starts exactly at
        the committed offset, or None while the record at the committed offset is not done.

        Faust lets a run start one past the committed offset (its head-gap test is
        ``min(acked) - committed > 1``) and skips the test when the committed offset is 0 or
        unknown. Acks are not always in offset order: records a worker finished after their
        partition was revoked, or a batch fetched before a rebalance's seek, are acked ahead
        of the re-fetched record at the committed offset. Committing past that record before
        it is processed loses it for good when the worker then dies (measured: 1-3 of 2,000
        intents under repeated kill -9). Acks below the committed offset (work done twice) are
        dropped here so the run is measured from the committed offset.
        """
        self._reseek_late_hole(tp)
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if committed is not None:
            below = [o for o in acked if o < committed]
            if below:
                acked[:] = [o for o in acked if o >= committed]
                self._acked_index[tp].difference_update(below)
            if not acked or min(acked) > committed:
                if acked or self._waiting(tp, committed):
                    self._repair_gap(tp, committed)
                else:
                    self._gap_seen.pop(tp, None)
                return None
        self._gap_seen.pop(tp, None)
        result: int | None = super()._new_offset(tp)
        return result

    def _reseek_late_hole(self, tp: Any) -> None:
        """Seek ``tp`` to its hole again when records flow and its record has not come back
        within :data:`HOLE_RESEEK_S` (checked at every commit)."""
        hole = self._holes.get(tp)
        if hole is None or hole.seek_needed or self.suspend_flow.is_set():
            return
        if time.monotonic() - hole.sought_at >= HOLE_RESEEK_S:
            log.warning(
                "%s[%d]: record %d not back %.0fs after the seek to it; seeking again",
                tp.topic, tp.partition, hole.offset, time.monotonic() - hole.sought_at,
            )  # fmt: skip
            self._seek_now(tp, hole.offset)

    def _filter_tps_with_pending_acks(self, topics: Any = None) -> Any:
        """Faust's partitions with acks to commit, plus every assigned partition of a stage,
        so :meth:`_new_offset` also sees a partition where nothing is acked at all."""
        tps = set(self._acked)
        with contextlib.suppress(Exception):  # no assignment yet
            tps.update(tp for tp in self.assignment() if self.app.topics.acks_enabled_for(tp.topic))
        return (tp for tp in tps if topics is None or tp in topics or tp.topic in topics)

    def _waiting(self, tp: Any, committed: int) -> bool:
        """Whether records wait beyond the committed offset (the last fetch's high-water
        mark): with none acked, the partition is stalled, or its records are in flight.
        Never for ``paybus.retry``, whose stage holds parked envelopes unacked until due."""
        paybus: PaybusApp = self.app  # type: ignore[assignment]
        if tp.topic == paybus.topic_map.retry.name:
            return False
        try:
            return int(self.highwater(tp)) > committed
        except Exception:  # not fetched yet, or just revoked
            return False

    def _repair_gap(self, tp: Any, committed: int) -> None:
        """Re-read ``tp`` from ``committed`` when the record there has stayed undone for
        :data:`GAP_REPAIR_S` while later records were done, or while records waited in the
        partition and none of them was done.

        The last resort behind the holes: holding the commit keeps the record from being lost,
        but if it was never delivered nothing would ever ack it and the partition's commit
        would stay stuck until a restart. Seeking back delivers it (and the records after it)
        again, and a hole at it keeps records already on their way from overtaking it; every
        stage is idempotent, so the repeats cost time, not correctness. A record that is merely
        slow (a long PSP call) is delivered twice at worst.
        """
        now = time.monotonic()
        since = self._gap_seen.setdefault(tp, now)
        if now - since < GAP_REPAIR_S:
            return
        self._gap_seen[tp] = now
        from streams import metrics

        metrics.OFFSET_GAP_REPAIRS.labels(tp.topic).inc()
        log.warning(
            "%s[%d]: offset %d still not processed %.0fs after later records were; "
            "re-reading the partition from it",
            tp.topic, tp.partition, committed, now - since,
        )  # fmt: skip
        hole = self._holes.setdefault(tp, _Hole(committed, seek_needed=False))
        hole.offset = min(hole.offset, committed)
        repair = asyncio.ensure_future(self.seek(tp, committed))
        self._repairs.add(repair)
        repair.add_done_callback(self._repairs.discard)

    async def perform_seek(self) -> None:
        """Seek to the committed offsets (holes move back with them) and, for partitions never
        committed, take the log start as the committed offset, so :meth:`_new_offset` always
        has a base to check runs against (the group starts there: ``auto_offset_reset`` is
        ``earliest``). Stall timers start over: the assignment is new."""
        self._gap_seen.clear()
        await super().perform_seek()
        for tp in list(self._holes):
            committed = self._committed_offset.get(tp)
            if committed is not None:
                self._hole_below(tp, committed)
        unknown = [
            tp
            for tp in self.assignment()
            if self._committed_offset.get(tp) is None and self.app.topics.acks_enabled_for(tp.topic)
        ]
        if not unknown:
            return
        try:
            earliest = await self.earliest_offsets(*unknown)
        except Exception as exc:  # the broker is busy; Faust's own rule applies meanwhile
            log.warning("log start offsets of %d partition(s) unknown: %r", len(unknown), exc)
            return
        for tp, offset in earliest.items():
            if offset is not None and offset >= 0 and self._committed_offset.get(tp) is None:
                self._committed_offset[tp] = offset

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the consumer above."""

    Consumer = _Consumer
