"""The router stage: CRM intents on ``paybus.crm.changes`` -> commands for each PSP's worker.

The workload is what an upstream CRM publishes: card payments (routed to Stripe), direct debits
(routed to GoCardless) and a few intents that fail validation (a negative amount), which become
``failed`` payment events. Every intent has exactly one output, so the stage is done when the
command topics and the events topic together hold as many records as intents were published.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.admin import create_topics
from streams.bench import data, procs
from streams.bench.context import BenchContext
from streams.bench.kafka_io import TopicRead, read_topic
from streams.bench.report import Row
from streams.broker import free_port
from streams.codec import AvroCodec
from streams.topics import TopicMap

SECTION = "stages"
#: One intent in this many fails validation (the CRM shows a ``failed`` status).
INVALID_EVERY = 20


def intent(n: int, now: datetime) -> tuple[str, dict[str, Any]]:
    """The ``n``-th intent and the topic kind its output goes to (``stripe``,
    ``gocardless`` or ``rejected``)."""
    agg = f"bench-route-{n:07d}"
    change: dict[str, Any] = {
        "change_id": f"chg-{agg}", "aggregate_id": agg, "aggregate_type": "payment",
        "intent": "create_payment", "occurred_at": now + timedelta(milliseconds=n),
        "source": "bench-crm", "crm_record_id": f"a0B{n:015d}", "amount_minor": 1000 + n % 9000,
    }  # fmt: skip
    if n % INVALID_EVERY == INVALID_EVERY - 1:
        change.update(method="card", currency="EUR", amount_minor=-5, payment_method_ref="pm_x")
        return "rejected", change
    if n % 5 < 3:
        change.update(method="card", currency="EUR", payment_method_ref=f"pm_card_{n % 997}")
        return "stripe", change
    change.update(method="direct_debit", currency="GBP", mandate_ref=f"MD{n % 991:010d}")
    return "gocardless", change


def build(count: int, codec: AvroCodec) -> tuple[list[tuple[bytes, bytes]], dict[str, int]]:
    """``count`` encoded intents and how many outputs each destination should receive."""
    now = datetime.now(UTC)
    records: list[tuple[bytes, bytes]] = []
    expected = {"stripe": 0, "gocardless": 0, "rejected": 0}
    for n in range(count):
        kind, change = intent(n, now)
        expected[kind] += 1
        records.append((change["aggregate_id"].encode(), codec.encode("CrmChange", change)))
    return records, expected


def _span(reads: list[TopicRead]) -> float:
    present = [r for r in reads if r.count]
    first = min(r.first_ms for r in present)
    last = max(r.last_ms for r in present)
    return max(last - first, 1) / 1000


def measure_router(ctx: BenchContext, workload: data.Workload) -> list[Row]:
    """``paybus worker --role router`` against a pre-filled ``paybus.crm.changes``."""
    n = len(workload.records)
    records, expected = build(n, AvroCodec())
    with procs.fresh_broker(ctx.settings, ctx.workdir, "router") as bootstrap:
        prefix = ctx.prefix("router")
        tm = TopicMap(prefix, ctx.settings.partitions, 1)
        create_topics(bootstrap, tm.all())
        ctx.progress(0, n, "router: filling")
        data.fill(bootstrap, tm.crm_changes.name, records)
        env = procs.worker_env(ctx.settings, bootstrap, prefix, ctx.scratch("router"))
        env["PAYBUS_WEB_PORT"] = str(free_port())
        worker = procs.Worker.role("router", env, ctx.workdir / "router.log")
        ctx.progress(0, n, "router: worker starting")
        with procs.running([worker]):
            ctx.progress(0, n, "router: routing")
            trace, _ = procs.wait_counted(
                [worker], n, 180 + n / 200, lambda c: ctx.progress(c, n, None)
            )
            topics = {
                "stripe": tm.commands("stripe").name,
                "gocardless": tm.commands("gocardless").name,
                "rejected": tm.payment_events.name,
            }
            reads = [
                asyncio.run(read_topic(bootstrap, topic, tm.partitions, expected[kind]))
                for kind, topic in topics.items()
            ]
    got = {kind: r.count for kind, r in zip(topics, reads, strict=True)}
    if got != expected:
        raise procs.BenchError(f"router outputs {got}, expected {expected}")
    rate = n / _span(reads)
    cpu = (trace.end_cpu - trace.idle_cpu) / n * 100_000
    ctx.figures["router"] = rate
    ctx.figures["router_cpu_100k"] = cpu
    note = (
        f"{n:,} intents: {expected['stripe']:,} card -> Stripe, {expected['gocardless']:,} "
        f"direct debit -> GoCardless, {expected['rejected']:,} invalid -> failed status; "
        "1 worker"
    )
    return [
        Row(
            "router_vs_faust", SECTION, "router agent", rate, "events/s",
            baseline="Faust ceiling", baseline_value=ctx.figures.get("faust_ceiling"),
            note=note, extra={"polled_rate": n / trace.polled_s},
        ),
        Row(
            "router_vs_plain", SECTION, "router agent vs plain loop", rate, "events/s",
            baseline="plain loop", baseline_value=ctx.figures.get("plain_loop"),
        ),
        Row(
            "router_cpu", SECTION, "router CPU", cpu, "CPU s/100k events",
            baseline="Faust ceiling", baseline_value=ctx.figures.get("faust_cpu_100k"),
        ),
    ]  # fmt: skip
