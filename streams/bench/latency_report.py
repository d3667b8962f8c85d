"""The latency section's rows: what a run at one rate found, and why the p99 and API-call
targets pull apart (:mod:`streams.bench.webhook_latency` runs them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from streams.bench import hops, pickup
from streams.bench.context import BenchContext
from streams.bench.crm_writer import COST_TARGET
from streams.bench.hop_floor import KAFKA_HOPS, write_interval_ms
from streams.bench.report import Row, Target

SECTION = "latency"
P99_TARGET = Target("value", "<", 250.0, "< 250 ms")


@dataclass(frozen=True)
class Plan:
    """One row of runs: its key, the rate, how many runs (the median p99 is reported) and
    the CRM writer's flush window when not the default."""

    key: str
    rate: float
    repeats: int = 1
    flush_s: float | None = None
    #: Said after the rate in the row's title, and added to its note.
    title: str = ""
    note: str = ""


@dataclass
class Run:
    """What one timed run at one rate measured (the rows are built from the plan's median
    run; the other runs' p99s ride along in :attr:`p99s`)."""

    rate: float
    achieved: float
    sent: int
    written: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    tail_p50_ms: float
    api_calls: float
    hop_times: list[hops.Hop]
    #: Cores of the whole machine busy while the webhooks were posted (None off Linux).
    busy_cores: float | None = None
    #: The p99 of every run at this rate, when it was run more than once (this is the median).
    p99s: list[float] = field(default_factory=list)
    #: POST -> status update produced: the path before the CRM writer (timed runs only).
    before_writer: hops.Hop | None = None
    #: Per stage, how long records waited in Kafka before it took them (timed runs only).
    waited: dict[str, pickup.Pickup] = field(default_factory=dict)


def partitions_said(ctx: BenchContext) -> str:
    """The run's partitions, and whether they are the profile's default."""
    settings = ctx.settings
    if "partitions" in settings.model_fields_set:
        return f"{settings.partitions} partitions (PAYBUS_PARTITIONS)"
    return f"{settings.partitions} partitions (the {settings.profile} profile's default)"


def rows(ctx: BenchContext, runs: list[tuple[Plan, Run]]) -> list[Row]:
    """The rows of each plan's (median) run: p50, p99 with why, and where the time went."""
    out: list[Row] = []
    for plan, run in runs:
        key, flush_s = plan.key, plan.flush_s
        label = f"{run.rate:,.0f}/s{plan.title}"
        note = (
            f"{run.sent:,} webhooks posted at {run.achieved:,.0f}/s (the most the web worker "
            f"took, where below the rate asked), {run.written:,} CRM records updated; max "
            f"{run.max_ms:.0f} ms, p50 of the last fifth {run.tail_p50_ms:.0f} ms; "
            f"{run.api_calls:.1f} Salesforce calls per 1,000 updates (org-side guard: upserts, "
            f"no reads); sandbox answers at once; {partitions_said(ctx)}"
        )
        if flush_s is not None:
            label += f", {flush_s * 1000:.0f} ms CRM window"
            note += (
                f"; CRM flush window {flush_s} s (PAYBUS_SALESFORCE__FLUSH_INTERVAL_S), not "
                "the default: the latency of the path without the API-call bound"
            )
        if plan.note:
            note += f"; {plan.note}"
        if run.p99s:
            note += (
                f"; median of {len(run.p99s)} runs, p99s "
                + ", ".join(f"{p:.0f}" for p in run.p99s)
                + " ms (figures of the median run)"
            )
        if key == "1k":
            note += "; " + cost_floor_note(run, ctx.figures)
        if run.busy_cores is not None:
            note += (
                f"; {run.busy_cores:.2f} of {os.cpu_count()} cores busy while posting (broker, "
                "workers, sandbox and load generator share them)"
            )
        extra = {
            "rate": run.rate, "achieved_rate": run.achieved, "max_ms": run.max_ms,
            "tail_p50_ms": run.tail_p50_ms, "api_calls_per_1000": run.api_calls,
            "busy_cores": run.busy_cores, "p99s_ms": run.p99s, "flush_interval_s": flush_s,
        }  # fmt: skip
        out.append(
            Row(f"webhook_crm_p50_{key}", SECTION, f"webhook -> CRM p50 at {label}",
                run.p50_ms, "ms")
        )  # fmt: skip
        out.append(
            Row(
                f"webhook_crm_p99_{key}", SECTION, f"webhook -> CRM p99 at {label}", run.p99_ms,
                "ms", target=P99_TARGET if key == "1k" else None, note=note, extra=extra,
            )
        )  # fmt: skip
        out += [
            hops.hop_row(SECTION, key, label, hop, waited=run.waited.get(pickup.stage_of(hop.name)))
            for hop in run.hop_times
        ]
        if (before := run.before_writer) is not None:
            title = "webhook -> status update on Kafka, before the CRM writer"
            out.append(hops.hop_row(SECTION, key, label, before, title))
    return out


def cost_floor_note(run: Run, figures: Mapping[str, float] | None = None) -> str:
    """Why the p99 and API-call targets pull apart at ``run.rate``: an update that arrives just
    after a write waits for the next one, and the call target spaces writes at least
    :func:`write_interval_ms` apart, on top of the path before the writer; with the broker's
    floor per Kafka hop measured in the same run (:mod:`streams.bench.hop_floor`), the bound
    that leaves before any stage does work."""
    gap = write_interval_ms(run.rate)
    note = (
        f"at {run.rate:,.0f}/s, {COST_TARGET.limit:.0f} calls per 1,000 updates allow a write "
        f"every {gap:.0f} ms at most, and an update just missing one waits that long"
    )
    if run.before_writer is not None:
        note += (
            f", after webhook -> status update (p50 {run.before_writer.p50_ms:.0f}, p99 "
            f"{run.before_writer.p99_ms:.0f} ms here): both targets hold together only while "
            f"that path, the CRM writer's fetch and its write stay under "
            f"{P99_TARGET.limit - gap:.0f} ms"
        )
    floor = (figures or {}).get("path_floor_p99_ms")
    if floor is not None:
        note += (
            f"; with this broker's latency per Kafka hop measured alone (baselines), that wait "
            f"and the path's {KAFKA_HOPS} hops come to a p99 of {floor:.0f} ms before any "
            "stage does any work"
        )
    return note
