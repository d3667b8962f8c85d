"""A tombstone (a record with a null value) on a stage's input topic is a dead letter like any
poison record: the worker keeps running and the records behind it on its partition flow.

It used to reach the normaliser and the sequencer as a ``None`` value; each stage failed on it
batch after batch until the worker exited, and again after every restart.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaProducer

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.codec import AvroCodec
from streams.dlq_store import collect, read_dlq
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess, paybus_env

from .support import Reader, statuses, wait_until

pytestmark = [pytest.mark.broker]


def _created(aggregate: str) -> dict[str, object]:
    return {
        "event_id": f"evt-{aggregate}", "aggregate_id": aggregate, "aggregate_type": "payment",
        "status": "created", "occurred_at": datetime.now(UTC), "source": "test",
        "method": "card",
    }  # fmt: skip


@pytest.mark.timeout(120)
def test_tombstones_are_dead_lettered_and_their_partitions_keep_moving(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    env = paybus_env(broker.bootstrap, topic_prefix, tmp_path)
    roles = ("--role", "normaliser", "--role", "sequencer")
    worker = WorkerProcess.paybus(env, tmp_path / "worker.log", *roles).start()
    reader = Reader(broker.bootstrap, {tm.status_updates.name: "StatusUpdate"})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    behind = f"pay-behind-{uuid.uuid4().hex[:8]}"
    try:
        worker.wait_ready()
        for topic in (tm.payment_events.name, tm.psp_webhooks.name):
            producer.send(topic, key=b"pay-gone", value=None, partition=5)
        event = AvroCodec().encode("PaymentEvent", _created(behind))
        producer.send(tm.payment_events.name, key=behind.encode(), value=event, partition=5)
        producer.flush()

        def applied() -> bool:
            reader.poll()
            return behind in statuses(reader.records[tm.status_updates.name])

        wait_until(applied, 60, "the event behind the tombstone to be applied")
        letters = collect(read_dlq(broker.bootstrap, tm.dlq.name)).values()
        tombstones = {lt.record["original_topic"]: lt.record for lt in letters}
        for topic in (tm.payment_events.name, tm.psp_webhooks.name):
            assert topic in tombstones, f"no dead letter for the tombstone on {topic}"
            assert tombstones[topic]["stage"] == "decode"
            assert "null value (a tombstone" in tombstones[topic]["reason"]
        assert worker.proc is not None and worker.proc.poll() is None, "the worker died"
    finally:
        producer.close()
        reader.close()
        worker.stop()
