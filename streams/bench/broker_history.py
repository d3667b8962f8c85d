"""What a partition's history costs the broker: Tansu's CPU per record delivered to a consumer
waiting at the end of the partitions, on short partitions and on long ones.

Tansu (the embedded broker) spends CPU in proportion to the record batches a partition holds
whenever it answers a consumer waiting for new records: a bus at 1,000 events/s writes batches
of a record or two, so every record delivered costs the broker more the longer the bus has run.
An embedded bus gets slower with age, and measurements on one broker get slower one after the
other (the webhook -> CRM runs each get a broker of their own for that reason). Reading back
from the middle of a long partition, or waiting idle at its end, costs nothing extra; Apache
Kafka finds offsets through its index whatever its logs hold.

Measured: a record produced (acks=all) to each of 4 partitions in turn and read by a consumer
assigned to all 4 and waiting at their end, ``ROUND_TRIPS`` times, on fresh partitions and on
partitions holding ``broker_history`` one-record batches between them; the broker process's
CPU time per round trip. Embedded profile only: a remote broker's CPU is not visible from here.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.admin import create_topics
from streams.bench import procs
from streams.bench.baselines import SECTION, topic_spec
from streams.bench.context import BenchContext
from streams.bench.report import Row
from streams.broker import embedded_broker

PARTITIONS = 4
ROUND_TRIPS = 300
_VALUE = b"x" * 300


async def _fill(bootstrap: str, topic: str, count: int) -> None:
    """``count`` one-record batches over the partitions (each send awaited: one a batch)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(topic, _VALUE, partition=n % PARTITIONS)
    finally:
        await producer.stop()


async def _round_trips(bootstrap: str, topic: str, pid: int, count: int) -> float:
    """The broker's CPU milliseconds per record produced and delivered to a consumer waiting
    at the end of ``topic``."""
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        await consumer.getmany(timeout_ms=200)
        cpu = procs.cpu_seconds(pid)
        for n in range(count):
            await producer.send_and_wait(topic, _VALUE, partition=n % PARTITIONS)
            deadline = time.monotonic() + 10
            while not any((await consumer.getmany(timeout_ms=1000)).values()):
                if time.monotonic() > deadline:
                    raise procs.BenchError(f"record {n} never reached the consumer of {topic}")
        return (procs.cpu_seconds(pid) - cpu) / count * 1000
    finally:
        await producer.stop()
        await consumer.stop()


def measure(ctx: BenchContext) -> list[Row]:
    """Broker CPU per delivered record on partitions holding ``broker_history`` batches,
    relative to fresh ones (embedded profile only)."""
    if ctx.settings.profile != "embedded":
        return []
    history = ctx.sizes.broker_history
    trips = min(ROUND_TRIPS, max(history // 4, 50))
    with embedded_broker(log_path=ctx.workdir / "tansu-history.log") as broker:
        assert broker.process is not None
        pid = broker.process.pid
        short, long = (f"{ctx.prefix('history')}.{name}" for name in ("short", "long"))
        specs = [topic_spec(short, PARTITIONS), topic_spec(long, PARTITIONS)]
        create_topics(broker.bootstrap, specs)
        ctx.progress(0, None, f"broker history: writing {history:,} batches")
        asyncio.run(_fill(broker.bootstrap, long, history))
        fresh = asyncio.run(_round_trips(broker.bootstrap, short, pid, trips))
        aged = asyncio.run(_round_trips(broker.bootstrap, long, pid, trips))
    note = (
        f"{trips} records produced and read by a consumer waiting at the end, {PARTITIONS} "
        f"partitions holding {history:,} one-record batches between them; baseline: fresh "
        "partitions. Tansu's CPU (Apache Kafka: about 1)"
    )
    return [
        Row("broker_cpu_fresh", SECTION, "broker CPU per delivered record, fresh partitions",
            fresh, "ms"),
        Row("broker_cpu_history", SECTION,
            f"broker CPU per delivered record, partitions of {history:,} batches", aged, "ms",
            baseline="fresh partitions", baseline_value=fresh, note=note),
    ]  # fmt: skip
