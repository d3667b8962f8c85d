"""``streams.trace`` against the embedded broker: it finds a key's records where the bus put
them, and says so when it could not read a partition to its end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from kafka import KafkaProducer

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.codec import AvroCodec
from streams.topics import TopicMap
from streams.trace import trace

pytestmark = pytest.mark.broker


def _event(n: int, aggregate: str) -> dict[str, object]:
    return {"event_id": f"e-{aggregate}-{n}", "aggregate_id": aggregate,
            "aggregate_type": "payment", "status": ("created", "confirmed")[n % 2],
            "occurred_at": datetime(2026, 12, 4, 12, tzinfo=UTC) + timedelta(seconds=n),
            "source": "test", "method": "card"}  # fmt: skip


def test_a_trace_finds_its_keys_records_and_owns_up_to_what_it_did_not_read(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, [tm.crm_changes, tm.payment_events, tm.status_updates])
    codec = AvroCodec()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for n in range(200):  # neighbours on every partition, ours among them
        agg = "pay-traced" if n % 50 == 0 else f"pay-other-{n}"
        producer.send(tm.payment_events.name, key=agg.encode(),
                      value=codec.encode("PaymentEvent", _event(n, agg)))  # fmt: skip
    for n in range(2000):  # more than one poll returns (500 records)
        producer.send(tm.payment_events.name, key=b"pay-busy",
                      value=codec.encode("PaymentEvent", _event(n, "pay-busy")))  # fmt: skip
    producer.flush()
    producer.close()

    found = trace(broker.bootstrap, tm, "pay-traced", codec)
    assert [s.summary.split(", ")[1] for s in found.steps] == [
        f"event e-pay-traced-{n}" for n in (0, 50, 100, 150)
    ]
    assert [s.kind for s in found.steps] == ["event created", "event created"] * 2
    assert {s.topic for s in found.steps} == {tm.payment_events.name}
    # topics this bus has not created are named, not silently passed over
    assert found.skipped[tm.retry.name] == "no such topic"
    assert not any(name.startswith(tm.payment_events.name) for name in found.skipped)

    hurried = trace(broker.bootstrap, tm, "pay-busy", codec, timeout_s=0.0)
    assert 0 < len(hurried.steps) < 2000
    unfinished = [why for name, why in hurried.skipped.items() if "[" in name]
    assert unfinished and all("(--timeout)" in why for why in unfinished)
