"""The CRM writer stage: ``paybus.payments.status`` -> Salesforce, and what it costs in calls.

The input is what the sequencer publishes for the bench's workload (each aggregate's updates
in order, aggregates interleaved); every aggregate has its record seeded in the sandbox. The
stage is done when the worker has settled every update (written, or skipped as older); its
rate is timed from the first to the last record save the sandbox logged, and its API cost is
the worker's own call counter (``paybus_crm_api_calls_total``) over the updates it settled.
"""

from __future__ import annotations

from streams.admin import create_topics
from streams.bench import data, procs
from streams.bench.context import BenchContext
from streams.bench.report import Row, Target
from streams.bench.salesforce import SalesforceProc, salesforce
from streams.broker import free_port
from streams.codec import AvroCodec
from streams.topics import TopicMap

SECTION = "stages"
COST_TARGET = Target("value", "<=", 6.0, "<= 6 / 1,000")
OBJECTS = {"payment": "Payment__c", "mandate": "Mandate__c", "refund": "Refund__c"}
_CRM_CALLS = "paybus_crm_api_calls_total"


def crm_calls(worker: procs.Worker) -> float:
    """The worker's Salesforce API calls so far (all operations)."""
    text = worker.metrics_text() or ""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(_CRM_CALLS + "{")
    )


def _seed(sf: SalesforceProc, types: dict[str, str]) -> None:
    by_object: dict[str, list[str]] = {}
    for agg, agg_type in types.items():
        by_object.setdefault(OBJECTS[agg_type], []).append(agg)
    for obj, aggs in by_object.items():
        for start in range(0, len(aggs), 5000):
            part = aggs[start : start + 5000]
            sf.admin.seed(obj, [{"External_Id__c": a} for a in part])


def measure_crm_writer(ctx: BenchContext, workload: data.Workload) -> list[Row]:
    """``paybus worker --role crm`` against a pre-filled status topic and the sandbox."""
    events = data.shuffled_events(len(workload.records))
    updates, types = data.status_updates(ctx.settings, events, AvroCodec())
    n = len(updates)
    with (
        procs.fresh_broker(ctx.settings, ctx.workdir, "crm") as bootstrap,
        salesforce(ctx.workdir, "crm") as sf,
    ):
        prefix = ctx.prefix("crm")
        tm = TopicMap(prefix, ctx.settings.partitions, 1)
        create_topics(bootstrap, tm.all())
        ctx.progress(0, n, "CRM writer: seeding records, filling")
        _seed(sf, types)
        since = len(sf.admin.writes())
        data.fill(bootstrap, tm.status_updates.name, updates)
        env = procs.worker_env(ctx.settings, bootstrap, prefix, ctx.scratch("crm"))
        env.update(sf.worker_env(), PAYBUS_WEB_PORT=str(free_port()))
        worker = procs.Worker.role("crm", env, ctx.workdir / "crm.log")
        ctx.progress(0, n, "CRM writer: worker starting")
        with procs.running([worker]):
            ctx.progress(0, n, "CRM writer: writing")
            trace, _ = procs.wait_counted(
                [worker], n, 180 + n / 100, lambda c: ctx.progress(c, n, None)
            )
            calls = crm_calls(worker)
        saves = [t for t, _, _ in sf.admin.writes(since)]
    if not saves:
        raise procs.BenchError("the CRM writer saved no record")
    span = max(max(saves) - min(saves), trace.polled_s / 10, 1e-3)
    rate = n / span
    cpu = (trace.end_cpu - trace.idle_cpu) / n * 100_000
    per_1000 = calls / n * 1000
    ctx.figures["crm_writer"] = rate
    note = (
        f"{n:,} status updates of {len(types):,} records, {len(saves):,} record saves; "
        "1 worker; sandbox answers at once (a real org adds 0.1-0.5 s per call)"
    )
    return [
        Row(
            "crm_writer_vs_faust", SECTION, "CRM writer agent", rate, "events/s",
            baseline="Faust ceiling", baseline_value=ctx.figures.get("faust_ceiling"),
            note=note, extra={"polled_rate": n / trace.polled_s, "saves": len(saves)},
        ),
        Row(
            "crm_writer_cpu", SECTION, "CRM writer CPU", cpu, "CPU s/100k events",
            baseline="Faust ceiling", baseline_value=ctx.figures.get("faust_cpu_100k"),
        ),
        Row(
            "crm_api_calls", "cost", "Salesforce API calls per 1,000 status updates", per_1000,
            "calls", target=COST_TARGET,
            note=f"{calls:.0f} calls for {n:,} updates, batches of up to "
            f"{ctx.settings.salesforce.updates_per_batch or ctx.settings.salesforce.batch_size}",
        ),
    ]  # fmt: skip
