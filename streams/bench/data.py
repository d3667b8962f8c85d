"""Benchmark inputs: realistic payment events, their expected outcomes, and topic filling.

Events come from :mod:`streams.demo_data` (legal histories, shuffled, a fifth delivered twice),
with the PSP fields a real connector fills in, so the sequencer sees the mix it sees in
production: mostly applied, some duplicates, stale and held events. The expected number of
judgements and status updates is computed offline with the same pure engine, so the bench
knows exactly when a worker is done without trusting the broker's end offsets (Tansu's
ListOffsets LATEST is short by the last batch).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.agents.sequencer_records import to_engine_event
from streams.codec import AvroCodec
from streams.demo_data import HistoryEvent, delivery, histories
from streams.sequencing import Sequencer
from streams.sequencing_state import AggregateState
from streams.settings import Settings

#: Size of the raw baseline records: the order of an Avro ``PaymentEvent`` with PSP fields.
RAW_RECORD_BYTES = 300


@dataclass(frozen=True)
class Workload:
    """Encoded events in delivery order plus what the sequencer must make of them."""

    records: list[tuple[bytes, bytes]]
    judgements: int
    updates: int
    aggregates: int

    @property
    def mean_bytes(self) -> float:
        return sum(len(k) + len(v) for k, v in self.records) / max(len(self.records), 1)


def event_record(ev: HistoryEvent) -> dict[str, Any]:
    """A ``PaymentEvent`` as a connector publishes it (PSP reference, amount, currency)."""
    record = ev.as_record()
    record.update(
        psp="stripe",
        psp_object_id=f"pi_{ev.aggregate_id.replace('-', '')[:20]:0<24}",
        payment_id=ev.aggregate_id if ev.aggregate_type == "payment" else None,
        amount_minor=1999,
        currency="EUR",
        attributes={"crm_record_id": f"a0B{ev.aggregate_id[-6:]:0>15}"},
    )
    return record


def shuffled_events(count: int, *, prefix: str = "bench") -> list[HistoryEvent]:
    """``count`` events of legal histories, shuffled with duplicates (the sequencer's input)."""
    hist = histories(max(count // 4, 1) + 10, seed=17, prefix=prefix)
    return list(itertools.islice(delivery(hist, seed=19), count))


def in_order_events(count: int, *, prefix: str = "lat") -> list[HistoryEvent]:
    """``count`` events, each aggregate's history in order, aggregates interleaved: every event
    is applied at once, so each yields exactly one status update (for latency)."""
    hist = histories(max(count // 4, 1) + 10, seed=23, prefix=prefix)
    per_agg = list(hist.values())
    out: list[HistoryEvent] = []
    for round_ in itertools.zip_longest(*per_agg):
        out.extend(e for e in round_ if e is not None)
    return out[:count]


def build_workload(settings: Settings, events: list[HistoryEvent], codec: AvroCodec) -> Workload:
    """Encode ``events`` and judge them offline to know the expected counts."""
    engine = Sequencer(max_seen=settings.max_seen_ids, max_held=settings.max_held_events)
    states: dict[str, AggregateState] = {}
    judgements = updates = 0
    records: list[tuple[bytes, bytes]] = []
    for ev in events:
        record = event_record(ev)
        records.append((ev.aggregate_id.encode(), codec.encode("PaymentEvent", record)))
        result = engine.judge(states.get(ev.aggregate_id), to_engine_event(record))
        states[ev.aggregate_id] = result.state
        judgements += len(result.judgements)
        updates += len(result.updates)
    return Workload(records, judgements, updates, len(states))


def raw_records(count: int) -> list[tuple[bytes, bytes]]:
    """``count`` keyed records of :data:`RAW_RECORD_BYTES` bytes (the raw client baselines)."""
    pad = b"x" * RAW_RECORD_BYTES
    return [(f"bench-pay-{n % 20000:06d}".encode(), pad) for n in range(count)]


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes, bytes]],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send ``records`` batched (no await per delivery), flush, and return how many."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    sent = 0
    try:
        for key, value in records:
            await producer.send(topic, value=value, key=key)
            sent += 1
            if progress is not None and sent % 2000 == 0:
                progress(sent)
        await producer.flush()
    finally:
        await producer.stop()
    if progress is not None:
        progress(sent)
    return sent


def fill(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Pre-fill ``topic`` (blocking)."""
    asyncio.run(produce(bootstrap, topic, records))


def status_updates(
    settings: Settings, events: list[HistoryEvent], codec: AvroCodec
) -> tuple[list[tuple[bytes, bytes]], dict[str, str]]:
    """What the sequencer publishes for ``events`` (the CRM writer's input), encoded, and each
    aggregate's type. The updates name no CRM record id: the writer finds each record by its
    external id (the aggregate id), as for records the bench seeds."""
    from streams.agents.sequencer_records import status_update_record

    engine = Sequencer(max_seen=settings.max_seen_ids, max_held=settings.max_held_events)
    states: dict[str, AggregateState] = {}
    types: dict[str, str] = {}
    out: list[tuple[bytes, bytes]] = []
    for ev in events:
        record = event_record(ev)
        record["attributes"] = {}
        result = engine.judge(states.get(ev.aggregate_id), to_engine_event(record))
        states[ev.aggregate_id] = result.state
        for change in result.updates:
            update = status_update_record(change)
            types[update["aggregate_id"]] = update["aggregate_type"]
            out.append((ev.aggregate_id.encode(), codec.encode("StatusUpdate", update)))
    return out, types
