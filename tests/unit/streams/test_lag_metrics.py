"""The lag collector exports only the partitions the worker owns now (no broker)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from kafka import TopicPartition
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams.lag import PartitionLag
from streams.lag_metrics import COMMITTED, END, LAG, ConsumerLagCollector

T = "paybus.payments.events"


class Cluster:
    """A fake reader: fixed committed/end offsets per partition, and a log of reads."""

    def __init__(self) -> None:
        self.committed = {0: 10, 1: 20, 2: 30, 3: None}
        self.end = {0: 15, 1: 20, 2: 45, 3: 7}
        self.reads: list[list[int]] = []

    def __call__(self, group: str, tps: Sequence[TopicPartition]) -> list[PartitionLag]:
        self.reads.append([tp.partition for tp in tps])
        rows = []
        for tp in tps:
            done, end = self.committed[tp.partition], self.end[tp.partition]
            lag = end - (0 if done is None else done)  # never committed: from the log start
            rows.append(PartitionLag(group, tp.topic, tp.partition, done, end, lag))
        return rows


class Assignment:
    """What the consumer owns; a test reassigns it the way a rebalance would."""

    def __init__(self, *partitions: int) -> None:
        self.owned = [TopicPartition(T, p) for p in partitions]

    def __call__(self) -> list[TopicPartition]:
        return list(self.owned)


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple[str, str, str], float]]:
    out: dict[str, dict[tuple[str, str, str], float]] = {LAG: {}, COMMITTED: {}, END: {}}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name in out:
                key = (sample.labels["group"], sample.labels["topic"], sample.labels["partition"])
                out[sample.name][key] = sample.value
    return out


Setup = tuple[CollectorRegistry, Assignment, Cluster, ConsumerLagCollector]


@pytest.fixture
def setup() -> Setup:
    registry = CollectorRegistry()
    owned, cluster = Assignment(0, 1), Cluster()
    collector = ConsumerLagCollector("paybus", owned, cluster)
    registry.register(collector)
    return registry, owned, cluster, collector


def test_exports_lag_committed_and_end_of_owned_partitions(setup: Setup) -> None:
    registry, _, _, _ = setup
    got = scrape(registry)
    assert got[LAG] == {("paybus", T, "0"): 5.0, ("paybus", T, "1"): 0.0}
    assert got[COMMITTED] == {("paybus", T, "0"): 10.0, ("paybus", T, "1"): 20.0}
    assert got[END] == {("paybus", T, "0"): 15.0, ("paybus", T, "1"): 20.0}


def test_series_of_partitions_given_away_disappear_after_a_rebalance(setup: Setup) -> None:
    registry, owned, cluster, _ = setup
    assert set(scrape(registry)[LAG]) == {("paybus", T, "0"), ("paybus", T, "1")}
    owned.owned = [TopicPartition(T, 2)]  # rebalance: 0 and 1 went to another worker
    got = scrape(registry)
    for name in (LAG, COMMITTED, END):
        assert set(got[name]) == {("paybus", T, "2")}, name
    assert got[LAG][("paybus", T, "2")] == 15.0
    assert cluster.reads[-1] == [2]  # only owned partitions are read
    owned.owned = []
    assert scrape(registry) == {LAG: {}, COMMITTED: {}, END: {}}


def test_a_never_committed_partition_exports_its_end_and_lag_but_no_committed(
    setup: Setup,
) -> None:
    registry, owned, _, _ = setup
    owned.owned = [TopicPartition(T, 3)]
    got = scrape(registry)
    assert got[END] == {("paybus", T, "3"): 7.0}
    assert got[LAG] == {("paybus", T, "3"): 7.0}  # its whole log is ahead of the group
    assert got[COMMITTED] == {}


def test_snapshot_mode_filters_by_the_assignment_at_scrape_time() -> None:
    """With a timer refreshing off the event loop, a scrape right after a rebalance must
    already have dropped the partitions that left, even before the next refresh."""
    registry, owned, cluster = CollectorRegistry(), Assignment(0, 1, 2), Cluster()
    collector = ConsumerLagCollector("paybus", owned, cluster, refresh_on_collect=False)
    registry.register(collector)
    assert scrape(registry)[LAG] == {}  # nothing read yet, nothing invented
    collector.refresh()
    assert len(scrape(registry)[LAG]) == 3
    owned.owned = [TopicPartition(T, 1)]
    assert set(scrape(registry)[LAG]) == {("paybus", T, "1")}
    assert cluster.reads == [[0, 1, 2]]  # scrapes never read in snapshot mode


def test_registering_never_reads_the_cluster() -> None:
    def exploding(group: str, tps: Sequence[TopicPartition]) -> list[PartitionLag]:
        raise AssertionError("registration must not do network I/O")

    registry = CollectorRegistry(auto_describe=True)
    registry.register(ConsumerLagCollector("g", Assignment(0), exploding))
