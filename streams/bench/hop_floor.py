"""The broker's latency floor per Kafka hop, measured in the same run as the webhook -> CRM p99.

The path from webhook to CRM record crosses Kafka three times (raw webhook -> normaliser,
canonical event -> sequencer, status update -> CRM writer). On Apache Kafka a consumer's fetch
returns as soon as a record arrives (``fetch.min.bytes`` 1), so a hop costs about a produce
round trip. Tansu holds a fetch that found nothing for the full ``fetch_max_wait`` and does not
answer it early when records arrive, so a record produced meanwhile waits for the held fetch to
come back empty and the next one to find it: up to the whole wait, and half of it on average
when records trickle in.

This measures that floor with no stage in between: aiokafka alone (``acks=all``, no linger),
one record a millisecond spread over the partitions, read by a consumer with the workers'
fetch wait; latency is the read minus the send, on one clock. From these, the floor of the
path's p99 at 1,000/s: an update waits for the CRM writer's next write, up to the write
interval the API-call target allows (uniformly, as updates arrive at random), after three such
hops; the p99 of that sum (drawn from the measured hops) is what the bus would reach if no
stage took any time (see :func:`streams.bench.webhook_latency.cost_floor_note`).
"""

from __future__ import annotations

import asyncio
import random
import struct
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.admin import create_topics
from streams.bench import procs
from streams.bench.baselines import SECTION, topic_spec
from streams.bench.context import BenchContext
from streams.bench.crm_writer import COST_TARGET
from streams.bench.report import Row, percentile

#: Records a second: the rate of the issue's p99 target.
RATE = 1000.0
#: The first records are not counted (connections and the first fetches settling).
WARM_FRACTION = 0.1
#: Reading stops once no record has come for this long after the last send.
QUIET_S = 2.0
_STAMP = struct.Struct(">d")
#: Kafka hops from webhook to CRM writer: raw webhook, canonical event, status update.
KAFKA_HOPS = 3


def write_interval_ms(rate: float, calls_per_1000: float = COST_TARGET.limit) -> float:
    """The shortest mean time between CRM writes that keeps ``rate`` updates/s within
    ``calls_per_1000`` API calls per 1,000 updates (one call a write)."""
    return 1000.0 / (rate * calls_per_1000 / 1000.0)


async def hop_latencies(
    bootstrap: str, topic: str, partitions: int, count: int, fetch_wait_ms: int
) -> list[float]:
    """Send ``count`` records at :data:`RATE` and return each one's send -> read time (ms)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=fetch_wait_ms
    )
    await producer.start()
    await consumer.start()
    latencies: list[float] = []
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        sent = asyncio.Event()

        async def read() -> None:
            quiet_since = time.monotonic()
            while not sent.is_set() or time.monotonic() - quiet_since < QUIET_S:
                batch = await consumer.getmany(timeout_ms=200)
                now = time.perf_counter()
                for messages in batch.values():
                    for msg in messages:
                        assert msg.value is not None
                        latencies.append((now - _STAMP.unpack(msg.value)[0]) * 1000)
                if batch:
                    quiet_since = time.monotonic()
                if len(latencies) >= count:
                    return

        reader = asyncio.create_task(read())
        await asyncio.sleep(0.5)  # the consumer's first fetches are out before the first send
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            value = _STAMP.pack(time.perf_counter())
            await producer.send(topic, value, partition=i % partitions)
        await producer.flush()
        sent.set()
        await reader
    finally:
        await producer.stop()
        await consumer.stop()
    return latencies


def measure(ctx: BenchContext) -> list[Row]:
    """p50 and p99 of one Kafka hop at :data:`RATE` with the workers' fetch wait."""
    wait_ms = ctx.settings.effective_fetch_max_wait_ms
    parts = ctx.settings.partitions
    count = max(int(RATE * ctx.sizes.latency_s), 200)
    with procs.fresh_broker(ctx.settings, ctx.workdir, "hop") as bootstrap:
        topic = f"{ctx.prefix('hop')}.hop"
        create_topics(bootstrap, [topic_spec(topic, parts)])
        ctx.progress(0, None, f"Kafka hop at {RATE:,.0f}/s")
        got = asyncio.run(hop_latencies(bootstrap, topic, parts, count, wait_ms))
    counted = sorted(got[int(len(got) * WARM_FRACTION) :])
    if not counted:
        raise procs.BenchError("no record of the hop measurement came back")
    p50, p99 = percentile(counted, 0.5), percentile(counted, 0.99)
    gap = write_interval_ms(RATE)
    floor = path_floor_p99(counted, gap)
    ctx.figures["hop_p50_ms"], ctx.figures["hop_p99_ms"] = p50, p99
    ctx.figures["path_floor_p99_ms"] = floor
    note = (
        f"aiokafka send -> read, {len(counted):,} records at {RATE:,.0f}/s over {parts} "
        f"partitions, acks=all, fetch wait {wait_ms} ms (the workers' PAYBUS_FETCH_MAX_WAIT_MS): "
        "the floor each of the webhook -> CRM path's three hops pays on this broker"
    )
    floor_note = (
        f"p99 of a wait of up to {gap:.0f} ms for the CRM writer's next write (the interval "
        f"the API-call target allows at {RATE:,.0f}/s) plus {KAFKA_HOPS} hops drawn from the "
        "row above: the webhook -> CRM p99 if no stage took any time"
    )
    return [
        Row("kafka_hop_p50", SECTION, "one Kafka hop p50 (no stage)", p50, "ms"),
        Row("kafka_hop_p99", SECTION, "one Kafka hop p99 (no stage)", p99, "ms", note=note),
        Row(
            "path_floor_p99", SECTION, "webhook -> CRM p99 floor at 1,000/s (no stage work)",
            floor, "ms", note=floor_note,
        ),
    ]  # fmt: skip


def path_floor_p99(hops_ms: list[float], gap_ms: float, draws: int = 20_000) -> float:
    """The p99 of a uniform wait in [0, ``gap_ms``) plus :data:`KAFKA_HOPS` independent draws
    from ``hops_ms`` (seeded: the same samples give the same floor)."""
    rng = random.Random(0)
    sums = sorted(
        rng.uniform(0, gap_ms) + sum(rng.choice(hops_ms) for _ in range(KAFKA_HOPS))
        for _ in range(draws)
    )
    return percentile(sums, 0.99)
