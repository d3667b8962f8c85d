"""The sequencing agent: per-aggregate order, dedup, stale drop, hold and reconcile.

Consumes ``paybus.payments.events`` (partitioned by payment id, so one worker sees an
aggregate's whole history in order), keeps each aggregate's :class:`AggregateState` in a
changelog-backed table, and for every event:

* counts the outcome (applied, duplicate, stale, held, rejected) by aggregate type and source;
* emits a ``StatusUpdate`` per applied transition, keyed like the incoming message (the payment
  id for refunds, so a refund's updates stay in order with its payment's);
* sends rejected and invalid events to the DLQ with the reason, and moves on.

Held events older than the hold timeout are reconciled: a timer asks the connector for the
PSP's current status and publishes a *reconcile request* event; the agent applies it with
:meth:`Sequencer.reconcile` (inferred transitions). Table writes only happen inside the agent,
where Faust knows the partition to write the changelog to.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
from faust.streams import _current_event
from faust.types import EventT

from streams import metrics
from streams.app import PaybusApp
from streams.deadletters import make_dead_letter
from streams.errors import PaybusError
from streams.records import PaymentEvent, StatusUpdate
from streams.sequencing import Outcome, Result, Sequencer, StatusChange
from streams.sequencing_state import AggregateState, Event, InvalidEvent

log = logging.getLogger(__name__)

STAGE = "sequencer"
#: Attribute marking a reconcile request published by the timer (not a PSP event).
RECONCILE_ATTR = "paybus_reconcile"
#: PaymentEvent fields carried through the engine in ``Event.attributes``.
_CARRIED = ("psp", "psp_object_id", "payment_id", "settlement_date", "reason", "currency")


def to_engine_event(value: PaymentEvent) -> Event:
    """A PaymentEvent as the pure engine's Event (extra fields ride in ``attributes``)."""
    attributes: dict[str, str] = dict(value.attributes or {})
    for name in _CARRIED:
        field_value = getattr(value, name)
        if field_value is not None:
            attributes[name] = str(field_value)
    if value.amount_minor is not None:
        attributes["amount_minor"] = str(value.amount_minor)
    return Event(
        event_id=value.event_id,
        aggregate_id=value.aggregate_id,
        aggregate_type=value.aggregate_type,
        status=value.status,
        occurred_at=value.occurred_at,
        source=value.source,
        method=value.method,
        attributes=attributes,
    )


def to_status_update(change: StatusChange) -> StatusUpdate:
    """The wire record of one applied transition."""
    attrs = dict(change.attributes)
    carried = {name: attrs.pop(name, None) for name in _CARRIED}
    attrs.pop(RECONCILE_ATTR, None)
    return StatusUpdate(
        event_id=change.event_id,
        aggregate_id=change.aggregate_id,
        aggregate_type=change.aggregate_type,
        from_status=change.from_status,
        to_status=change.to_status,
        occurred_at=change.occurred_at,
        seq=change.seq,
        inferred=change.inferred,
        source=change.source,
        psp=carried["psp"],
        psp_object_id=carried["psp_object_id"],
        payment_id=carried["payment_id"],
        crm_record_id=attrs.pop("crm_record_id", None),
        settlement_date=carried["settlement_date"],
        reason=carried["reason"],
        attributes=attrs,
    )


