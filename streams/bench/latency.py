"""Latency through the sequencing agent alone: event published -> status update visible.

The issue's end-to-end figure (webhook received -> CRM record updated, with its target) is
:mod:`streams.bench.webhook_latency`; this one isolates the sequencer's share of it.

A paced publisher (this process) sends in-order payment events at a fixed rate while a
subscriber (also this process, no consumer group, a short fetch wait) reads
``paybus.payments.status``; each update is matched to its event by event id and the
difference of the two ``perf_counter`` readings is the latency a downstream consumer (the CRM
writer, later) would see. Every event is the next step of its aggregate's history, so each
yields exactly one update at once (no held events, whose wait is not the bus's latency).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams.admin import create_topics
from streams.bench import data, procs
from streams.bench.context import BenchContext
from streams.bench.report import Row, percentile
from streams.codec import AvroCodec
from streams.demo_data import HistoryEvent
from streams.topics import TopicMap

SECTION = "latency"
#: Tick of the paced publisher: events due in a tick are sent together.
_TICK_S = 0.005


@dataclass
class LatencyRun:
    rate: float
    achieved: float
    sent: int
    received: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    tail_p50_ms: float


class _Subscriber:
    """Reads status updates and stamps the arrival of the ones it waits for."""

    def __init__(self, bootstrap: str, tm: TopicMap) -> None:
        self.codec = AvroCodec()
        self.tm = tm
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5
        )
        self.arrived: dict[str, float] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        tps = [TopicPartition(self.tm.status_updates.name, p) for p in range(self.tm.partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=5000)
            now = time.perf_counter()
            for messages in batch.values():
                for msg in messages:
                    assert msg.value is not None
                    update = self.codec.decode(msg.value, "StatusUpdate")
                    self.arrived.setdefault(str(update["event_id"]), now)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        await self.consumer.stop()


async def _publish_paced(
    producer: AIOKafkaProducer, topic: str, records: list[tuple[str, bytes, bytes]], rate: float
) -> tuple[dict[str, float], float]:
    """Send ``records`` at ``rate`` per second; return send times by event id and the rate
    actually achieved (below ``rate`` means this machine could not even publish that fast)."""
    sent_at: dict[str, float] = {}
    start = time.perf_counter()
    i = 0
    while i < len(records):
        due = min(len(records), int((time.perf_counter() - start) * rate) + 1)
        while i < due:
            event_id, key, value = records[i]
            sent_at[event_id] = time.perf_counter()
            await producer.send(topic, value, key=key)
            i += 1
        await asyncio.sleep(_TICK_S)
    return sent_at, len(records) / (time.perf_counter() - start)


async def _measure(
    ctx: BenchContext, bootstrap: str, tm: TopicMap, rate: float, n: int
) -> LatencyRun:
    codec = AvroCodec()
    sub = _Subscriber(bootstrap, tm)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    await sub.start()
    try:
        # Warm-up: every partition has been fetched and the group is settled.
        warm = _encode(codec, data.in_order_events(200, prefix=f"warm{n}"))
        for _event_id, key, value in warm:
            await producer.send(tm.payment_events.name, value, key=key)
        await producer.flush()
        await _wait_arrivals(sub, [w[0] for w in warm], 60.0)
        count = int(rate * ctx.sizes.latency_s)
        records = _encode(codec, data.in_order_events(count, prefix=f"lat{n}"))
        ctx.progress(0, len(records), f"latency at {rate:,.0f}/s")
        sent_at, achieved = await _publish_paced(producer, tm.payment_events.name, records, rate)
        ids = list(sent_at)
        await _wait_arrivals(sub, ids, 30.0 + count / 1000, allow_missing=True)
    finally:
        await sub.stop()
        await producer.stop()
    in_order = [(sub.arrived[i] - sent_at[i]) * 1000 for i in ids if i in sub.arrived]
    lat = sorted(in_order)
    # Latency of the last fifth of the run: far above the whole run's p50 means the worker
    # fell behind (the rate is not sustainable), not that it is slow per event.
    tail = statistics.median(in_order[-max(len(in_order) // 5, 1) :]) if in_order else 0
    ctx.progress(len(lat), len(records), None)
    if not lat:
        raise procs.BenchError(f"no status update arrived at {rate}/s")
    return LatencyRun(
        rate, achieved, len(ids), len(lat), statistics.median(lat), percentile(lat, 0.99),
        lat[-1], tail,
    )  # fmt: skip


def _encode(codec: AvroCodec, events: list[HistoryEvent]) -> list[tuple[str, bytes, bytes]]:
    return [
        (e.event_id, e.aggregate_id.encode(), codec.encode("PaymentEvent", data.event_record(e)))
        for e in events
    ]


async def _wait_arrivals(
    sub: _Subscriber, ids: list[str], timeout_s: float, *, allow_missing: bool = False
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(i in sub.arrived for i in ids):
            return
        await asyncio.sleep(0.1)
    if not allow_missing:
        raise procs.BenchError(f"status updates missing after {timeout_s:.0f}s")


def second_rate(ctx: BenchContext) -> tuple[float, str]:
    """5,000/s when the sequencer sustains it with headroom, else 70% of its measured rate."""
    measured = ctx.figures.get("sequencer")
    if measured is None or measured * 0.7 >= 5000:
        return 5000.0, "5,000 events/s"
    rate = max(100.0, (measured * 0.7) // 100 * 100)
    return rate, f"70% of the sequencer's measured {measured:,.0f}/s (5,000/s is not sustainable)"


def _run_rate(ctx: BenchContext, rate: float, n: int) -> LatencyRun:
    """One rate on a broker and a worker of its own: Tansu's cost per delivered record grows
    with what the partitions hold (:mod:`streams.bench.broker_history`), so a run sharing the
    broker with an earlier one would measure that history too."""
    name = f"latency{n}"
    with procs.fresh_broker(ctx.settings, ctx.workdir, name) as bootstrap:
        prefix = ctx.prefix(name)
        tm = TopicMap(prefix, ctx.settings.partitions, 1)
        create_topics(bootstrap, tm.all())
        env = procs.worker_env(ctx.settings, bootstrap, prefix, ctx.scratch(name))
        worker = procs.Worker.sequencer(env, ctx.workdir / f"{name}.log")
        ctx.progress(0, None, "latency: worker starting")
        with procs.running([worker]):
            return asyncio.run(_measure(ctx, bootstrap, tm, rate, n))


def measure_latency(ctx: BenchContext) -> list[Row]:
    """p50/p99 at 1,000 events/s and at a higher sustainable rate, one worker each."""
    high, why = second_rate(ctx)
    rates = [1000.0, high]
    runs = [_run_rate(ctx, rate, n) for n, rate in enumerate(rates)]
    rows: list[Row] = []
    for run in runs:
        label = f"{run.rate:,.0f}/s"
        note = (
            f"{run.sent:,} events over {ctx.sizes.latency_s:.0f} s, published at "
            f"{run.achieved:,.0f}/s, {run.received:,} updates seen; max {run.max_ms:.0f} ms, "
            f"p50 of the last fifth {run.tail_p50_ms:.0f} ms"
        )
        if run.rate != 1000.0:
            note += f"; rate: {why}"
        key = "1k" if run.rate == 1000.0 else "high"
        extra = {
            "rate": run.rate,
            "achieved_rate": run.achieved,
            "max_ms": run.max_ms,
            "tail_p50_ms": run.tail_p50_ms,
        }
        rows.append(
            Row(f"latency_p50_{key}", SECTION, f"event -> status p50 at {label}", run.p50_ms, "ms")
        )
        rows.append(
            Row(
                f"latency_p99_{key}",
                SECTION,
                f"event -> status p99 at {label}",
                run.p99_ms,
                "ms",
                note=note,
                extra=extra,
            )
        )
    return rows
