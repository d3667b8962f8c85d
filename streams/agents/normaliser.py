"""The normaliser: raw PSP webhooks (``paybus.psp.webhooks``) -> canonical payment events.

It maps each verified webhook onto canonical events. A PSP object id becomes an aggregate id
through the PSP's metadata where it carries one, else through a table of links the connector
workers publish when they create PSP objects. Webhooks and links are both keyed by PSP object
id, so a link and the webhooks it resolves meet on one partition. A refund the bus did not
create, on a payment it did, becomes a refund aggregate of its own (:mod:`streams.psp_refunds`).
An event about another system's object on a shared PSP account (its connector marks it
foreign: the object carries metadata, none of it the bus's) is counted ``foreign`` and goes no
further; any other event naming no aggregate is dead-lettered for an operator to decide.

A webhook whose PSP call failed transiently (a payout look-up answered 503 after the
connector's own retries) is dead-lettered with a ``retry_at``: the ops role replays it then,
up to ``normaliser_retry_schedule_s`` times, so a PSP blip heals by itself
(:mod:`streams.auto_replay`). Its events have the PSP's ids, so a replay never applies twice.

It runs in the workers (the ``normaliser`` role), not beside the webhook receiver: at 1,000
webhooks/s on 2 cores, one process doing both was saturated and webhooks waited up to a
second for the normaliser.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from faust.types import EventT

from connectors.base import FOREIGN_ATTRIBUTE, unmarked
from streams import auto_replay, metrics, psp_refunds
from streams.agents.batch_send import BatchSender, Record
from streams.agents.batches import batched
from streams.agents.commands import is_link
from streams.agents.common import Connectors, event_key, json_table, keyed_topic, send_dead_letter
from streams.agents.table_writes import write_table
from streams.app import PaybusApp
from streams.faust_codec import FaustAvroCodec
from streams.records import PaymentEvent, codec_name

STAGE = "normaliser"


class NormaliserStage:
    """The normaliser agent and its table of links (see the module doc)."""

    def __init__(self, app: PaybusApp) -> None:
        metrics.expect_dead_letters(STAGE)
        self.app = app
        self.connectors = Connectors(app)
        tm = app.topic_map
        # Values decoded to the Avro mapping, without a Faust record per webhook (see the
        # sequencer); undecodable ones still become dead letters.
        self.webhooks_topic = app.topic(
            tm.psp_webhooks.name, key_type=str, key_serializer="raw",
            value_serializer=codec_name("PspWebhook"),
        )  # fmt: skip
        self.events_topic = keyed_topic(app, tm.payment_events.name, PaymentEvent)
        self.links = json_table(app, "psp-links")
        self.sender = BatchSender(app)
        self.event_codec = FaustAvroCodec(app.avro, "PaymentEvent")
        self.schedule = app.settings.normaliser_retry_schedule_s
        app.agent(self.webhooks_topic, name="paybus.normaliser")(
            batched(app.settings, STAGE, self.process_batch)
        )

    async def process_batch(self, events: Sequence[EventT[Any]]) -> None:
        """Normalise a batch of webhooks and deliver their events, waiting once per batch.

        Normalising may call the PSP (a Stripe payout lists its transactions), so the batch's
        bodies are mapped in one worker thread; links are resolved and events sent in the
        batch's order on the loop, and Faust acks the batch only after every event and dead
        letter is delivered (one wait per batch, not one broker round trip per webhook).
        """
        webhooks = [as_webhook(e.value) for e in events]
        jobs: list[tuple[int, Any, bytes]] = []
        results: dict[int, list[PaymentEvent] | Exception] = {}
        for index, webhook in enumerate(webhooks):
            if is_link(webhook.content_type, webhook.webhook_id, webhook.psp_object_id):
                continue
            try:
                jobs.append((index, self.connectors.get(webhook.psp), webhook.body))
            except Exception as exc:
                results[index] = exc
        if jobs:
            results.update(await asyncio.to_thread(_normalise_all, jobs))
        futures: list[Any] = []
        outputs: list[Record] = []
        learned: dict[str, tuple[dict[str, Any], EventT[Any]]] = {}
        for index, event in enumerate(events):
            futures += await self._handle(event, results.get(index), learned, outputs)
        futures += await self.sender.send(self.events_topic.get_topic_name(), outputs)
        await asyncio.gather(*futures)
        writes = [(key, link, event) for key, (link, event) in learned.items()]
        await asyncio.gather(*await write_table(self.links, self.sender, writes))

    async def _handle(
        self,
        event: EventT[Any],
        normalised: list[PaymentEvent] | Exception | None,
        learned: dict[str, tuple[dict[str, Any], EventT[Any]]],
        outputs: list[Record],
    ) -> list[Any]:
        """One webhook's outcome (link, events, dead letter); returns the dead letters'
        delivery futures. Events are appended to ``outputs`` (sent as one batch per
        partition), links learned to ``learned`` (written after the batch's events)."""
        webhook = as_webhook(event.value)
        key = webhook.psp_object_id
        if is_link(webhook.content_type, webhook.webhook_id, webhook.psp_object_id):
            learned[key] = (json.loads(webhook.body), event)
            metrics.EVENTS.labels(STAGE, "link", "", webhook.psp).inc()
            return []
        if not isinstance(normalised, list):
            return [await self._failed(event, webhook, normalised)]
        futures = []
        for pe in normalised:
            resolved = self._resolve(event, key, pe, learned)
            if resolved is None and (pe.attributes or {}).get(FOREIGN_ATTRIBUTE):
                # Another system's object on a shared PSP account: none of the bus's business.
                metrics.EVENTS.labels(STAGE, "foreign", pe.aggregate_type, webhook.psp).inc()
                continue
            if resolved is None:
                metrics.EVENTS.labels(STAGE, "rejected", pe.aggregate_type, webhook.psp).inc()
                futures.append(
                    await send_dead_letter(
                        self.app,
                        event,
                        stage=STAGE,
                        aggregate_id=None,
                        reason=f"no aggregate known for {webhook.psp} object {key} ({pe.event_id})",
                    )
                )
                continue
            if FOREIGN_ATTRIBUTE in (resolved.attributes or {}):  # a link named it: ours
                resolved = resolved.derive(attributes=unmarked(resolved.attributes))
            value = self.event_codec.dumps(resolved.asdict())
            outputs.append((None, event_key(resolved).encode(), value))
            metrics.EVENTS.labels(STAGE, "applied", pe.aggregate_type, webhook.psp).inc()
        if not normalised:
            metrics.EVENTS.labels(STAGE, "ignored", "", webhook.psp).inc()
        return futures

    async def _failed(self, event: EventT[Any], webhook: Any, error: Exception | None) -> Any:
        """Dead-letter a webhook that could not be mapped; its delivery future.

        A transient PSP failure is scheduled for an automatic replay (``retrying``) until the
        schedule is used up (``exhausted``); anything else waits for an operator
        (``rejected``). The replays so far come with the record (a Kafka header), since a
        replayed webhook is a new record, with a letter id of its own."""
        replays = auto_replay.replays_of(event.message.headers)
        retryable = auto_replay.is_retryable(error)
        now = datetime.now(UTC)
        at = auto_replay.retry_at(replays, self.schedule, now) if retryable else None
        reason = f"cannot normalise {webhook.psp} webhook {webhook.webhook_id}: {error}"
        if at is not None:
            outcome = auto_replay.RETRYING
            reason += f" (attempt {replays + 1}; replayed automatically from {at:%H:%M:%SZ})"
        elif retryable:
            outcome = auto_replay.EXHAUSTED
            reason += f" (attempt {replays + 1}; automatic replays used up)"
        else:
            outcome = auto_replay.REJECTED
        metrics.EVENTS.labels(STAGE, outcome, "", webhook.psp).inc()
        return await send_dead_letter(
            self.app, event, stage=STAGE, aggregate_id=None, reason=reason,
            attempts=replays + 1, retry_at=at,
        )  # fmt: skip

    def _resolve(
        self,
        event: EventT[Any],
        key: str,
        pe: PaymentEvent,
        learned: dict[str, tuple[dict[str, Any], EventT[Any]]],
    ) -> PaymentEvent | None:
        """Fill the aggregate id from the links (this batch's, then the table's), or learn a
        link from PSP metadata."""
        link = learned[key][0] if key in learned else self.links.get(key)
        if pe.aggregate_id:
            if link is None and pe.aggregate_type == "payment":
                link_of = {"aggregate_id": pe.aggregate_id, "aggregate_type": "payment"}
                learned[key] = (link_of, event)
            if link and pe.aggregate_type == "refund" and not pe.payment_id:
                return pe.derive(payment_id=link.get("aggregate_id"))
            return pe
        if pe.aggregate_type == "refund" and (
            link is None or link.get("aggregate_type") == "payment"
        ):
            # Not a refund the bus made: one made at the PSP, on the payment its connector
            # found or this webhook's key links (None, dead-lettered, when neither is known).
            payment = pe.payment_id or (link or {}).get("aggregate_id")
            return psp_refunds.resolve(pe.derive(payment_id=str(payment))) if payment else None
        if link is None:
            return None  # an object the bus never heard of: dead-lettered for an operator
        attrs = dict(pe.attributes or {})
        if link.get("crm_record_id"):
            attrs.setdefault("crm_record_id", link["crm_record_id"])
        return pe.derive(
            aggregate_id=link["aggregate_id"],
            payment_id=pe.payment_id or link.get("payment_id"),
            attributes=attrs,
        )


def as_webhook(value: Any) -> Any:
    """A decoded ``PspWebhook`` mapping with attribute access, as the record would have."""
    return SimpleNamespace(**value)


def _normalise_all(jobs: list[tuple[int, Any, bytes]]) -> dict[int, list[PaymentEvent] | Exception]:
    """Map each ``(index, connector, body)`` (in a worker thread); an error is a result."""
    out: dict[int, list[PaymentEvent] | Exception] = {}
    for index, connector, body in jobs:
        try:
            out[index] = connector.normalise(body)
        except Exception as exc:
            out[index] = exc
    return out