class SequencerStage:
    """Wires the engine into a Faust agent, a table and a reconcile timer."""

    def __init__(self, app: PaybusApp) -> None:
        self.app = app
        settings = app.settings
        self.engine = Sequencer(max_seen=settings.max_seen_ids, max_held=settings.max_held_events)
        topics = app.topic_map
        self.events_topic = app.topic(
            topics.payment_events.name, key_type=str, key_serializer="raw", value_type=PaymentEvent
        )
        self.status_topic = app.topic(
            topics.status_updates.name, key_type=str, key_serializer="raw", value_type=StatusUpdate
        )
        self.dlq_topic = app.topic(topics.dlq.name, key_serializer="raw")
        self.table = app.Table(
            "sequencer-state",
            default=None,
            schema=faust.Schema(key_type=str, key_serializer="raw", value_serializer="json"),
            partitions=settings.partitions,
        )
        self.hold_timeout = timedelta(seconds=settings.hold_timeout_s)
        app.agent(self.events_topic, name="paybus.sequencer")(self.process)
        app.timer(max(settings.hold_timeout_s / 4, 1.0), name="paybus.sequencer.reconcile")(
            self.reconcile_held
        )

    async def process(self, stream: faust.StreamT[PaymentEvent]) -> AsyncIterator[None]:
        settings = self.app.settings
        batches = cast(Any, stream).take_events(
            settings.batch_max_events, within=settings.batch_within_s
        )
        async for events in batches:
            await self.process_batch(events)
            yield None

    async def process_batch(self, events: list[EventT[PaymentEvent]]) -> None:
        """Judge a batch in partition order, publish its outcomes, then write the state.

        The order is what makes a crash harmless without transactions: status updates and
        dead letters are delivered first, the table (changelog) is written after, and the
        offsets are committed last (Faust acks the batch when this returns). A worker killed
        in between re-reads the batch, finds the state as it was before it, and the
        deterministic engine emits the very same updates (same event id, same seq) again;
        the CRM writer's version guard absorbs the repeat. The other order could lose an
        update for good (state saying "applied" while the update never left).
        """
        states: dict[str, AggregateState | None] = {}
        last_event: dict[str, EventT[PaymentEvent]] = {}
        counts: Counter[tuple[str, str, str]] = Counter()
        sends = []
        for event in events:
            value = cast(PaymentEvent, event.value)
            key = event.key if isinstance(event.key, str) else value.aggregate_id
            try:
                engine_event = to_engine_event(value)
            except InvalidEvent as exc:
                counts["rejected", value.aggregate_type, value.source] += 1
                sends.append(
                    await self._dead_letter(event, f"invalid event: {exc}", value.aggregate_id)
                )
                continue
            agg = engine_event.aggregate_id
            if agg in states:
                state = states[agg]
            else:
                stored = self.table.get(agg)
                state = AggregateState.from_dict(stored) if stored else None
            if engine_event.attributes.get(RECONCILE_ATTR) and state is not None:
                result = self.engine.reconcile(
                    state, engine_event.status, now=engine_event.occurred_at, source="reconcile"
                )
            else:
                result = self.engine.judge(state, engine_event)
            states[agg] = result.state
            last_event[agg] = event
            sends += await self._outcomes(key, result, event, counts)
        await asyncio.gather(*sends)
        for (outcome, agg_type, source), n in counts.items():
            metrics.EVENTS.labels(STAGE, outcome, agg_type, source).inc(n)
        for agg, state in states.items():
            if state is None:
                continue
            token = _current_event.set(weakref.ref(last_event[agg]))
            try:
                self.table[agg] = state.to_dict()
            finally:
                _current_event.reset(token)

    async def _outcomes(
        self,
        key: str,
        result: Result,
        event: EventT[PaymentEvent],
        counts: Counter[tuple[str, str, str]],
    ) -> list[Any]:
        """Queue the result's status updates and dead letters; count every judgement."""
        futures = [
            await self.status_topic.send(key=key, value=to_status_update(change))
            for change in result.updates
        ]
        for judgement in result.judgements:
            ev = judgement.event
            metrics.EVENTS.labels(
                STAGE, judgement.outcome.value, ev.aggregate_type, ev.source
            ).inc()
            if judgement.outcome is Outcome.REJECTED:
                reason = f"{ev.event_id}: {judgement.reason}"
                futures.append(await self._dead_letter(event, reason, ev.aggregate_id))
        if result.evicted_seen:
            metrics.SEQUENCER_EVICTIONS.labels("seen").inc(result.evicted_seen)
        if result.evicted_held:
            metrics.SEQUENCER_EVICTIONS.labels("held").inc(result.evicted_held)
        return futures

    async def _dead_letter(self, event: EventT[Any], reason: str, aggregate_id: str | None) -> Any:
        """Queue a dead letter carrying the original bytes; return its delivery future."""
        message = event.message
        letter = make_dead_letter(
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key if isinstance(message.key, bytes) else None,
            value=message.value if isinstance(message.value, bytes) else None,
            stage=STAGE,
            reason=reason,
            aggregate_id=aggregate_id,
        )
        metrics.DEAD_LETTERS.labels(STAGE).inc()
        return await self.dlq_topic.send(key=aggregate_id, value=letter)

    async def reconcile_held(self) -> None:
        """Publish reconcile requests for held events older than the hold timeout."""
        now = datetime.now(UTC)
        held_total = 0
        oldest: datetime | None = None
        requests: list[PaymentEvent] = []
        for _key, stored in list(self.table.items()):
            if not stored or not stored.get("held"):
                continue
            state = AggregateState.from_dict(stored)
            held_total += len(state.held)
            first = state.held[0].occurred_at
            oldest = first if oldest is None or first < oldest else oldest
            overdue = Sequencer.overdue_held(state, now=now, timeout=self.hold_timeout)
            if overdue:
                request = await self._lookup(state, overdue[-1], now)
                if request is not None:
                    requests.append(request)
        metrics.HELD_EVENTS.set(held_total)
        metrics.OLDEST_HELD_AGE.set((now - oldest).total_seconds() if oldest else 0.0)
        for request in requests:
            key = request.payment_id or request.aggregate_id
            await self.events_topic.send(key=key, value=request)

    async def _lookup(
        self, state: AggregateState, held: Event, now: datetime
    ) -> PaymentEvent | None:
        attrs: Mapping[str, str] = held.attributes
        psp, object_id = attrs.get("psp"), attrs.get("psp_object_id")
        if not psp or not object_id:
            metrics.RECONCILES.labels("no_psp_reference").inc()
            return None
        from connectors import registry

        try:
            connector = registry.load(psp, self.app.settings)
            found = await asyncio.to_thread(
                connector.lookup_status, state.aggregate_type, object_id
            )
        except (PaybusError, NotImplementedError) as exc:
            log.warning("reconcile of %s via %s failed: %s", state.aggregate_id, psp, exc)
            metrics.RECONCILES.labels("lookup_failed").inc()
            return None
        metrics.RECONCILES.labels("requested").inc()
        return PaymentEvent(
            event_id=f"reconcile:{state.aggregate_id}:{found.status}:{state.seq}",
            aggregate_id=state.aggregate_id,
            aggregate_type=state.aggregate_type,
            status=found.status,
            occurred_at=now,
            source="reconcile",
            method=state.method,
            psp=psp,
            psp_object_id=object_id,
            payment_id=attrs.get("payment_id"),
            settlement_date=found.settlement_date,
            attributes={RECONCILE_ATTR: "1"},
        )
