"""The bus's stages, measured as operators run them: ``paybus worker --role <stage>``.

Each stage is one function ``(ctx, workload) -> list[Row]`` registered in :data:`STAGES`;
a stage that does not exist yet is registered with ``None`` and shows as a "not yet" row, so
adding the router or the CRM writer is writing that one function.

A stage's rate is timed from its first to its last output record's CreateTime (a worker's
group join stays outside the window); its CPU cost comes from ``/proc/<pid>/stat`` of the
worker, from the last moment it had judged nothing to the moment it had judged everything.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from streams.admin import create_topics
from streams.bench import data, procs
from streams.bench.baselines import run_faust_ceiling
from streams.bench.context import BenchContext
from streams.bench.crm_writer import measure_crm_writer
from streams.bench.kafka_io import read_topic
from streams.bench.report import Row, Target, not_yet
from streams.bench.router import measure_router
from streams.broker import free_port
from streams.settings import PRODUCTION_PARTITIONS
from streams.topics import TopicMap

SECTION = "stages"
SCALE = "scale"
#: Partitions of the scale runs, whatever the profile's default (the issue's: 8).
SCALE_PARTITIONS = PRODUCTION_PARTITIONS
SEQUENCER_TARGET = Target("ratio", ">=", 0.8, ">= 0.8 x Faust ceiling")


@dataclass(frozen=True)
class SequencerRun:
    """One run of N sequencer workers over a workload."""

    workers: int
    rate: float
    cpu_100k: float
    updates: int
    polled_rate: float


def run_sequencers(
    ctx: BenchContext, workload: data.Workload, workers: int, *, prefill: bool, tag: str = ""
) -> SequencerRun:
    """Run ``workers`` sequencer workers (one group) over ``workload`` on a fresh broker.

    ``prefill``: fill the topic before the workers start (one worker: the stage's figure).
    Otherwise start the workers, let the group settle, then fill: with several workers,
    starting against a full topic would time their staggered joins and rebalances instead of
    their work.
    """
    n = len(workload.records)
    name = f"seq{workers}{tag}"  # a fresh data dir per run: no state left by the last one
    with procs.fresh_broker(ctx.settings, ctx.workdir, name) as bootstrap:
        prefix = ctx.prefix(name)
        tm = TopicMap(prefix, ctx.settings.partitions, 1)
        create_topics(bootstrap, tm.all())
        if prefill:
            ctx.progress(0, workload.judgements, f"sequencer x{workers}: filling")
            data.fill(bootstrap, tm.payment_events.name, workload.records)
        env = procs.worker_env(ctx.settings, bootstrap, prefix, ctx.scratch(name))
        pool = []
        for i in range(workers):
            wenv = {
                **env,
                "PAYBUS_WEB_PORT": str(free_port()),
                "PAYBUS_DATA_DIR": str(ctx.scratch(f"{name}-{i}")),
            }
            pool.append(procs.Worker.sequencer(wenv, ctx.workdir / f"{name}-{i}.log"))
        ctx.progress(0, workload.judgements, f"sequencer x{workers}: workers starting")
        with procs.running(pool):
            started = None
            if not prefill:
                _settle(ctx)
                ctx.progress(0, workload.judgements, f"sequencer x{workers}: filling")
                started = procs.start_trace(pool)  # they judge while the topic fills
                data.fill(bootstrap, tm.payment_events.name, workload.records)
            ctx.progress(0, workload.judgements, f"sequencer x{workers}: judging")
            trace, _ = procs.wait_counted(
                pool,
                workload.judgements,
                180 + n / 200,
                lambda c: ctx.progress(c, workload.judgements, None),
                trace=started,
            )
            read = asyncio.run(
                read_topic(bootstrap, tm.status_updates.name, tm.partitions, workload.updates)
            )
    if read.count != workload.updates:
        raise procs.BenchError(f"{read.count} status updates, expected {workload.updates}")
    cpu = (trace.end_cpu - trace.idle_cpu) / n * 100_000
    return SequencerRun(workers, n / read.span_s, cpu, read.count, n / trace.polled_s)


def _settle(ctx: BenchContext) -> None:
    """Give a freshly started group time to finish joining (Tansu: ~half the session timeout
    per join, and every late member triggers another round)."""
    time.sleep(max(3 * ctx.settings.effective_session_timeout_s, 3.0))


def measure_sequencer(ctx: BenchContext, workload: data.Workload) -> list[Row]:
    """The sequencing agent alone against a pre-filled ``paybus.payments.events``.

    Its ratio to Faust's ceiling is the median of ``sizes.ratio_pairs`` pairs: the first
    sequencer run against the baseline's ceiling, then a ceiling and a sequencer run back to
    back per further pair, so a machine that slows between two runs moves one pair, not the
    verdict.
    """
    first = run_sequencers(ctx, workload, 1, prefill=True)
    ctx.figures["sequencer"] = first.rate
    pairs: list[tuple[SequencerRun, float, float | None]] = []  # run, ceiling rate and CPU
    if ctx.figures.get("faust_ceiling"):
        pairs.append((first, ctx.figures["faust_ceiling"], ctx.figures.get("faust_cpu_100k")))
    for i in range(1, ctx.sizes.ratio_pairs):
        rate, cpu = run_faust_ceiling(ctx, workload, f"faust{i}")
        pairs.append((run_sequencers(ctx, workload, 1, prefill=True, tag=f"r{i}"), rate, cpu))
    ranked = sorted(pairs, key=lambda p: p[0].rate / p[1])
    run, ceiling, ceiling_cpu = ranked[(len(ranked) - 1) // 2] if ranked else (first, None, None)
    ctx.figures["sequencer_cpu_100k"] = run.cpu_100k
    ratios = ", ".join(f"{r.rate / c:.2f}" for r, c, _ in pairs)
    note = (
        f"{len(workload.records):,} events ({workload.aggregates:,} aggregates, "
        f"{workload.updates:,} status updates); 1 worker, {ctx.settings.partitions} partitions; "
        f"median of {len(pairs)} sequencer/ceiling pairs ({ratios})"
    )
    return [
        Row(
            "sequencer_vs_faust",
            SECTION,
            "sequencer agent",
            run.rate,
            "events/s",
            baseline="Faust ceiling (paired run)",
            baseline_value=ceiling,
            target=SEQUENCER_TARGET,
            note=note,
            extra={
                "polled_rate": run.polled_rate,
                "pairs": [{"sequencer": r.rate, "ceiling": c} for r, c, _ in pairs],
            },
        ),
        Row(
            "sequencer_vs_plain",
            SECTION,
            "sequencer agent vs plain loop",
            first.rate,
            "events/s",
            baseline="plain loop",
            baseline_value=ctx.figures.get("plain_loop"),
        ),
        Row(
            "sequencer_cpu",
            SECTION,
            "sequencer CPU",
            run.cpu_100k,
            "CPU s/100k events",
            baseline="Faust ceiling (paired run)",
            baseline_value=ceiling_cpu,
        ),
    ]


def measure_scale(ctx: BenchContext, workload: data.Workload) -> list[Row]:
    """Throughput with 1, 2 and 4 sequencer workers on :data:`SCALE_PARTITIONS` partitions
    (the issue's setting; the embedded default's 2 would leave the 4th worker idle)."""
    rows: list[Row] = []
    single: float | None = None
    cores = os.cpu_count()
    ctx = replace(ctx, settings=ctx.settings.model_copy(update={"partitions": SCALE_PARTITIONS}))
    for count in ctx.sizes.scale_workers:
        run = run_sequencers(ctx, workload, count, prefill=False)
        single = single or run.rate
        # One worker does not keep a core busy (it waits on fetches and acks), so more
        # workers than cores can still add throughput until the cores are full.
        busy = run.rate * run.cpu_100k / 100_000
        note = f"{SCALE_PARTITIONS} partitions; the workers kept {busy:.2f} of {cores} cores busy"
        if count == ctx.sizes.scale_workers[-1]:
            note += (
                f"; {cores} cores shared by the workers, the broker and this bench: above "
                f"{cores} workers they only share the same CPUs (scale is by partitions, "
                "on more machines)"
            )
        rows.append(
            Row(
                f"scale_{count}",
                SCALE,
                f"sequencer, {count} worker(s)",
                run.rate,
                "events/s",
                baseline="1 worker",
                baseline_value=single,
                note=note,
                extra={"cpu_100k": run.cpu_100k, "polled_rate": run.polled_rate},
            )
        )
    return rows


#: Stages in data-flow order; ``None`` marks one that does not exist yet.
StageFn = Callable[[BenchContext, data.Workload], list[Row]]
STAGES: dict[str, StageFn | None] = {
    "router": measure_router,
    "sequencer": measure_sequencer,
    "crm_writer": measure_crm_writer,
}


def pending_stage(name: str) -> Row:
    return not_yet(
        f"{name}_vs_faust",
        SECTION,
        f"{name.replace('_', ' ')} agent",
        "events/s",
        SEQUENCER_TARGET,
        f"the {name.replace('_', ' ')} stage does not exist yet",
    )
