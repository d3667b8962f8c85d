"""The router: CRM intents on ``paybus.crm.changes`` become commands for one PSP's worker.

Validation failures become a ``failed`` event for the aggregate (so the CRM record shows the
reason), never a silent drop. A table remembers which gateway each payment, mandate and refund
went to, so a payment's cancellation and refunds (keyed by the payment id, so on the same
partition) follow it, and a second create of an aggregate (the record saved again before its
status came back: a new change id, so a new PSP idempotency key) is counted as a duplicate
instead of charging or refunding twice.

Intents are routed a batch at a time (:func:`~streams.agents.batches.take_ready`) and the
batch's commands go out through
:class:`~streams.agents.batch_send.BatchSender`, one delivery wait per batch: waiting for the
broker's acknowledgement of each command in turn held the stage to one round trip per intent
(about 130 intents/s on the embedded broker). The order within a batch is the same as before:
commands and failed events are delivered first (awaited), the gateway table is written after,
and Faust acks the batch only when this returns. A crash in between re-routes the batch; the
command ids derive from the change ids, so the PSP idempotency keys make the repeat harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from faust.types import EventT

from streams import metrics
from streams.agents.batch_send import BatchSender, Record
from streams.agents.batches import batched
from streams.agents.common import event_key, failed_event, json_table, keyed_topic
from streams.agents.table_writes import write_table
from streams.app import PaybusApp
from streams.faust_codec import FaustAvroCodec
from streams.intents import IntentError, route
from streams.records import CrmChange, PaymentCommand, PaymentEvent

STAGE = "router"
#: Intents that make a PSP object: routed once per aggregate (the gateway table says which
#: aggregates were), whatever change ids later saves of the CRM record carry.
CREATES = frozenset({"create_payment", "request_payment", "create_mandate", "refund"})

log = logging.getLogger(__name__)


class RouterStage:
    def __init__(self, app: PaybusApp) -> None:
        self.app = app
        tm = app.topic_map
        self.changes = keyed_topic(app, tm.crm_changes.name, CrmChange)
        self.gateways = json_table(app, "router-gateways")
        self.sender = BatchSender(app)
        self.command_codec = FaustAvroCodec(app.avro, "PaymentCommand")
        self.event_codec = FaustAvroCodec(app.avro, "PaymentEvent")
        app.agent(self.changes, name="paybus.router")(
            batched(app.settings, STAGE, self.process_batch)
        )

    async def process_batch(self, events: Sequence[EventT[CrmChange]]) -> None:
        """Route every intent of the batch, deliver the outputs, then remember the gateways."""
        settings = self.app.settings
        now = datetime.now(UTC)
        outputs: dict[str, list[Record]] = {}
        routed_to: dict[str, tuple[str, EventT[CrmChange]]] = {}
        counts: Counter[tuple[str, str, str]] = Counter()
        for event in events:
            change = cast(CrmChange, event.value)
            lookup = change.payment_id if change.aggregate_type == "refund" else change.aggregate_id
            known = None
            if lookup:
                known = routed_to[lookup][0] if lookup in routed_to else self.gateways.get(lookup)
            if change.intent in CREATES and (
                known is not None  # the aggregate's own entry (a refund's is its payment's)
                if lookup == change.aggregate_id
                else change.aggregate_id in routed_to or self.gateways.get(change.aggregate_id)
            ):
                # A second create of one aggregate carries a new change id (the CRM record was
                # saved again before the bus wrote a status back), so a new command id and PSP
                # idempotency key: routed, it would charge or refund twice.
                counts["duplicate", change.aggregate_type, change.source] += 1
                log.info("router: %s %s was routed already; change %s is not routed again",
                         change.intent, change.aggregate_id, change.change_id)  # fmt: skip
                continue
            try:
                routed = route(
                    change.asdict(),
                    known_gateway=known,
                    gateways=settings.gateways,
                    rules=settings.routing_rules,
                    now=now,
                    pages=settings.page_base_url is not None,
                )
            except IntentError as exc:
                counts["rejected", change.aggregate_type, change.source] += 1
                failed = self._failed(change, str(exc))
                record = (None, event_key(failed).encode(), self._encode_event(failed))
                outputs.setdefault(self.app.topic_map.payment_events.name, []).append(record)
                continue
            topic = self.app.topic_map.commands(routed.gateway.connector).name
            key = event.key if isinstance(event.key, str) else change.aggregate_id
            value = self.command_codec.dumps(PaymentCommand(**routed.command).asdict())
            outputs.setdefault(topic, []).append((None, key.encode(), value))
            if change.intent in CREATES:
                routed_to[change.aggregate_id] = (routed.gateway.name, event)
            counts["applied", change.aggregate_type, change.source] += 1
        futures: list[asyncio.Future[Any]] = []
        for topic, records in outputs.items():
            futures += await self.sender.send(topic, records)
        await asyncio.gather(*futures)
        writes = [(agg, gateway, event) for agg, (gateway, event) in routed_to.items()]
        await asyncio.gather(*await write_table(self.gateways, self.sender, writes))
        for (outcome, agg_type, source), n in counts.items():
            metrics.EVENTS.labels(STAGE, outcome, agg_type, source).inc(n)

    @staticmethod
    def _failed(change: CrmChange, reason: str) -> PaymentEvent:
        agg_type = change.aggregate_type
        return failed_event(
            event_id=f"{change.change_id}:rejected",
            aggregate_id=change.aggregate_id,
            aggregate_type=agg_type if agg_type in ("payment", "mandate", "refund") else "payment",
            reason=reason,
            source=STAGE,
            payment_id=change.payment_id,
            crm_record_id=change.crm_record_id,
        )

    def _encode_event(self, event: PaymentEvent) -> bytes:
        return self.event_codec.dumps(event.asdict())
