"""The worker's Kafka consumer: Faust's, with what it commits and delivers made safe.

Faust's consumer has three habits that lose or reorder records, each seen on the embedded
broker and each fixed here:

* **Commits over records not yet done.** Faust lets a run of acked offsets start one past the
  committed offset, so a record acked late could be committed over before it was processed
  (:meth:`_Consumer._new_offset`).
* **Skipping by "last offset read".** Across a rebalance a batch fetched before the seek to
  committed offsets can be delivered after it; Faust then skipped the re-fetched records and
  committed over them as a gap (:class:`_NoReadOffsets`).
* **Records fetched and then thrown away, with nothing to read them again.** Around a
  rebalance Faust empties its stream buffers after the seek to committed offsets, with the
  fetch position already past what it empties; each such record leaves a *hole* that reads it
  again in order (:mod:`streams.consumer_holes`).

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
from typing import TYPE_CHECKING, Any

import aiokafka
from faust.transport.drivers import aiokafka as faust_aiokafka
from mode.services import WaitResults

from streams import eager
from streams.consumer_holes import Hole, HoleTracking, message_of
from streams.consumer_waits import DeliberateWaits
from streams.offsets import fetch_highwaters

if TYPE_CHECKING:
    from streams.app import PaybusApp

log = logging.getLogger(__name__)

#: The code of ``asyncio.Event.wait``: how the fetcher's ``suspend_flow.wait()`` is recognised.
_SUSPEND_WAIT_CODE = asyncio.Event.wait.__code__

#: Seconds a partition's commit may wait on a record that later records overtook before the
#: partition is re-read from its committed offset (longer than any batch takes to process).
GAP_REPAIR_S = 30.0


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Consumer thread whose fetch max wait comes from settings (Faust hard-codes 1.5 s), and
    that stops when its broker is gone.

    With the broker unreachable, aiokafka's fetch task spends nearly all its time in a retry
    backoff sleep that its own ``CancelledError`` handler does not cover, so
    ``Fetcher.close`` (which cancels each pending fetch and awaits it) re-raises the
    cancellation from ``consumer.stop()``. mode's thread treats only ``Exception`` as a failed
    thread, so the parent never hears that the thread shut down and the worker ignores
    SIGTERM and SIGINT for good (measured: still running minutes later, as Kubernetes would
    see a pod that only SIGKILL ends). Both holes are closed here.
    """

    def _start_thread(self) -> None:
        try:
            super()._start_thread()
        except asyncio.CancelledError:
            self.set_shutdown()  # what mode does for an Exception: let the parent go on
            raise

    async def on_thread_stop(self) -> None:
        try:
            await super().on_thread_stop()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the thread itself is being cancelled
            log.warning("Kafka consumer stopped with fetches still retrying an unreachable broker")
            consumer = self._consumer
            if consumer is not None:
                await consumer._client.close()  # what consumer.stop() did not get to

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        paybus: PaybusApp = self.app  # type: ignore[assignment]
        consumer._fetch_max_wait_ms = paybus.settings.effective_fetch_max_wait_ms
        return consumer

    def verify_event_path(self, now: float, tp: Any) -> None:
        """Faust's stall check (an ERROR per partition every 1.25 s once a stream has not
        moved for ``stream_processing_timeout``, 5 min), except for partitions whose stage
        waits on purpose: through a CRM outage its own warning says why, once a retry."""
        consumer: Any = self.consumer
        if consumer.waiting_deliberately(tp):
            return None
        return super().verify_event_path(now, tp)

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


class _Consumer(HoleTracking, DeliberateWaits, faust_aiokafka.Consumer):
    """Faust's consumer, with fixes to what it commits and delivers (see the module doc),
    that stays in its group while a stage waits on purpose (:mod:`streams.consumer_waits`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = _NoReadOffsets()
        self._gap_seen: dict[Any, float] = {}
        self._repairs: set[asyncio.Future[Any]] = set()
        self._init_holes()
        self._init_waits()

    async def _seek(self, partition: Any, offset: int) -> None:
        """Seek on the consumer's own thread, as Faust's other calls into aiokafka do.

        Faust seeks from the caller's thread, and aiokafka's seek deletes the partition's
        fetched records (``Fetcher.seek_to``) while the consumer thread may be between
        reading and deleting the same entry in ``Fetcher.fetched_records``: the KeyError
        crashed the fetcher and with it the worker (seen after a kill -9 restart, when this
        module's hole and gap repairs seek while the restarted worker fetches its backlog)."""
        thread: Any = self._thread
        await thread.call_thread(thread.seek, partition, offset)

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
            message = message_of(deliver)  # waiting in the buffer: the frame is still there
            runner = asyncio.ensure_future(eager.finish(deliver, pending))
        else:
            message = message_of(deliver)
        results: WaitResults = await super().wait_first(runner, suspend)
        # Dropped, or put in a stream buffer while the flow was suspended: Faust empties
        # those buffers when the flow resumes, so either way the record never reaches a stage.
        if message is not None and (runner not in results.done or self.suspend_flow.is_set()):
            self._lost(message)
        return results

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
        slow (a long PSP call) is delivered twice at worst; none is re-read while its stage
        waits on purpose (``waiting_on``: the CRM writer through an outage), and the wait
        starts over after it.
        """
        now = time.monotonic()
        if self.waiting_deliberately(tp):  # its stage holds the record: not stalled
            self._gap_seen.pop(tp, None)
            return
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
        hole = self._holes.setdefault(tp, Hole(committed, seek_needed=False))
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


class _Producer(faust_aiokafka.Producer):
    """Faust's producer, whose stop gives up on unacknowledged records when the app's
    ``stop_flush_timeout_s`` is up (aiokafka's ``stop`` flushes without a bound)."""

    async def on_stop(self) -> None:
        producer = self._producer
        paybus: PaybusApp = self.app  # type: ignore[assignment]
        try:
            await asyncio.wait_for(super().on_stop(), paybus.stop_wait_left())
        except TimeoutError:
            log.warning("Kafka producer stopped with records unacknowledged")
            if producer is not None:
                await producer.client.close()


class Transport(faust_aiokafka.Transport):
    """Faust's aiokafka transport with the consumer and producer above."""

    Consumer = _Consumer
    Producer = _Producer
