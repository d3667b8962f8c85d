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
:meth:`Sequencer.reconcile` (inferred transitions).

Throughput shapes two choices. The table holds each state as compact bytes
(:mod:`streams.state_codec`), and the agent writes it itself, into the local store and onto
the table's changelog partition (the event's, as Faust would), as one batch per partition;
status updates likewise leave as pre-encoded Avro in one batch per partition
(:class:`BatchSender`). Faust still owns the consumer, the group, the acks and commits, and
the changelog recovery after a rebalance.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import weakref
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from faust.stores.memory import Store as MemoryStore
from faust.streams import _current_event
from faust.types import EventT

from streams import metrics
from streams.agents.batch_send import BatchSender, Record
from streams.agents.batches import batched
from streams.agents.common import connector_call, send_dead_letter
from streams.agents.sequencer_records import (
    RECONCILE_ATTR,
    from_engine_event,
    load_state,
    status_update_record,
    to_engine_event,
)
from streams.agents.state_cache import DecodedStates
from streams.app import PaybusApp
from streams.errors import PaybusError
from streams.records import PaymentEvent, codec_name
from streams.sequencing import Outcome, Sequencer
from streams.sequencing_state import AggregateState, Event, InvalidEvent
from streams.state_codec import encode_state, has_held

log = logging.getLogger(__name__)

STAGE = "sequencer"


