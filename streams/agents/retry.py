"""The retry stage: re-drives commands parked on ``paybus.retry``, in order, when due.

Envelopes are consumed without automatic acks and held in memory (:class:`RetryQueue`) until
their command is finished, so the committed offset of ``paybus.retry`` never passes unfinished
work: a crash or a rebalance makes the new owner read them again. Which envelope may run is
decided by the ``parked`` table (shared with the connector workers): only the first origin
listed for an aggregate, and only once due. Parked commands are executed here rather than
re-injected into the command topic, because a re-injected command lands behind commands of the
same payment that arrived meanwhile. The rules and the crash-safety argument are in
:mod:`streams.parking`.

Direct debits held for their collection date (stage ``scheduled``) are released in bounded
batches: at most ``ops.collection_batch_size`` per ``ops.collection_interval_s``, with a log
record for every run and every submission.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
from faust.types import EventT

from streams import metrics, parking
from streams.agents.commands import Shared
from streams.agents.common import as_current, error_kind
from streams.agents.guard import guarded
from streams.app import PaybusApp
from streams.deadletters import make_dead_letter
from streams.kafka_headers import header_text
from streams.parking import Parked, RetryQueue
from streams.records import PaymentCommand, RetryEnvelope, codec_name
from streams.secrets_check import key_fingerprint

log = logging.getLogger(__name__)

#: How often due heads are looked for (the retry schedule's resolution).
TICK_S = 0.2
#: Commands re-driven at once across aggregates (each aggregate one at a time).
CONCURRENCY = 16
#: Back-off after an unexpected error, so a bug does not spin.
BUG_BACKOFF_S = 5.0


def _psp_of(env: RetryEnvelope) -> str:
    """The PSP whose command an envelope holds."""
    return parking.psp_of_topic(env.original_topic)


class RetryStage:
    def __init__(self, app: PaybusApp, *_: Any) -> None:
        metrics.expect_dead_letters("retry")
        self.app = app
        self.shared = Shared.of(app)
        self.queue = RetryQueue()
        self.busy: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stream: Any = None
        ops = app.settings.ops
        self.batch_size = ops.collection_batch_size
        self.budget = ops.collection_batch_size
        #: Envelopes parked for refused credentials before this worker started (which may
        #: hold new ones) run at once.
        self.started_at = datetime.now(UTC)
        #: PSPs whose credentials gauge this worker has set (set to 0 once none is held).
        self.refused_psps: set[str] = set()
        #: This worker's key fingerprint per PSP (see :meth:`_own_key`).
        self.own_keys: dict[str, str | None] = {}
        app.agent(self.shared.retry_topic, name="paybus.retry")(self.process)
        app.timer(TICK_S, name="paybus.retry.tick")(self.tick)
        app.timer(ops.collection_interval_s, name="paybus.collection.run")(self.collection_run)

    async def process(self, stream: faust.StreamT[RetryEnvelope]) -> AsyncIterator[None]:
        manual = cast(Any, stream).noack()
        self.stream = manual
        async for event in manual.events():
            await guarded("retry", self.offer, event)
            yield None

    async def offer(self, event: EventT[RetryEnvelope]) -> None:
        env = cast(RetryEnvelope, event.value)
        key = event.key if isinstance(event.key, str) else env.aggregate_id
        origin = parking.origin_id(env.original_topic, env.original_partition, env.original_offset)
        due = env.due_at if env.due_at.tzinfo else env.due_at.replace(tzinfo=UTC)
        scheduled = parked_for = None
        if env.stage == parking.SCHEDULED:
            due = self._collection_due(env) or due
        elif env.stage == parking.RETRY:
            headers = event.message.headers
            parked_for = header_text(headers, parking.PARKED_FOR_HEADER)
            sooner = parking.due_for(
                due,
                parked_for=parked_for,
                parked_at=datetime.fromtimestamp(event.message.timestamp, UTC),
                started_at=self.started_at,
                now=datetime.now(UTC),
                refused_key=header_text(headers, parking.REFUSED_KEY_HEADER),
                own_key=self._own_key(_psp_of(env)),
            )
            if sooner < due:
                scheduled, due = due, sooner
        item = Parked(
            key, origin, env.attempt, due, env.stage, handle=event, scheduled=scheduled,
            parked_for=parked_for,
        )  # fmt: skip
        verdict, replaced = self.queue.offer(item, self.shared.listed(key))
        if verdict != "held":
            metrics.RETRIES.labels("retry", verdict).inc()
            await self._ack(event)
        if replaced is not None:
            metrics.RETRIES.labels("retry", "superseded").inc()
            await self._ack(replaced.handle)

    def _collection_due(self, env: RetryEnvelope) -> datetime | None:
        try:
            command = self._command(env)
            lead = self.app.settings.ops.collection_lead_days
            return parking.collection_due(command.charge_date or "", lead)
        except Exception:
            return None

    async def _ack(self, event: EventT[Any]) -> None:
        if self.stream is not None:
            await self.stream.ack(event)

    async def collection_run(self) -> None:
        """Open the next batch of scheduled collections and log what is waiting."""
        now = datetime.now(UTC)
        held = [p for p in self.queue.items() if p.stage == parking.SCHEDULED]
        due = [p for p in held if p.due_at <= now]
        self.budget = self.batch_size
        if held:
            log.info(
                "collection run: %d held, %d due, releasing up to %d",
                len(held), len(due), self.budget,
            )  # fmt: skip

    async def tick(self) -> None:
        """Start the due heads; forget envelopes of partitions this worker no longer owns."""
        self._forget_revoked()
        now = datetime.now(UTC)
        # counted as started, not as read: after a restart the same command may be read in
        # several envelopes (attempts superseded, commands finished meanwhile)
        rechecked = 0
        for head in self.queue.runnable(self.shared.listed, now, self.busy):
            if len(self.busy) >= CONCURRENCY:
                break
            if head.stage == parking.SCHEDULED:
                if self.budget <= 0:
                    continue
                self.budget -= 1
            rechecked += head.scheduled is not None
            self.busy.add(head.key)
            task = asyncio.ensure_future(self._run(head))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        if rechecked:
            log.warning(
                "retry: %d commands parked because the PSP refused paybus's credentials (or did "
                "not know an object it created: another account's key), before this worker "
                "started, are tried now", rechecked,
            )  # fmt: skip
            metrics.RETRIES.labels("retry", "credentials_recheck").inc(rechecked)
        metrics.PARKED_AGGREGATES.set(len(self.queue.by_key))
        metrics.PARKED_MESSAGES.set(len(self.queue))
        self._gauge_refused()

    def _own_key(self, psp: str) -> str | None:
        """This worker's key fingerprint for ``psp`` (its settings never change)."""
        if psp not in self.own_keys:
            self.own_keys[psp] = key_fingerprint(self.app.settings, psp)
        return self.own_keys[psp]

    def _gauge_refused(self) -> None:
        """``paybus_parked_for_credentials`` per PSP: what the credentials alert holds on to
        between a quiet bus's retries (hours apart), not only while calls are refused."""
        counts = dict.fromkeys(self.refused_psps, 0)
        for item in self.queue.items():
            if item.parked_for == parking.CREDENTIALS:
                psp = _psp_of(cast(RetryEnvelope, item.handle.value))
                counts[psp] = counts.get(psp, 0) + 1
        for psp, count in counts.items():
            metrics.PARKED_FOR_CREDENTIALS.labels(psp).set(count)
        self.refused_psps = set(counts)

    def _forget_revoked(self) -> None:
        try:
            assigned = set(self.app.consumer.assignment())
        except Exception:
            return
        for item in self.queue.items():
            if item.handle.message.tp not in assigned and item.key not in self.busy:
                self.queue.discard(item)  # the new owner reads it again (never acked)

    def _command(self, env: RetryEnvelope) -> PaymentCommand:
        return cast(
            PaymentCommand,
            PaymentCommand.loads(env.value, serializer=codec_name("PaymentCommand")),
        )

    async def _run(self, head: Parked) -> None:
        event: EventT[RetryEnvelope] = head.handle
        env = cast(RetryEnvelope, event.value)
        try:
            await self._redrive(head, event, env)
        except Exception:
            log.exception("re-driving %s failed; trying again in %ss", head.origin, BUG_BACKOFF_S)
            head.due_at = datetime.now(UTC) + timedelta(seconds=BUG_BACKOFF_S)
        finally:
            self.busy.discard(head.key)

    async def _redrive(
        self, head: Parked, event: EventT[RetryEnvelope], env: RetryEnvelope
    ) -> None:
        try:
            command = self._command(env)
        except Exception as exc:
            await self._dead_letter(head, event, env, f"undecodable parked command: {exc}")
            return
        stage = f"retry:{command.psp}"
        blocked = parking.blocked_by(self.shared.parked.get(head.key))
        if blocked:
            await self._dead_letter(head, event, env, f"behind dead letter {blocked}")
            return
        if head.stage == parking.SCHEDULED:
            log.info(
                "collection: submitting %s (%s, charge date %s)",
                command.aggregate_id, command.command_id, command.charge_date,
            )  # fmt: skip
            metrics.COLLECTIONS.labels("released").inc()
        error = await self.shared.execute(command.psp, event, command, stage)
        if error is None:
            metrics.RETRIES.labels(stage, "retried" if head.attempt else "released").inc()
            if head.stage == parking.SCHEDULED:
                log.info("collection: %s submitted", command.aggregate_id)
            await self._finish(head, event)
            return
        if head.scheduled is not None:
            # Tried before its schedule (parked for refused credentials before this worker
            # started) and not carried out: it waits for its scheduled retry instead of using
            # one up, or a rolling restart or a crash loop with the key still wrong would
            # dead-letter it long before the schedule's end.
            log.warning(
                "retry: %s (%s) still not carried out after a restart; waits for its "
                "scheduled retry at %s", head.origin, error_kind(error),
                head.scheduled.isoformat(timespec="seconds"),
            )  # fmt: skip
            head.due_at, head.scheduled = head.scheduled, None
            return
        schedule = self.app.settings.retry_schedule_s
        errors = parking.error_log(env.error, f"attempt {head.attempt}: {error}")
        if head.stage == parking.RETRY and parking.exhausted(head.attempt, schedule):
            await self._dead_letter(head, event, env, f"retries exhausted: {error}", errors)
            return
        attempt = head.attempt + 1
        metrics.RETRIES.labels(stage, "reparked").inc()
        await self.shared.park(
            event, head.key, origin=head.origin, stage=parking.RETRY, attempt=attempt,
            due_at=parking.retry_due(attempt, schedule, datetime.now(UTC)), error=errors,
            aggregate_id=env.aggregate_id, first_failed_at=env.first_failed_at,
            original=env, cause=error,
        )  # fmt: skip
        # The higher attempt now stands for the origin; this one is done with.
        self.queue.discard(head)
        await self._ack(event)

    async def _finish(
        self, head: Parked, event: EventT[RetryEnvelope], dead_letter: str | None = None
    ) -> None:
        """Unlist the origin (the next parked command of the aggregate may run), then ack.
        After a dead letter, the rest of the aggregate's parked commands follow it."""
        parked = self.shared.parked
        with as_current(event):
            rest = parking.removed(parked.get(head.key), head.origin)
            if rest is not None and dead_letter and not parking.blocked_by(rest):
                rest["blocked_by"] = dead_letter
            if rest is None:
                if head.key in parked:
                    del parked[head.key]
            else:
                parked[head.key] = rest
        self.queue.discard(head)
        await self._ack(event)
        for orphan in self.queue.drop_orphans(head.key, parking.pending(rest)):
            await self._ack(orphan.handle)

    async def _dead_letter(
        self,
        head: Parked,
        event: EventT[RetryEnvelope],
        env: RetryEnvelope,
        reason: str,
        errors: str = "",
    ) -> None:
        letter = make_dead_letter(
            topic=env.original_topic,
            partition=env.original_partition,
            offset=env.original_offset,
            key=env.key,
            value=env.value,
            stage="retry",
            reason=reason,
            aggregate_id=env.aggregate_id,
            error_log=(errors or env.error).splitlines(),
            attempts=head.attempt + 1,
        )
        metrics.RETRIES.labels("retry", "exhausted").inc()
        metrics.DEAD_LETTERS.labels("retry").inc()
        fut = await self.app.send(
            self.app.topic_map.dlq.name, key=letter.dead_letter_id.encode(), value=letter
        )
        await fut
        await self._finish(head, event, dead_letter=letter.dead_letter_id)
