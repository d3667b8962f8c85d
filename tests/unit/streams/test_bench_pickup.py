"""The pickup-age split of ``make bench``'s hops: real prometheus_client histograms rendered
as a worker's metrics page, read back as the bench reads them."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from streams import metrics
from streams.bench.hops import Hop, hop_row
from streams.bench.pickup import METRIC, buckets, pickups, quantile, stage_of


def _page(observations: dict[str, list[float]]) -> str:
    """A metrics page holding the workers' pickup-age histogram with ``observations``."""
    registry = CollectorRegistry()
    bounds = metrics.STAGE_PICKUP_AGE._upper_bounds[:-1]  # the workers' own buckets
    hist = Histogram(METRIC, "age", ["stage"], buckets=bounds, registry=registry)
    for stage, values in observations.items():
        for value in values:
            hist.labels(stage).observe(value)
    return generate_latest(registry).decode()


def test_buckets_are_read_per_stage_from_a_metrics_page() -> None:
    found = buckets(_page({"sequencer": [0.003, 0.009], "crm-writer": [0.2]}))
    assert set(found) == {"sequencer", "crm-writer"}
    assert found["sequencer"][0.004] == 1 and found["sequencer"][0.01] == 2
    assert found["crm-writer"][float("inf")] == 1
    assert buckets("# nothing here\n") == {}


def test_quantiles_interpolate_within_a_bucket_as_prometheus_does() -> None:
    counts = {0.01: 0.0, 0.02: 100.0, float("inf"): 100.0}
    assert quantile(0.5, counts) == 0.015
    assert abs((quantile(0.99, counts) or 0) - 0.0199) < 1e-9
    assert quantile(0.5, {0.01: 0.0, float("inf"): 0.0}) is None
    # Past the last finite bound the histogram only knows that bound.
    assert quantile(0.99, {0.01: 0.0, 0.02: 0.0, float("inf"): 5.0}) == 0.02


def test_a_run_counts_only_what_arrived_between_the_two_scrapes() -> None:
    warm = [0.5] * 50  # the warm-up: slow, and not to be counted
    run = [0.005] * 98 + [0.012, 0.03]
    before = buckets(_page({"normaliser": warm}))
    after = buckets(_page({"normaliser": warm + run, "sequencer": []}))

    found = pickups(before, after)

    assert set(found) == {"normaliser"}  # a stage that took nothing is left out
    got = found["normaliser"]
    assert got.count == 100
    assert 4.0 <= got.p50_ms <= 6.0  # inside the 4-6 ms bucket
    assert 10.0 <= got.p99_ms <= 12.5


def test_a_hop_row_says_how_much_of_it_was_spent_in_kafka() -> None:
    waited = pickups({}, buckets(_page({"sequencer": [0.009] * 10})))["sequencer"]
    hop = Hop("sequencer", 10, 17.0, 34.0)
    row = hop_row("latency", "1k", "1,000/s", hop, waited=waited)
    assert re.search(
        r"in Kafka before the sequencer stage took them .* p50 \d+, p99 \d+ ms", row.note
    )
    assert row.extra["pickup_p50_ms"] == waited.p50_ms
    assert stage_of("crm") == "crm-writer" and stage_of("web") == ""
