"""The router: CRM intents on ``paybus.crm.changes`` become commands for one PSP's worker.

Validation failures become a ``failed`` event for the aggregate (so the CRM record shows the
reason), never a silent drop. A table remembers which gateway each payment went to, so its
cancellation and refunds (keyed by the payment id, so on the same partition) follow it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import faust
from faust.types import EventT

from streams import metrics
from streams.agents.common import event_key, failed_event
from streams.agents.guard import guarded
from streams.app import PaybusApp
from streams.intents import IntentError, route
from streams.records import CrmChange, PaymentCommand, PaymentEvent

STAGE = "router"


class RouterStage:
    def __init__(self, app: PaybusApp) -> None:
        self.app = app
        tm = app.topic_map
        self.changes = app.topic(
            tm.crm_changes.name, key_type=str, key_serializer="raw", value_type=CrmChange
        )
        self.events_topic = app.topic(
            tm.payment_events.name, key_type=str, key_serializer="raw", value_type=PaymentEvent
        )
        self.gateways = app.Table(
            "router-gateways",
            default=None,
            schema=faust.Schema(key_type=str, key_serializer="raw", value_serializer="json"),
            partitions=app.settings.partitions,
        )
        app.agent(self.changes, name="paybus.router")(self.process)

    async def process(self, stream: faust.StreamT[CrmChange]) -> AsyncIterator[None]:
        async for event in stream.events():
            await guarded(STAGE, self.handle, event)
            yield None

    async def handle(self, event: EventT[CrmChange]) -> None:
        change = cast(CrmChange, event.value)
        data: dict[str, Any] = change.asdict()
        settings = self.app.settings
        lookup = change.payment_id if change.aggregate_type == "refund" else change.aggregate_id
        known = self.gateways.get(lookup) if lookup else None
        try:
            routed = route(
                data,
                known_gateway=known,
                gateways=settings.gateways,
                rules=settings.routing_rules,
                now=datetime.now(UTC),
            )
        except IntentError as exc:
            metrics.EVENTS.labels(STAGE, "rejected", change.aggregate_type, change.source).inc()
            failed = failed_event(
                event_id=f"{change.change_id}:rejected",
                aggregate_id=change.aggregate_id,
                aggregate_type=change.aggregate_type
                if change.aggregate_type in ("payment", "mandate", "refund")
                else "payment",
                reason=str(exc),
                source=STAGE,
                payment_id=change.payment_id,
                crm_record_id=change.crm_record_id,
            )
            fut = await self.events_topic.send(key=event_key(failed), value=failed)
            await fut
            return
        command = PaymentCommand(**routed.command)
        topic = self.app.topic_map.commands(routed.gateway.connector).name
        key = event.key if isinstance(event.key, str) else change.aggregate_id
        fut = await self.app.send(topic, key=key.encode(), value=command)
        await fut
        if change.intent in ("create_payment", "create_mandate"):
            self.gateways[change.aggregate_id] = routed.gateway.name
        metrics.EVENTS.labels(STAGE, "applied", change.aggregate_type, change.source).inc()