class SequencerStage:
    """Wires the engine into a Faust agent, a table and a reconcile timer."""

    def __init__(self, app: PaybusApp) -> None:
        metrics.expect_dead_letters(STAGE)
        self.app = app
        settings = app.settings
        self.engine = Sequencer(max_seen=settings.max_seen_ids, max_held=settings.max_held_events)
        topics = app.topic_map
        # Values decoded to the Avro mapping, without a Faust record per event (building one
        # was a tenth of the stage's CPU); undecodable ones still become dead letters.
        self.events_topic = app.topic(
            topics.payment_events.name, key_type=str, key_serializer="raw",
            value_serializer=codec_name("PaymentEvent"),
        )  # fmt: skip
        self.status_topic = topics.status_updates.name
        # Values are encode_state() bytes: ~30 B a typical aggregate instead of a ~2 kB dict.
        # Faust picks the changelog's serializers from these types: keys JSON, values raw.
        self.table = app.Table(
            "sequencer-state",
            default=None,
            key_type=str,
            value_type=bytes,
            partitions=settings.partitions,
        )
        self._changelog_key = functools.partial(
            app.serializers.dumps_key, str, serializer=cast(Any, self.table).key_serializer
        )
        self.sender = BatchSender(app)
        self.decoded = DecodedStates(settings.state_cache_size)
        self.hold_timeout = timedelta(seconds=settings.hold_timeout_s)
        app.agent(self.events_topic, name="paybus.sequencer")(
            batched(app.settings, STAGE, self.process_batch)
        )
        app.timer(max(settings.hold_timeout_s / 4, 1.0), name="paybus.sequencer.reconcile")(
            self.reconcile_held
        )

    async def process_batch(self, events: list[EventT[Any]]) -> None:
        """Judge a batch in partition order, publish its outcomes, then write the state.

        The order is what makes a crash harmless without transactions: status updates and
        dead letters are delivered first (awaited), the state is written after (the local
        store, and the changelog as one batch per partition), and the offsets are committed
        last: Faust acks the batch when this returns and commits later, after flushing the
        producer that carries the changelog batches. A worker killed in between re-reads the
        batch, finds the state as it was before it, and the deterministic engine emits the very
        same updates (same event id, same seq) again; the CRM writer's version guard absorbs
        the repeat. The other order could lose an update for good (state saying "applied"
        while the update never left).
        """
        store = self.table.data
        encode = self.app.avro.encode

        def encode_held(held: Event) -> bytes:
            return encode("PaymentEvent", from_engine_event(held))

        states: dict[str, AggregateState | None] = {}
        last_event: dict[str, EventT[Any]] = {}
        counts: Counter[tuple[str, str, str]] = Counter()
        updates: list[Record] = []
        dead: list[Any] = []
        evicted_seen = evicted_held = 0
        held_before = 0  # of the aggregates the batch touches, as loaded
        hits, misses = self.decoded.hits, self.decoded.misses
        for event in events:
            value = cast(Mapping[str, Any], event.value)
            try:
                engine_event = to_engine_event(value)
            except InvalidEvent as exc:
                counts["rejected", value["aggregate_type"], value["source"]] += 1
                dead.append(
                    await self._dead_letter(event, f"invalid event: {exc}", value["aggregate_id"])
                )
                continue
            agg = engine_event.aggregate_id
            if agg in states:
                state = states[agg]
            else:
                state = self.decoded.load(agg, store.get(agg))
                held_before += len(state.held) if state is not None else 0
            if engine_event.attributes.get(RECONCILE_ATTR) and state is not None:
                result = self.engine.reconcile(
                    state, engine_event.status, now=engine_event.occurred_at, source="reconcile"
                )
            else:
                result = self.engine.judge(state, engine_event)
            states[agg] = result.state
            last_event[agg] = event
            raw_key = event.message.key
            key = raw_key if isinstance(raw_key, bytes) else agg.encode()  # unkeyed: by aggregate
            for change in result.updates:
                updates.append((None, key, encode("StatusUpdate", status_update_record(change))))
            for index, judgement in enumerate(result.judgements):
                ev = judgement.event
                counts[judgement.outcome.value, ev.aggregate_type, ev.source] += 1
                if judgement.outcome is Outcome.REJECTED:
                    # The first judgement stands for this message; later ones are held events
                    # given up on now (evicted, or unreachable): their letters carry them.
                    held = None if index == 0 else (ev.event_id, encode_held(ev))
                    reason = f"{ev.event_id}: {judgement.reason}"
                    dead.append(await self._dead_letter(event, reason, ev.aggregate_id, held))
            evicted_seen += result.evicted_seen
            evicted_held += result.evicted_held
        if updates:
            dead += await self.sender.send(self.status_topic, updates)
        await asyncio.gather(*dead)
        self._count(counts, evicted_seen, evicted_held)
        # The held gauge moves with every batch; the reconcile timer (every hold timeout / 4)
        # sets it absolutely, which also corrects it after partitions move to another worker.
        held_after = sum(len(s.held) for s in states.values() if s is not None)
        metrics.HELD_EVENTS.inc(held_after - held_before)
        metrics.SEQUENCER_STATE_LOADS.labels("hit").inc(self.decoded.hits - hits)
        metrics.SEQUENCER_STATE_LOADS.labels("miss").inc(self.decoded.misses - misses)
        await self._write_states(states, last_event)

    async def _write_states(
        self,
        states: Mapping[str, AggregateState | None],
        last_event: Mapping[str, EventT[Any]],
    ) -> None:
        """Put each changed state in the local store and queue it on the changelog.

        This is what ``table[key] = value`` does, minus a Faust send (record, future, sensor)
        per key: the changelog partition is the event's partition (Faust's rule, so recovery
        after a rebalance reads it back), and the store is told the key's partition so a
        partition revoked from this worker is dropped from memory when recovery completes.
        """
        store = self.table.data
        memory = store if isinstance(store, MemoryStore) else None
        changelog: list[Record] = []
        remember = self.decoded.remember
        for agg, state in states.items():
            if state is None:
                continue
            value = encode_state(state)
            remember(agg, value, state)
            event = last_event[agg]
            partition = event.message.partition
            if memory is not None:  # its dicts directly, as Store.__setitem__ and recovery do
                memory.data[agg] = value
                memory._key_partition[agg] = partition
            else:  # a store on disk picks the partition's database from the current event
                token = _current_event.set(weakref.ref(event))
                try:
                    store[agg] = value
                finally:
                    _current_event.reset(token)
            changelog.append((partition, self._changelog_key(agg), value))
        if changelog:
            await self.sender.send(self.table.changelog_topic.get_topic_name(), changelog)

    @staticmethod
    def _count(counts: Counter[tuple[str, str, str]], evicted_seen: int, evicted_held: int) -> None:
        """The batch's metrics, one call per label set (not one per event)."""
        for (outcome, agg_type, source), n in counts.items():
            metrics.EVENTS.labels(STAGE, outcome, agg_type, source).inc(n)
        if evicted_seen:
            metrics.SEQUENCER_EVICTIONS.labels("seen").inc(evicted_seen)
        if evicted_held:
            metrics.SEQUENCER_EVICTIONS.labels("held").inc(evicted_held)

    async def _dead_letter(
        self,
        event: EventT[Any],
        reason: str,
        aggregate_id: str | None,
        held: tuple[str, bytes] | None = None,
    ) -> Any:
        """Queue a dead letter carrying the original bytes (or, for a held event, that event's
        record under a letter id of its own); return its delivery future."""
        return await send_dead_letter(
            self.app, event, stage=STAGE, reason=reason, aggregate_id=aggregate_id, carried=held
        )

    async def reconcile_held(self) -> None:
        """Publish reconcile requests for held events older than the hold timeout."""
        now = datetime.now(UTC)
        held_total = 0
        oldest: datetime | None = None
        requests: list[PaymentEvent] = []
        for key, stored in list(self.table.data.items()):
            if not stored or (stored[:1] != b"{" and not has_held(stored)):
                continue
            state = load_state(key, stored)
            if state is None or not state.held:
                continue
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
            found = await connector_call(
                psp,
                "lookup_status",
                lambda: connector.lookup_status(state.aggregate_type, object_id),
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
