"""Holes: records a worker fetched that never reached their stage, read again in order.

Faust empties the stream buffers on a rebalance and again whenever the flow resumes, and drops
a record whose hand-over a suspension interrupts, counting on a seek to committed offsets to
fetch them again. At the end of an assignment's recovery it resumes the streams' partitions,
seeks, and only then empties the buffers, while the fetch runs in the consumer's own thread:
records fetched after the seek are emptied away with the fetch position already past them
(measured on the sequencer recovery test: ~48 records per partition never reached the stage;
read again 30 s later, later records had overtaken them and the stage dropped events as
stale). Each such record leaves a *hole*: its partition is sought back to it, nothing after it
is delivered until it has been, a copy of it still on its way is skipped, and the acks Faust
gives the records it skips do not count. :class:`HoleTracking` is mixed into the worker's
consumer (:mod:`streams.consumer`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faust.transport.drivers import aiokafka as faust_aiokafka

log = logging.getLogger(__name__)

#: Seconds a hole may wait for its record before later records are let through anyway (the
#: record was deleted by retention, say, and the fetcher restarted past it).
HOLE_GIVE_UP_S = 120.0

#: Seconds a hole may wait for its record, with records flowing, before its partition is
#: sought again (a seek that raced the fetcher's own position update is not lost for good).
HOLE_RESEEK_S = 5.0

#: The generation given to a record that is to be read again: Faust's streams skip a record
#: whose generation is not the consumer's, so a copy of it still on its way is dropped.
LOST_GENERATION = -1


@dataclass
class Hole:
    """A partition's first record that was fetched but never delivered to its stream."""

    offset: int
    seek_needed: bool = True  # the fetch position may be past it: seek before the flow resumes
    since: float = field(default_factory=time.monotonic)
    sought_at: float = field(default_factory=time.monotonic)


def message_of(deliver: Any) -> Any:
    """The record a ``_deliver(message)`` coroutine carries (None once it has finished)."""
    frame = getattr(deliver, "cr_frame", None)
    return None if frame is None else frame.f_locals.get("message")


if TYPE_CHECKING:
    _Base = faust_aiokafka.Consumer
else:
    _Base = object


class HoleTracking(_Base):
    """The hole bookkeeping of a Faust consumer; call :meth:`_init_holes` from ``__init__``."""

    def _init_holes(self) -> None:
        self._holes: dict[Any, Hole] = {}
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
            self._holes[tp] = Hole(offset)
        else:
            hole.seek_needed = True

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
