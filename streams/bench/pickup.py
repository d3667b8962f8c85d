"""How long records waited in Kafka before each stage took them, from the workers' own
histograms (``paybus_stage_pickup_age_seconds``, see :mod:`streams.metrics`).

The topics' stamps (:mod:`streams.bench.hops`) say what each stage added end to end: a Kafka hop
plus the stage's wait and work. The pickup age splits that: a record's age when its stage took
it from the stream is the hop (producer linger, the broker, the consumer's fetch); the rest of
the stage's figure is the stage itself (its batch linger, its work, its produce). On Tansu the
hop is most of it, because a fetch that finds nothing is held for the whole fetch wait.

Figures are read from bucket counts as Prometheus' ``histogram_quantile`` does (linear within
a bucket), so they are good to a bucket's width (a few ms below 30 ms); the counts are taken as
a difference of two scrapes, so earlier traffic (the warm-up) is left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

METRIC = "paybus_stage_pickup_age_seconds"
#: The stage that ends each hop of :mod:`streams.bench.hops` (the web hop has no Kafka leg).
HOP_STAGES = {"normaliser": "normaliser", "sequencer": "sequencer", "crm": "crm-writer"}

#: Cumulative bucket counts by upper bound, per stage.
Buckets = dict[str, dict[float, float]]


@dataclass(frozen=True)
class Pickup:
    """A stage's pickup age over one run, in ms."""

    stage: str
    count: int
    p50_ms: float
    p99_ms: float


def stage_of(hop: str) -> str:
    """The stage whose pickup age is the Kafka leg of ``hop`` ("" for none)."""
    return HOP_STAGES.get(hop, "")


def buckets(text: str) -> Buckets:
    """The pickup-age buckets of a worker's metrics page, per stage ({} when it has none)."""
    out: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != METRIC:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                out.setdefault(sample.labels["stage"], {})[bound] = sample.value
    return out


def delta(before: Buckets, after: Buckets) -> Buckets:
    """``after - before`` per stage and bound (a stage new in ``after`` counts from 0)."""
    return {
        stage: {le: n - before.get(stage, {}).get(le, 0.0) for le, n in counts.items()}
        for stage, counts in after.items()
    }


def quantile(q: float, counts: Mapping[float, float]) -> float | None:
    """The ``q`` quantile (seconds) of cumulative ``counts``; None when they are empty.
    Past the last finite bound it is that bound (the histogram cannot say more)."""
    bounds = sorted(counts)
    total = counts[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        n = counts[le]
        if n >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * ((rank - below) / (n - below) if n > below else 1.0)
        lower, below = le, n
    return lower


def pickups(before: Buckets, after: Buckets) -> dict[str, Pickup]:
    """Each stage's pickup age between two scrapes (stages that took nothing left out)."""
    out: dict[str, Pickup] = {}
    for stage, counts in delta(before, after).items():
        p50, p99 = quantile(0.5, counts), quantile(0.99, counts)
        if p50 is None or p99 is None:
            continue
        out[stage] = Pickup(stage, int(max(counts.values())), p50 * 1000, p99 * 1000)
    return out
