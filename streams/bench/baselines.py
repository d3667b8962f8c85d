"""Baselines measured in the same run: what the client library and Faust can do at best.

* raw produce / raw consume: aiokafka alone on 300-byte records, the run's partitions — the physical
  limit of client + broker + 2 cores;
* Faust's ceiling: an agent that only consumes and decodes (``streams.bench.faust_sink``);
* the plain loop: aiokafka consume -> pure ``Sequencer.judge`` (state in a dict) -> produce,
  with batched sends and one changelog write per aggregate per batch — the same rules with no
  framework, i.e. what the sequencing stage could cost.
"""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.admin import create_topics
from streams.agents.sequencer_records import to_engine_event
from streams.bench import data, procs
from streams.bench.context import BenchContext
from streams.bench.kafka_io import read_topic
from streams.bench.report import Row
from streams.codec import AvroCodec
from streams.sequencing import Sequencer
from streams.sequencing_state import AggregateState
from streams.state_codec import encode_state
from streams.topics import TopicMap, TopicSpec

SECTION = "baselines"


def topic_spec(name: str, partitions: int) -> TopicSpec:
    """A plain bench topic (bytes values, deleted by retention)."""
    return TopicSpec(name, name, "key", "bytes", "delete", partitions, 1, "bench", "bench")


def measure_raw(ctx: BenchContext) -> list[Row]:
    """aiokafka produce (batched sends, then flush) and consume (getmany) rates."""
    n = ctx.sizes.raw_records
    parts = ctx.settings.partitions
    records = data.raw_records(n)
    with procs.fresh_broker(ctx.settings, ctx.workdir, "raw") as bootstrap:
        topic = f"{ctx.prefix('raw')}.raw"
        create_topics(bootstrap, [topic_spec(topic, parts)])
        ctx.progress(0, n, "raw produce")
        started = time.perf_counter()
        asyncio.run(data.produce(bootstrap, topic, records, lambda c: ctx.progress(c, n, None)))
        produce_rate = n / (time.perf_counter() - started)
        ctx.progress(0, n, "raw consume")
        read = asyncio.run(
            read_topic(bootstrap, topic, parts, n, progress=lambda c: ctx.progress(c, n, None))
        )
    consume_rate = read.count / read.seen_s
    ctx.figures["raw_produce"] = produce_rate
    ctx.figures["raw_consume"] = consume_rate
    note = f"{n:,} records of {data.RAW_RECORD_BYTES} B, {parts} partitions, acks=all"
    return [
        Row("raw_produce", SECTION, "aiokafka produce", produce_rate, "records/s", note=note),
        Row("raw_consume", SECTION, "aiokafka consume", consume_rate, "records/s"),
    ]


def run_faust_ceiling(ctx: BenchContext, workload: data.Workload, name: str) -> tuple[float, float]:
    """One consume-only Faust worker over a pre-filled topic: (events/s, CPU s per 100k)."""
    n = len(workload.records)
    with procs.fresh_broker(ctx.settings, ctx.workdir, name) as bootstrap:
        prefix = ctx.prefix(name)
        tm = TopicMap(prefix, ctx.settings.partitions, 1)
        create_topics(bootstrap, tm.all())
        ctx.progress(0, n, "Faust ceiling: filling")
        data.fill(bootstrap, tm.payment_events.name, workload.records)
        env = procs.worker_env(ctx.settings, bootstrap, prefix, ctx.scratch(name))
        worker = procs.Worker.module("streams.bench.faust_sink", env, ctx.workdir / f"{name}.log")
        ctx.progress(0, n, "Faust ceiling: worker starting")
        with procs.running([worker]):
            ctx.progress(0, n, "Faust ceiling: consuming")
            trace, gauges = procs.wait_counted(
                [worker], n, 120 + n / 500, lambda c: ctx.progress(c, n, None)
            )
    span = gauges["bench_last_event_time"] - gauges["bench_first_event_time"]
    return n / max(span, 1e-6), (trace.end_cpu - trace.idle_cpu) / n * 100_000


def measure_faust_ceiling(ctx: BenchContext, workload: data.Workload) -> list[Row]:
    """A consume-only Faust agent in a worker subprocess, against a pre-filled topic."""
    rate, cpu = run_faust_ceiling(ctx, workload, "faust")
    ctx.figures["faust_ceiling"] = rate
    ctx.figures["faust_cpu_100k"] = cpu
    return [
        Row(
            "faust_ceiling",
            SECTION,
            "Faust consume-only agent",
            rate,
            "events/s",
            baseline="raw consume",
            baseline_value=ctx.figures.get("raw_consume"),
            note=f"decodes PaymentEvent ({workload.mean_bytes:.0f} B avg); no state, no output",
        ),
        Row("faust_cpu", SECTION, "Faust consume-only CPU", cpu, "CPU s/100k events"),
    ]


