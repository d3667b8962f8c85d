"""The ops role's side of ``paybus.dlq``: the pending-letter gauges and the automatic replay.

One :class:`~streams.dlq_watch.DlqWatch` follows the DLQ (without a group) for both. Its
gauges say how many letters wait for a human (``paybus_dlq_pending_letters``) and how many
for the bus itself (``paybus_dlq_scheduled_letters``). A timer replays the letters whose
``retry_at`` has passed (:mod:`streams.auto_replay`) with :func:`streams.dlq_store.replay`,
the code ``paybus dlq replay`` runs, so a replay marker closes each one.

With several ops workers each would replay every due letter, and each replay that failed
again would be scheduled again: copies doubling at every step of the schedule. So a worker
replays only the letters on the DLQ partitions whose number matches a partition of
``paybus.payments.status`` it is assigned (the janitor consumes that topic in the ops role's
group, so each partition has one owner). During a rebalance two workers may both replay a
letter: harmless, like any repeat (the events' ids are the PSP's).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from streams import auto_replay, metrics
from streams.app import PaybusApp
from streams.dlq_store import Letter, replay
from streams.dlq_watch import DlqWatch

log = logging.getLogger("streams.dlq_watch")


class DlqStage:
    """The DLQ gauges (refreshed every ``lag_refresh_s``) and the automatic replay (every
    ``ops.dlq_auto_replay_interval_s``; off with ``ops.dlq_auto_replay_max_letters`` 0)."""

    def __init__(self, app: PaybusApp) -> None:
        self.app = app
        ops = app.settings.ops
        self.bootstrap = app.settings.bootstrap_servers
        self.status_topic = app.topic_map.status_updates
        self.watch = DlqWatch(
            self.bootstrap,
            app.topic_map.dlq.name,
            keep=ops.dlq_auto_replay_max_letters,
            grace=auto_replay.overdue_after(ops.dlq_auto_replay_interval_s),
        )
        # One reader of the DLQ per bus is enough; with several ops workers each reports the
        # same counts: alert on ``max``.
        REGISTRY.register(self.watch)
        app.timer(app.settings.lag_refresh_s, name="paybus.dlq.watch")(self.refresh)
        if ops.dlq_auto_replay_max_letters:
            app.timer(ops.dlq_auto_replay_interval_s, name="paybus.dlq.auto_replay")(
                self.replay_due
            )

    async def refresh(self) -> None:
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.watch.refresh)
        except Exception as exc:  # the gauge goes quiet; the next tick reads from the start
            log.warning("reading %s for the pending-letter gauge failed: %s", self.watch.topic,
                        exc)  # fmt: skip

    async def replay_due(self) -> None:
        """Replay the due letters this worker owns (the DLQ read and the replay run in a
        thread: blocking Kafka I/O)."""
        owned = self._owned()
        if not owned:
            return  # not assigned yet (or lost it in a rebalance): another worker replays
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._replay_due, owned)
        except Exception as exc:  # reading the DLQ failed: the next tick reads it again
            log.warning("automatic replay: reading %s failed: %s", self.watch.topic, exc)

    def _owned(self) -> frozenset[int]:
        try:
            assigned = self.app.consumer.assignment()
        except Exception:  # consumer not started yet
            return frozenset()
        return frozenset(tp.partition for tp in assigned if tp.topic == self.status_topic.name)

    def _replay_due(self, owned: frozenset[int]) -> None:
        self.watch.refresh()
        partitions = self.status_topic.partitions
        due = self.watch.due(datetime.now(UTC), lambda p: p % partitions in owned)
        if not due:
            return
        try:
            done = replay(
                self.bootstrap, self.watch.topic, due,
                headers=_headers, how="replayed automatically",
            )  # fmt: skip
        except Exception as exc:  # those not marked are due again at the next tick
            done = [letter for letter in due if letter.resolved]
            failed = [letter for letter in due if not letter.resolved]
            for letter in failed:
                metrics.DLQ_AUTO_REPLAYS.labels(_stage(letter), auto_replay.FAILED).inc()
            log.warning("automatic replay of %d dead letter(s) failed (next tick tries again): "
                        "%s", len(failed), exc)  # fmt: skip
        self.watch.closed(done)
        for letter in done:
            metrics.DLQ_AUTO_REPLAYS.labels(_stage(letter), auto_replay.REPLAYED).inc()
            log.info("dead letter %s replayed automatically (attempt %s) to %s", letter.id,
                     letter.record.get("attempts"), letter.record["original_topic"])  # fmt: skip


def _headers(letter: Letter) -> list[tuple[str, bytes]]:
    return auto_replay.replay_headers(letter.record)


def _stage(letter: Letter) -> str:
    return str(letter.record.get("stage"))
