"""Connector workers: one agent per PSP executes the commands on ``paybus.commands.<psp>``.

Commands of one payment (and its refunds) share a partition and are executed one at a time,
in order. The connector retries transient failures in process with backoff; what is still
transient afterwards is dead-lettered with its error log for replay (ordered parking on
``paybus.retry`` is the retry stage's job). A permanent failure — a request the PSP refuses —
becomes a ``failed`` event with the reason, so the CRM shows it. Every call carries an
idempotency key derived from the command id, so a command re-delivered after a crash creates
nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

import faust
from faust.types import EventT

from connectors.base import CommandResult
from connectors.errors import ConnectorError
from streams import metrics
from streams.agents.common import Connectors, as_current, event_key, failed_event, send_dead_letter
from streams.app import PaybusApp
from streams.records import PaymentCommand, PaymentEvent, PspWebhook

#: Content type of the link records a worker sends to the normaliser (PSP id -> aggregate).
LINK_CONTENT_TYPE = "application/vnd.paybus.link+json"


class CommandStage:
    def __init__(self, app: PaybusApp, psps: list[str]) -> None:
        self.app = app
        self.connectors = Connectors(app)
        tm = app.topic_map
        self.events_topic = app.topic(
            tm.payment_events.name, key_type=str, key_serializer="raw", value_type=PaymentEvent
        )
        self.webhooks_topic = app.topic(
            tm.psp_webhooks.name, key_type=str, key_serializer="raw", value_type=PspWebhook
        )
        #: aggregate id -> PSP object id, for the cancellations and refunds that follow.
        self.objects = app.Table(
            "psp-objects",
            default=None,
            schema=faust.Schema(key_type=str, key_serializer="raw", value_serializer="json"),
            partitions=app.settings.partitions,
        )
        for psp in psps:
            topic = app.topic(
                tm.commands(psp).name, key_type=str, key_serializer="raw", value_type=PaymentCommand
            )
            app.agent(topic, name=f"paybus.connector.{psp}")(self._agent_for(psp))

    def _agent_for(self, psp: str) -> Any:
        async def process(stream: faust.StreamT[PaymentCommand]) -> AsyncIterator[None]:
            async for event in stream.events():
                await self.handle(psp, event)
                yield None

        return process

    async def handle(self, psp: str, event: EventT[PaymentCommand]) -> None:
        command = cast(PaymentCommand, event.value)
        stage = f"connector:{psp}"
        if command.operation in ("cancel", "refund") and not command.psp_object_id:
            target = command.payment_id or command.aggregate_id
            known = self.objects.get(target)
            if known:
                command = command.derive(psp_object_id=known)
        connector = self.connectors.get(psp)
        started = time.perf_counter()
        try:
            result = await asyncio.to_thread(connector.execute, command)
        except ConnectorError as exc:
            metrics.CONNECTOR_CALLS.labels(psp, command.operation, "error").inc()
            kind = "transient" if exc.should_retry else "permanent"
            metrics.CONNECTOR_ERRORS.labels(psp, command.operation, kind).inc()
            await self._failure(psp, stage, event, command, exc)
            return
        finally:
            metrics.CONNECTOR_LATENCY.labels(psp, command.operation).observe(
                time.perf_counter() - started
            )
        metrics.CONNECTOR_CALLS.labels(psp, command.operation, "ok").inc()
        await self._publish(psp, event, command, result)
        metrics.EVENTS.labels(stage, "applied", command.aggregate_type, psp).inc()

    async def _publish(
        self,
        psp: str,
        event: EventT[PaymentCommand],
        command: PaymentCommand,
        result: CommandResult,
    ) -> None:
        futures = []
        for pe in result.events:
            futures.append(await self.events_topic.send(key=event_key(pe), value=pe))
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
        if result.psp_object_id and command.operation in ("create_payment", "create_mandate"):
            with as_current(event):
                self.objects[command.aggregate_id] = result.psp_object_id

    async def _failure(
        self,
        psp: str,
        stage: str,
        event: EventT[PaymentCommand],
        command: PaymentCommand,
        exc: ConnectorError,
    ) -> None:
        if exc.should_retry:
            metrics.EVENTS.labels(stage, "dead_lettered", command.aggregate_type, psp).inc()
            fut = await send_dead_letter(
                self.app, event, stage=stage, reason=f"retries exhausted: {exc}",
                aggregate_id=command.aggregate_id, attempts=3,
            )  # fmt: skip
            await fut
            return
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
