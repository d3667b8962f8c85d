"""Connector workers: one agent per PSP executes the commands on ``paybus.commands.<psp>``.

Commands are taken in batches and grouped by key (the payment, or the mandate); each key's
commands run one at a time in their own task, keys run side by side up to
``connector_concurrency`` calls in flight, and the batch is acked only when every task is done
(at-least-once, each payment's order kept). Grouped by partition, as first built, a worker made
one PSP call at a time per partition: at a PSP's 0.2-1 s a call, a few commands a second on the
embedded profile's 2 partitions.

A command whose aggregate has something parked (see :mod:`streams.parking`) is parked behind
it without being executed. A transient failure left after the connector's in-process retries
parks the command on ``paybus.retry`` for the retry stage, and so do credentials the PSP
refused (a revoked or mistyped key is paybus's to fix, not the payment's fault; see
:func:`connectors.errors.worth_asking_later`), and so does a PSP not knowing an object it
created for paybus (another account's key: :mod:`streams.unknown_objects`); a direct debit whose
collection date is in the future is parked as ``scheduled``. A permanent failure — a request
the PSP refuses — becomes a ``failed`` event with the reason, so the CRM shows it; but a
cancel refused is no failure of the payment: connectors answer it with the payment's actual
status, which :mod:`streams.refusals` marks so the CRM record gets that status back. Every
call carries an idempotency key derived from the command id, so a command re-delivered after
a crash creates nothing twice.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, cast

import faust
from faust.types import EventT

from connectors.base import CommandResult
from connectors.errors import ConnectorError, worth_asking_later
from streams import metrics, page_links, parking, refusals
from streams.agents.batches import batched
from streams.agents.common import Connectors, as_current, connector_call, event_key, failed_event
from streams.app import PaybusApp
from streams.records import PaymentCommand, PaymentEvent, PspWebhook, RetryEnvelope
from streams.redaction import redact
from streams.secrets_check import key_fingerprint
from streams.sequencing_state import REASON_GIVEN_ATTRIBUTE
from streams.topics import partition_key
from streams.unknown_objects import another_account, for_credentials

log = logging.getLogger(__name__)

#: Content type of the link records a worker sends to the normaliser (PSP id -> aggregate).
LINK_CONTENT_TYPE = "application/vnd.paybus.link+json"


def is_link(content_type: object, webhook_id: object, psp_object_id: object) -> bool:
    """Whether a ``PspWebhook`` record is a connector worker's link: labelled so, and under
    the id the worker gives it (``link:<PSP object id>``). A PSP's webhook carries the id of
    the PSP's signed event (``evt_...``, ``EV...``), so a replayed one relabelled with this
    content type (refused by the receiver since: a 415) is still normalised as a webhook,
    not taken for a link that re-points its object."""
    return content_type == LINK_CONTENT_TYPE and webhook_id == f"link:{psp_object_id}"


#: Operations whose PSP object later cancellations and refunds act on.
CREATES_OBJECT = ("create_payment", "request_payment", "create_mandate")


class Shared:
    """What the connector workers and the retry stage share in one worker: tables, topics and
    the executor. Built once per app (both stages must see the same ``parked`` table)."""

    def __init__(self, app: PaybusApp) -> None:
        self.app = app
        tm = app.topic_map
        self.connectors = Connectors(app)
        self.events_topic = app.topic(
            tm.payment_events.name, key_type=str, key_serializer="raw", value_type=PaymentEvent
        )
        self.webhooks_topic = app.topic(
            tm.psp_webhooks.name, key_type=str, key_serializer="raw", value_type=PspWebhook
        )
        self.retry_topic = app.topic(
            tm.retry.name, key_type=str, key_serializer="raw", value_type=RetryEnvelope
        )
        schema: Any = faust.Schema(key_type=str, key_serializer="raw", value_serializer="json")
        #: aggregate id -> PSP object id, for the cancellations and refunds that follow.
        self.objects = app.Table(
            "psp-objects", default=None, schema=schema, partitions=app.settings.partitions
        )
        #: partition key -> parked origins in order (see :mod:`streams.parking`).
        self.parked = app.Table(
            "parked", default=None, schema=schema, partitions=app.settings.partitions
        )

    @classmethod
    def of(cls, app: PaybusApp) -> Shared:
        found = getattr(app, "_paybus_shared", None)
        if found is None:
            found = cls(app)
            app._paybus_shared = found  # type: ignore[attr-defined]
        return cast(Shared, found)

    def listed(self, key: str) -> list[str]:
        return parking.pending(self.parked.get(key))

    async def execute(
        self, psp: str, event: EventT[Any], command: PaymentCommand, stage: str
    ) -> ConnectorError | None:
        """Run ``command`` at the PSP and publish what it yields; ``event`` is the record whose
        partition the table writes go to. Returns the error when it is worth retrying later:
        :func:`~connectors.errors.worth_asking_later`, or a 404 :func:`another_account` keeps
        from failing the payment."""
        if command.operation in ("cancel", "refund") and not command.psp_object_id:
            known = self.objects.get(command.payment_id or command.aggregate_id)
            if known:
                command = command.derive(psp_object_id=known)
        connector = self.connectors.get(psp)
        try:
            result = await connector_call(
                psp,
                command.operation,
                lambda: connector.execute(command),
                self.connectors.threads(psp),
            )
        except ConnectorError as exc:
            if another_account(command, exc):
                log.warning("%s does not know %s, which it created for %s: another account's "
                            "key? The %s waits parked", psp, command.psp_object_id,
                            command.aggregate_id, command.operation)  # fmt: skip
                return exc
            if worth_asking_later(exc):
                return exc
            await self._refused(psp, stage, command, exc)
            return None
        await self._publish(psp, event, command, result)
        # A cancel the PSP refused is answered (the payment's actual status), not raised.
        refused = refusals.is_refusal(command, result.events)
        outcome = "rejected" if refused else "applied"
        metrics.EVENTS.labels(stage, outcome, command.aggregate_type, psp).inc()
        return None

    def _with_page_link(
        self, psp: str, command: PaymentCommand, object_id: str, events: list[PaymentEvent]
    ) -> list[PaymentEvent]:
        """``events`` carrying the link to the payment's page (to the CRM record). It
        expires ``pages.link_ttl_s`` after the command was issued, so a re-executed command
        gives the same link."""
        settings = self.app.settings
        base = settings.page_base_url
        if base is None:  # turned off since it was routed: the record shows no link
            return events
        secret = settings.pages.secret.get_secret_value()
        ttl = settings.pages.link_ttl_s
        link = page_links.link_for(base, secret, psp, object_id, command.issued_at, ttl)
        return [
            pe.derive(attributes={**(pe.attributes or {}), page_links.PAGE_URL_ATTRIBUTE: link})
            for pe in events
        ]

    @staticmethod
    def _with_reason(reason: str, events: list[PaymentEvent]) -> list[PaymentEvent]:
        """``events`` with a cancel's reason (the bus's own, such as an expired payment page,
        or the one the intent gave) on the ``cancelled`` ones, so the CRM record shows why: the
        PSP's answer to a cancel it carried out says only that it is. An event of another
        status (the PSP refused, the payment went on) keeps its own, and so does one the PSP
        gave a reason (it was cancelled before, for that reason).

        Marked with ``REASON_GIVEN_ATTRIBUTE`` and given an id of its own (GoCardless answers
        with its webhook's very event, id included): when the webhook was sequenced first, the
        sequencer re-asserts ``cancelled`` with the reason instead of dropping the answer as a
        duplicate."""
        text = redact(reason)[:500]
        return [
            pe.derive(
                event_id=f"{pe.event_id}:reason",
                reason=text,
                attributes={**(pe.attributes or {}), REASON_GIVEN_ATTRIBUTE: "cancel"},
            )
            if pe.status == "cancelled" and not pe.reason
            else pe
            for pe in events
        ]

    async def _publish(
        self, psp: str, event: EventT[Any], command: PaymentCommand, result: CommandResult
    ) -> None:
        events = refusals.refused_answer(psp, command, result.events)
        if command.operation == "request_payment" and result.psp_object_id:
            events = self._with_page_link(psp, command, result.psp_object_id, events)
        if command.operation == "cancel" and command.reason:
            events = self._with_reason(command.reason, events)
        futures = [await self.events_topic.send(key=event_key(pe), value=pe) for pe in events]
        for object_id, aggregate_id in result.links.items():
            link = {
                "aggregate_id": aggregate_id,
                "aggregate_type": command.aggregate_type,
                "payment_id": command.payment_id,
                "crm_record_id": command.crm_record_id,
            }
            record = PspWebhook(
                webhook_id=f"link:{object_id}",
                psp=psp,
                psp_object_id=object_id,
                received_at=datetime.now(UTC),
                content_type=LINK_CONTENT_TYPE,
                body=json.dumps(link).encode(),
                headers={},
            )
            futures.append(await self.webhooks_topic.send(key=object_id, value=record))
        await asyncio.gather(*futures)
        if result.psp_object_id and command.operation in CREATES_OBJECT:
            with as_current(event):
                self.objects[command.aggregate_id] = result.psp_object_id

    async def _refused(
        self, psp: str, stage: str, command: PaymentCommand, exc: ConnectorError
    ) -> None:
        metrics.EVENTS.labels(stage, "rejected", command.aggregate_type, psp).inc()
        failed = failed_event(
            event_id=f"{command.command_id}:failed",
            aggregate_id=command.aggregate_id,
            aggregate_type=command.aggregate_type,
            reason=f"{psp} refused {command.operation}: {exc.message}",
            source=psp,
            payment_id=command.payment_id,
            psp=psp,
            crm_record_id=command.crm_record_id,
        )
        fut = await self.events_topic.send(key=event_key(failed), value=failed)
        await fut

    async def park(
        self,
        event: EventT[Any],
        key: str,
        *,
        origin: str,
        stage: str,
        attempt: int,
        due_at: datetime,
        error: str,
        aggregate_id: str,
        first_failed_at: datetime | None = None,
        original: RetryEnvelope | None = None,
        cause: BaseException | None = None,
    ) -> None:
        """List ``origin`` in the parked table first, then send its envelope (see
        :mod:`streams.parking` for why this order survives a crash at any point).

        ``event`` is the record being handled (its partition takes the table write); the
        original command record is ``event``'s message, or ``original`` when re-parking.
        ``cause`` is the failure that parks it: one that waits for paybus's key (see
        :func:`for_credentials`) marks the envelope so that a worker holding another key tries
        it at once."""
        message = event.message
        with as_current(event):
            entry = parking.appended(self.parked.get(key), origin, stage)
            entry["stages"][origin] = stage
            self.parked[key] = entry
        if original is not None:
            where = (original.original_topic, original.original_partition)
            offset, raw_key, value = original.original_offset, original.key, original.value
        else:
            where = (message.topic, message.partition)
            offset = message.offset
            raw_key = message.key if isinstance(message.key, bytes) else key.encode()
            value = message.value if isinstance(message.value, bytes) else b""
        envelope = RetryEnvelope(
            retry_id=parking.retry_id(origin, attempt),
            aggregate_id=aggregate_id,
            original_topic=where[0],
            original_partition=where[1],
            original_offset=offset,
            key=raw_key,
            value=value,
            attempt=attempt,
            due_at=due_at,
            first_failed_at=first_failed_at or datetime.now(UTC),
            error=redact(error),  # a PSP's error text may quote a card or account number
            stage=stage,
        )
        headers: dict[str, bytes] = {}
        if for_credentials(cause):
            headers[parking.PARKED_FOR_HEADER] = parking.CREDENTIALS.encode()
            psp = cause.psp or parking.psp_of_topic(str(where[0]))
            if (fingerprint := key_fingerprint(self.app.settings, psp)) is not None:
                headers[parking.REFUSED_KEY_HEADER] = fingerprint.encode()
        fut = await self.retry_topic.send(key=key, value=envelope, headers=headers or None)
        await fut


class CommandStage:
    def __init__(self, app: PaybusApp, psps: list[str]) -> None:
        self.app = app
        self.shared = Shared.of(app)
        #: Per PSP: the commands being handled (``connector_concurrency``). The connector's
        #: thread pool alone would bound the calls too, but commands beyond it would wait in
        #: the pool's queue, timed as PSP latency (``paybus_connector_call_seconds``).
        self._slots = {psp: asyncio.Semaphore(app.settings.connector_concurrency) for psp in psps}
        for psp in psps:
            topic = app.topic(
                app.topic_map.commands(psp).name,
                key_type=str,
                key_serializer="raw",
                value_type=PaymentCommand,
            )
            app.agent(topic, name=f"paybus.connector.{psp}")(
                batched(
                    app.settings, f"connector:{psp}", functools.partial(self.process_batch, psp)
                )
            )

    async def process_batch(self, psp: str, events: list[EventT[PaymentCommand]]) -> None:
        """One task per key, in order within it, at most ``connector_concurrency`` of them
        calling the PSP at once; returns when all are done (then the batch is acked). A
        failure in one task propagates and crashes the agent, so nothing is acked that was
        not carried out.

        Per key, not per partition: everything the stage keeps is per key (the parked list,
        the PSP object of a payment, whose refunds share its key), and a PSP's answer takes
        long enough that one call at a time per partition bounds a worker's rate."""
        by_key: dict[tuple[int, object], list[EventT[PaymentCommand]]] = defaultdict(list)
        for event in events:
            by_key[(event.message.partition, event.message.key)].append(event)
        slots = self._slots[psp]

        async def run(key_events: list[EventT[PaymentCommand]]) -> None:
            for event in key_events:
                async with slots:
                    await self.handle(psp, event)

        await asyncio.gather(*(run(evs) for evs in by_key.values()))

    async def handle(self, psp: str, event: EventT[PaymentCommand]) -> None:
        command = cast(PaymentCommand, event.value)
        stage = f"connector:{psp}"
        shared = self.shared
        message = event.message
        key = (
            event.key
            if isinstance(event.key, str)
            else partition_key(command.aggregate_type, command.aggregate_id, command.payment_id)
        )
        origin = parking.origin_id(message.topic, message.partition, message.offset)
        listed = shared.listed(key)
        now = datetime.now(UTC)
        park: dict[str, Any] = {"origin": origin, "aggregate_id": command.aggregate_id}
        if listed:
            # Re-delivered after a crash (origin already listed) or behind a parked command.
            stages = (shared.parked.get(key) or {}).get("stages") or {}
            kind = stages.get(origin, parking.WAITING)
            due = self._scheduled_due(command) if kind == parking.SCHEDULED else now
            metrics.RETRIES.labels(stage, kind if origin in listed else "waiting").inc()
            metrics.EVENTS.labels(stage, "parked", command.aggregate_type, psp).inc()
            await shared.park(
                event, key, stage=kind, attempt=0, due_at=due or now,
                error=f"waiting behind {listed[0]}", **park,
            )  # fmt: skip
            return
        due = self._scheduled_due(command)
        if due is not None and due > now:
            metrics.COLLECTIONS.labels("scheduled").inc()
            metrics.EVENTS.labels(stage, "scheduled", command.aggregate_type, psp).inc()
            await shared.park(
                event, key, stage=parking.SCHEDULED, attempt=0, due_at=due,
                error=f"collection on {command.charge_date}", **park,
            )  # fmt: skip
            return
        error = await shared.execute(psp, event, command, stage)
        if error is None:
            return
        schedule = self.app.settings.retry_schedule_s
        metrics.RETRIES.labels(stage, "parked").inc()
        metrics.EVENTS.labels(stage, "parked", command.aggregate_type, psp).inc()
        await shared.park(
            event, key, stage=parking.RETRY, attempt=1,
            due_at=parking.retry_due(1, schedule, now), error=str(error), first_failed_at=now,
            cause=error, **park,
        )  # fmt: skip

    def _scheduled_due(self, command: PaymentCommand) -> datetime | None:
        """The collection time of a direct debit with a valid future-capable charge date."""
        if command.operation != "create_payment" or not command.charge_date:
            return None
        try:
            return parking.collection_due(
                command.charge_date, self.app.settings.ops.collection_lead_days
            )
        except ValueError:
            return None  # not a date: the PSP refuses it with a reason the CRM shows
