"""Consumer lag as Prometheus series, only for the partitions this worker owns right now.

A ``Gauge`` with ``.labels(...)`` keeps every label set it ever saw: after a rebalance the
partitions a worker gave away would keep exporting their last lag forever, and the dashboard
would sum the same partition from two workers (the long-standing Faust complaint). A custom
collector instead builds the families afresh on every scrape from the current assignment, so a
partition's series moves with the partition.

Reading offsets is network I/O; a scrape of the Faust worker runs on its event loop. So the
collector can either read on each scrape (``refresh_on_collect=True``, right for a sidecar or
a test) or serve the last snapshot that a timer refreshed off the loop with
``await loop.run_in_executor(None, collector.refresh)``. Either way the snapshot is filtered
by the assignment *at scrape time*.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

from kafka import TopicPartition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streams.lag import EndOffsetReader, PartitionLag, Source, partition_lag

LAG = "paybus_consumer_lag"
COMMITTED = "paybus_consumer_committed_offset"
END = "paybus_consumer_end_offset"
#: Every metric name this module exports (the deploy drift test checks dashboards against it).
METRIC_NAMES: tuple[str, ...] = (LAG, COMMITTED, END)
LABELS = ("group", "topic", "partition")

#: What the worker owns now; e.g. ``lambda: app.consumer.assignment()`` in a Faust worker.
AssignmentProvider = Callable[[], Iterable[TopicPartition]]
#: Reads lag of a group on given partitions; :func:`kafka_reader` is the real one.
LagReader = Callable[[str, Sequence[TopicPartition]], list[PartitionLag]]


class KafkaLagReader:
    """A :data:`LagReader` that asks the cluster: committed offsets, then end offsets.

    The end offsets go through one :class:`~streams.lag.EndOffsetReader` kept for the reader's
    life: the worker refreshes lag every ``lag_refresh_s``, and a consumer made and closed per
    refresh logged a cancelled metadata request each time (see that class).
    """

    def __init__(self, bootstrap: str, source: Source = "fetch", timeout_s: float = 5.0) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        self.ends = EndOffsetReader(bootstrap, source)

    def __call__(self, group: str, tps: Sequence[TopicPartition]) -> list[PartitionLag]:
        return partition_lag(self.bootstrap, group, tps, timeout_s=self.timeout_s, reader=self.ends)

    def close(self) -> None:
        self.ends.close()


def kafka_reader(
    bootstrap: str, source: Source = "fetch", timeout_s: float = 5.0
) -> KafkaLagReader:
    """A reader that asks the cluster (committed offsets + end offsets from ``source``)."""
    return KafkaLagReader(bootstrap, source, timeout_s)


def _owned(assignment: AssignmentProvider) -> list[TopicPartition]:
    # Faust's TP and kafka-python's TopicPartition are both (topic, partition) tuples.
    return sorted({TopicPartition(str(tp[0]), int(tp[1])) for tp in assignment()})


class ConsumerLagCollector(Collector):
    """Yields lag, committed and end offset of ``group`` on the owned partitions only."""

    def __init__(
        self,
        group: str,
        assignment: AssignmentProvider,
        reader: LagReader,
        *,
        refresh_on_collect: bool = True,
    ) -> None:
        self.group = group
        self._assignment = assignment
        self._reader = reader
        self._refresh_on_collect = refresh_on_collect
        self._lock = threading.Lock()
        self._snapshot: dict[tuple[str, int], PartitionLag] = {}

    def refresh(self) -> None:
        """Read offsets of the partitions owned now (blocking I/O: keep it off the loop)."""
        rows = self._reader(self.group, _owned(self._assignment))
        with self._lock:
            self._snapshot = {(r.topic, r.partition): r for r in rows}

    def rows(self) -> list[PartitionLag]:
        """The snapshot's rows for partitions owned at this moment."""
        owned = {(tp.topic, tp.partition) for tp in _owned(self._assignment)}
        with self._lock:
            return sorted(row for key, row in self._snapshot.items() if key in owned)

    def describe(self) -> list[GaugeMetricFamily]:
        # Declared so registering the collector never triggers a read (auto_describe would
        # otherwise call collect(), i.e. network I/O, at import time).
        return list(_families())

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self._refresh_on_collect:
            self.refresh()
        lag, committed, end = _families()
        for row in self.rows():
            labels = [row.group, row.topic, str(row.partition)]
            end.add_metric(labels, row.end)
            if row.committed is not None:
                committed.add_metric(labels, row.committed)
            if row.lag is not None:
                lag.add_metric(labels, row.lag)
        yield from (lag, committed, end)


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            LAG,
            "Records the group has yet to process (end - committed; end - log start on a "
            "partition it never committed).",
            labels=LABELS,
        ),
        GaugeMetricFamily(COMMITTED, "The group's committed offset.", labels=LABELS),
        GaugeMetricFamily(
            END, "The partition's end offset (fetch high-water mark).", labels=LABELS
        ),
    )
