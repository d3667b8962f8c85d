"""The CRM writer stage: ``paybus.payments.status`` -> Salesforce, and what it costs in calls.

The input is what the sequencer publishes for the bench's workload (each aggregate's updates
in order, aggregates interleaved); every aggregate has its record seeded in the sandbox. The
stage is done when the worker has settled every update (written, or skipped as older); its
rate is timed from the first to the last record save the sandbox logged, and its API cost is
the worker's own call counter (``paybus_crm_api_calls_total``) over the updates it settled.

A second worker writes the same updates with the org-side rules deployed (the version guard
and the no-create rule, :mod:`connectors.salesforce.guard_rule`), so it upserts them by external
id without reading: the API calls that saves.
"""

from __future__ import annotations

from dataclasses import dataclass

from connectors.salesforce.settings import FieldMap
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
    """One record per aggregate, in its type's object."""
    by_object: dict[str, list[str]] = {}
    for agg, agg_type in types.items():
        by_object.setdefault(OBJECTS[agg_type], []).append(agg)
    for obj, aggs in by_object.items():
        for start in range(0, len(aggs), 5000):
            sf.admin.seed(obj, [{"External_Id__c": a} for a in aggs[start : start + 5000]])


@dataclass
class _Run:
    updates: int
    calls: float
    saves: list[float]
    trace: procs.CpuTrace


def _run(
    ctx: BenchContext, updates: list[tuple[bytes, bytes]], types: dict[str, str], guard: str
) -> _Run:
    """One crm worker through ``updates``; ``guard="rule"``: the org-side rules are deployed
    on every object."""
    n = len(updates)
    label = "CRM writer" if guard == "read" else "CRM writer, org-side guard"
    with (
        procs.fresh_broker(ctx.settings, ctx.workdir, f"crm-{guard}") as bootstrap,
        salesforce(ctx.workdir, f"crm-{guard}") as sf,
    ):
        prefix = ctx.prefix(f"crm-{guard}")
        tm = TopicMap(prefix, ctx.settings.partitions, 1)
        create_topics(bootstrap, tm.all())
        ctx.progress(0, n, f"{label}: seeding records, filling")
        _seed(sf, types)
        if guard == "rule":
            for mapping in FieldMap().objects():
                sf.admin.deploy_paybus_rules(mapping)
        since = len(sf.admin.writes())
        data.fill(bootstrap, tm.status_updates.name, updates)
        env = procs.worker_env(ctx.settings, bootstrap, prefix, ctx.scratch(f"crm-{guard}"))
        env.update(sf.worker_env(), PAYBUS_WEB_PORT=str(free_port()))
        env["PAYBUS_SALESFORCE__VERSION_GUARD"] = guard
        worker = procs.Worker.role("crm", env, ctx.workdir / f"crm-{guard}.log")
        ctx.progress(0, n, f"{label}: worker starting")
        with procs.running([worker]):
            ctx.progress(0, n, f"{label}: writing")
            trace, _ = procs.wait_counted(
                [worker], n, 180 + n / 100, lambda c: ctx.progress(c, n, None)
            )
            calls = crm_calls(worker)
        saves = [t for t, _, _ in sf.admin.writes(since)]
    if not saves:
        raise procs.BenchError(f"the {label} saved no record")
    return _Run(n, calls, saves, trace)


def measure_crm_writer(ctx: BenchContext, workload: data.Workload) -> list[Row]:
    """``paybus worker --role crm`` against a pre-filled status topic and the sandbox: once as
    the bench's updates come (found by external id, read guard), once more with the org-side
    rules (:mod:`connectors.salesforce.guard_rule`), for what that saves."""
    events = data.shuffled_events(len(workload.records))
    updates, types = data.status_updates(ctx.settings, events, AvroCodec())
    run = _run(ctx, updates, types, "read")
    ruled = _run(ctx, updates, types, "rule")
    n, trace = run.updates, run.trace
    span = max(max(run.saves) - min(run.saves), trace.polled_s / 10, 1e-3)
    rate = n / span
    cpu = (trace.end_cpu - trace.idle_cpu) / n * 100_000
    per_1000 = run.calls / n * 1000
    ctx.figures["crm_writer"] = rate
    note = (
        f"{n:,} status updates of {len(types):,} records, {len(run.saves):,} record saves; "
        "1 worker; sandbox answers at once (a real org adds 0.1-0.5 s per call)"
    )
    batch = ctx.settings.salesforce.updates_per_batch or ctx.settings.salesforce.batch_size
    return [
        Row(
            "crm_writer_vs_faust", SECTION, "CRM writer agent", rate, "events/s",
            baseline="Faust ceiling", baseline_value=ctx.figures.get("faust_ceiling"),
            note=note, extra={"polled_rate": n / trace.polled_s, "saves": len(run.saves)},
        ),
        Row(
            "crm_writer_vs_plain", SECTION, "CRM writer agent vs plain loop", rate, "events/s",
            baseline="plain loop", baseline_value=ctx.figures.get("plain_loop"),
        ),
        Row(
            "crm_writer_cpu", SECTION, "CRM writer CPU", cpu, "CPU s/100k events",
            baseline="Faust ceiling", baseline_value=ctx.figures.get("faust_cpu_100k"),
        ),
        Row(
            "crm_api_calls", "cost", "Salesforce API calls per 1,000 status updates", per_1000,
            "calls", target=COST_TARGET,
            note=f"{run.calls:.0f} calls for {n:,} updates, batches of up to {batch}; "
            "records found by external id, read-then-write guard",
        ),
        Row(
            "crm_api_calls_rule", "cost",
            "Salesforce API calls per 1,000 status updates, org-side guard",
            ruled.calls / n * 1000, "calls", target=COST_TARGET,
            baseline="read guard", baseline_value=per_1000,
            note=f"{ruled.calls:.0f} calls for the same {n:,} updates, both validation rules "
            "deployed (PAYBUS_SALESFORCE__VERSION_GUARD=rule): upserted by external id, no reads",
        ),
    ]  # fmt: skip