async def _plain_loop(
    ctx: BenchContext, bootstrap: str, tm: TopicMap, n: int
) -> tuple[float, float, int]:
    """Run the loop until ``n`` events are judged; return (seconds, CPU seconds, updates)."""
    settings = ctx.settings
    codec = AvroCodec()
    engine = Sequencer(max_seen=settings.max_seen_ids, max_held=settings.max_held_events)
    states: dict[str, AggregateState] = {}
    changelog = f"{tm.prefix}-plain-state-changelog"
    consumer = AIOKafkaConsumer(
        tm.payment_events.name,
        bootstrap_servers=bootstrap,
        group_id=f"{tm.prefix}-plain",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.effective_fetch_max_wait_ms,
        session_timeout_ms=int(max(settings.effective_session_timeout_s, 6) * 1000),
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    judged = updates = 0
    started = cpu0 = 0.0
    try:
        while judged < n:
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            if not batch:
                continue
            if not started:
                started, cpu0 = time.perf_counter(), time.process_time()
            futures = []
            for tp, messages in batch.items():
                dirty: set[str] = set()
                for msg in messages:
                    assert msg.value is not None
                    event = to_engine_event(codec.decode(msg.value, "PaymentEvent"))
                    result = engine.judge(states.get(event.aggregate_id), event)
                    states[event.aggregate_id] = result.state
                    dirty.add(event.aggregate_id)
                    judged += 1
                    updates += len(result.updates)
                    for ch in result.updates:
                        value = codec.encode("StatusUpdate", _update_record(ch))
                        futures.append(
                            await producer.send(tm.status_updates.name, value, key=msg.key)
                        )
                for agg in dirty:  # one changelog write per aggregate per batch
                    value = encode_state(states[agg])  # the agent's table form
                    futures.append(
                        await producer.send(
                            changelog, value, key=agg.encode(), partition=tp.partition
                        )
                    )
            await asyncio.gather(*futures)
            await consumer.commit()
            ctx.progress(judged, n, None)
        return time.perf_counter() - started, time.process_time() - cpu0, updates
    finally:
        await consumer.stop()
        await producer.stop()


def _update_record(ch: object) -> dict[str, object]:
    from streams.sequencing import StatusChange

    assert isinstance(ch, StatusChange)
    attrs = dict(ch.attributes)
    carried = {k: attrs.pop(k, None) for k in ("psp", "psp_object_id", "payment_id", "currency")}
    attrs.pop("amount_minor", None)
    return {
        "event_id": ch.event_id,
        "aggregate_id": ch.aggregate_id,
        "aggregate_type": ch.aggregate_type,
        "from_status": ch.from_status,
        "to_status": ch.to_status,
        "occurred_at": ch.occurred_at,
        "seq": ch.seq,
        "inferred": ch.inferred,
        "source": ch.source,
        "psp": carried["psp"],
        "psp_object_id": carried["psp_object_id"],
        "payment_id": carried["payment_id"],
        "crm_record_id": attrs.pop("crm_record_id", None),
        "attributes": attrs,
    }


def measure_plain_loop(ctx: BenchContext, workload: data.Workload) -> list[Row]:
    """The plain loop in this process, against a pre-filled topic."""
    n = len(workload.records)
    with procs.fresh_broker(ctx.settings, ctx.workdir, "plain") as bootstrap:
        tm = TopicMap(ctx.prefix("plain"), ctx.settings.partitions, 1)
        create_topics(bootstrap, [*tm.all(), topic_spec(f"{tm.prefix}-plain-state-changelog", 8)])
        ctx.progress(0, n, "plain loop: filling")
        data.fill(bootstrap, tm.payment_events.name, workload.records)
        ctx.progress(0, n, "plain loop: judging")
        seconds, cpu, _ = asyncio.run(_plain_loop(ctx, bootstrap, tm, n))
    rate = n / seconds
    cpu_100k = cpu / n * 100_000
    ctx.figures["plain_loop"] = rate
    ctx.figures["plain_cpu_100k"] = cpu_100k
    return [
        Row(
            "plain_loop",
            SECTION,
            "plain loop (aiokafka + judge)",
            rate,
            "events/s",
            baseline="Faust ceiling",
            baseline_value=ctx.figures.get("faust_ceiling"),
            note="consume -> decode -> Sequencer.judge -> batched status + changelog sends",
        ),
        Row("plain_cpu", SECTION, "plain loop CPU", cpu_100k, "CPU s/100k events"),
    ]
