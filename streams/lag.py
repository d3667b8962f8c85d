"""Consumer lag per group, topic and partition: committed offset against the partition's end.

The end offset is the fetch high-water mark by default, not ListOffsets LATEST: the embedded
broker (Tansu) answers LATEST with the last batch's base offset + 1, so a lag computed from it
is short by up to a whole batch and never reaches zero honestly. A fetch response carries the
true high-water mark even when it holds no records, so :func:`end_offsets_from_fetch` fetches
once from near the end and reads ``KafkaConsumer.highwater``. On Apache Kafka ListOffsets is
right and cheaper (no fetch), hence ``source="list_offsets"``.

Committed offsets come from the admin ``list_group_offsets`` (kafka-python 3.x's name), which
works on Tansu; ``describe_groups`` does not, so nothing here depends on group membership.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from kafka import KafkaConsumer, TopicPartition

from streams.admin import admin_client
from streams.errors import PaybusError

Source = Literal["fetch", "list_offsets"]
SOURCES: tuple[Source, ...] = ("fetch", "list_offsets")


class LagUnavailable(PaybusError):
    """End offsets could not be read (partition leaderless, broker gone, timeout)."""


@dataclass(frozen=True, order=True)
class PartitionLag:
    """Lag of one group on one partition. Where the group never committed (``committed`` is
    None), the lag counts from the log start, where the group's first read begins
    (``auto_offset_reset=earliest``); ``None`` only when the log start is unknown too."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int | None


# --- pure -----------------------------------------------------------------------------------


def compute_lag(
    group: str,
    committed: Mapping[TopicPartition, int | None],
    end: Mapping[TopicPartition, int],
    log_start: Mapping[TopicPartition, int] | None = None,
) -> list[PartitionLag]:
    """Rows for every partition in ``end``, sorted; a committed offset past the end is lag 0.

    A committed offset can be ahead of the end the client saw (the end was read a moment
    earlier, or the topic was recreated): reporting negative lag would only confuse alerts.
    A partition never committed lags by what lies between ``log_start`` and its end: a new
    group, or a worker stuck on a partition's first record, has that whole backlog ahead of it
    (reported as unknown, it would be invisible to the lag alert).
    """
    rows = []
    for tp, end_offset in end.items():
        done = committed.get(tp)
        if done is not None and done < 0:  # OffsetFetch answers -1 for "never committed"
            done = None
        base = done if done is not None else (log_start or {}).get(tp)
        lag = None if base is None else max(end_offset - base, 0)
        rows.append(PartitionLag(group, tp.topic, tp.partition, done, end_offset, lag))
    return sorted(rows)


def uncommitted(
    tps: Iterable[TopicPartition], committed: Mapping[TopicPartition, int | None]
) -> list[TopicPartition]:
    """The partitions of ``tps`` the group never committed on."""
    return [tp for tp in tps if (done := committed.get(tp)) is None or done < 0]


def log_starts(
    consumer: KafkaConsumer, tps: Sequence[TopicPartition], timeout_s: float
) -> dict[TopicPartition, int]:
    """The first offset still in each partition's log (ListOffsets EARLIEST; right on Tansu)."""
    if not tps:
        return {}
    answer = consumer.beginning_offsets(list(tps), timeout_ms=int(timeout_s * 1000))
    return {tp: int(o) for tp, o in answer.items()}


@dataclass(frozen=True)
class TopicLag:
    """Totals of one group on one topic (the summary line of ``paybus lag``)."""

    group: str
    topic: str
    partitions: int
    lag: int
    uncommitted: int


def summarize(rows: Iterable[PartitionLag]) -> list[TopicLag]:
    """Total lag per group and topic (a never-committed partition's from its log start), and
    how many partitions were never committed."""
    totals: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        acc = totals.setdefault((row.group, row.topic), [0, 0, 0])
        acc[0] += 1
        if row.committed is None:
            acc[2] += 1
        if row.lag is not None:
            acc[1] += row.lag
    return [TopicLag(g, t, n, lag, unc) for (g, t), (n, lag, unc) in sorted(totals.items())]


def format_offset(value: int | None) -> str:
    """An offset or lag cell: ``-`` for unknown, thousands separated for big numbers."""
    return "-" if value is None else f"{value:,}"


def format_rows(rows: Iterable[PartitionLag]) -> list[tuple[str, str, str, str, str, str]]:
    """Table cells (group, topic, partition, committed, end, lag), in the rows' order."""
    return [
        (
            r.group,
            r.topic,
            str(r.partition),
            format_offset(r.committed),
            format_offset(r.end),
            format_offset(r.lag),
        )
        for r in rows
    ]


# --- I/O ------------------------------------------------------------------------------------


def list_groups(bootstrap: str) -> list[str]:
    """Ids of the consumer groups that store offsets in the cluster, sorted."""
    with admin_client(bootstrap, client_id="paybus-lag") as admin:
        listed = admin.list_groups()
    return sorted({str(g["group_id"]) if isinstance(g, dict) else str(g[0]) for g in listed})


def committed_offsets(bootstrap: str, group: str) -> dict[TopicPartition, int]:
    """The group's committed offsets (partitions it never committed are absent)."""
    with admin_client(bootstrap, client_id="paybus-lag") as admin:
        answer = admin.list_group_offsets(group)
    offsets = answer.get(group, {})
    return {TopicPartition(tp.topic, tp.partition): int(o.offset) for tp, o in offsets.items()}


def _consumer(bootstrap: str, client_id: str = "paybus-lag") -> KafkaConsumer:
    # No group: nothing joins, nothing commits. A short fetch wait because Tansu holds an
    # empty fetch for the whole wait, and an empty fetch is exactly what we expect here.
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
    )


def _partitions(consumer: KafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    tps = []
    for topic in sorted(set(topics)):
        for partition in sorted(consumer.partitions_for_topic(topic) or ()):
            tps.append(TopicPartition(topic, partition))
    return tps


def _fetch_highwaters(
    consumer: KafkaConsumer,
    tps: Sequence[TopicPartition],
    start: Mapping[TopicPartition, int | None],
    timeout_s: float,
) -> dict[TopicPartition, int]:
    # ListOffsets LATEST is at worst one batch short, so starting the fetch from it (or from
    # the committed offset, when that is further on) reads at most one batch per partition.
    hint = consumer.end_offsets(list(tps), timeout_ms=int(timeout_s * 1000))
    consumer.assign(list(tps))
    for tp in tps:
        known = start.get(tp)
        consumer.seek(tp, max(hint.get(tp) or 0, known if known is not None else 0))
    found: dict[TopicPartition, int] = {}
    deadline = time.monotonic() + timeout_s
    while True:
        for tp in tps:
            if tp not in found and (hw := consumer.highwater(tp)) is not None:
                found[tp] = int(hw)
        if len(found) == len(tps):
            return found
        if time.monotonic() > deadline:
            missing = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in tps if tp not in found)
            raise LagUnavailable(f"no fetch answered within {timeout_s}s for {missing}")
        consumer.poll(timeout_ms=100)


class EndOffsetReader:
    """End offsets read again and again through one consumer, for code that polls them.

    The worker reads end offsets every few seconds (the lag metrics, the CRM poller's
    watermark). A consumer made and closed per read costs a bootstrap, two connections and two
    metadata requests each time, and its close lands while the metadata refresh that
    ``assign()`` asked for is on the wire (kafka-python sends it ``retry_backoff_ms`` after the
    bootstrap, about when a read of an idle partition ends): kafka-python then cancels it and
    logs ``ERROR kafka.cluster: Metadata refresh: failed Cancelled``, once per read, drowning
    the worker's real warnings. Kept open, that refresh simply completes.

    After a fetch-based read the consumer gives its partitions up, so the next read's
    high-water marks come from a new fetch, not from what the last read saw. A failed read
    drops the consumer (the next read starts afresh). Reads are serialised by a lock: the lag
    timer runs them on executor threads. One-shot callers use :func:`end_offsets`.
    """

    def __init__(
        self, bootstrap: str, source: Source = "fetch", client_id: str = "paybus-lag"
    ) -> None:
        if source not in SOURCES:
            raise ValueError(f"unknown end-offset source {source!r}; known: {', '.join(SOURCES)}")
        self.bootstrap = bootstrap
        self.source: Source = source
        self.client_id = client_id
        self._consumer: KafkaConsumer | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def _kept(self) -> Iterator[KafkaConsumer]:
        """The kept consumer, one read at a time; a failed read drops it."""
        with self._lock:
            if self._consumer is None:
                self._consumer = _consumer(self.bootstrap, self.client_id)
            consumer = self._consumer
            try:
                yield consumer
            except Exception:
                self._consumer = None
                consumer.close()
                raise

    def read(
        self,
        tps: Sequence[TopicPartition],
        start: Mapping[TopicPartition, int | None] | None = None,
        timeout_s: float = 10.0,
    ) -> dict[TopicPartition, int]:
        """End offset of each of ``tps`` (see :func:`end_offsets` for ``start``)."""
        if not tps:
            return {}
        with self._kept() as consumer:
            if self.source == "fetch":
                ends = _fetch_highwaters(consumer, tps, start or {}, timeout_s)
                consumer.unsubscribe()
                return ends
            answer = consumer.end_offsets(list(tps), timeout_ms=int(timeout_s * 1000))
            return {tp: int(o) for tp, o in answer.items()}

    def log_starts(
        self, tps: Sequence[TopicPartition], timeout_s: float = 10.0
    ) -> dict[TopicPartition, int]:
        """The log start of each of ``tps`` (see :func:`log_starts`), on the kept consumer."""
        if not tps:
            return {}
        with self._kept() as consumer:
            return log_starts(consumer, tps, timeout_s)

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None

    def __enter__(self) -> EndOffsetReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def end_offsets_from_fetch(
    bootstrap: str,
    tps: Sequence[TopicPartition],
    start: Mapping[TopicPartition, int | None] | None = None,
    timeout_s: float = 10.0,
) -> dict[TopicPartition, int]:
    """The high-water mark of each partition, as a fetch response reports it.

    ``start`` gives known positions (e.g. committed offsets) to fetch from; the fetch begins
    at whichever of it and ListOffsets LATEST is further on, so it moves at most one batch.
    """
    return end_offsets(bootstrap, tps, "fetch", start, timeout_s)


def end_offsets(
    bootstrap: str,
    tps: Sequence[TopicPartition],
    source: Source = "fetch",
    start: Mapping[TopicPartition, int | None] | None = None,
    timeout_s: float = 10.0,
) -> dict[TopicPartition, int]:
    """End offsets from the fetch high-water mark or (Apache Kafka) from ListOffsets, once.

    Code that reads them repeatedly keeps an :class:`EndOffsetReader` instead.
    """
    with EndOffsetReader(bootstrap, source) as reader:
        return reader.read(tps, start, timeout_s)


def partition_lag(
    bootstrap: str,
    group: str,
    tps: Sequence[TopicPartition],
    source: Source = "fetch",
    timeout_s: float = 10.0,
    reader: EndOffsetReader | None = None,
) -> list[PartitionLag]:
    """Lag of ``group`` on exactly the partitions ``tps`` (what a worker owns).

    ``reader`` (its source wins over ``source``) keeps one consumer across calls; without it
    the end offsets are read once with a consumer of their own.
    """
    if not tps:
        return []
    done: dict[TopicPartition, int | None] = dict(committed_offsets(bootstrap, group))
    fresh = uncommitted(tps, done)
    if reader is not None:
        end = reader.read(tps, start=done, timeout_s=timeout_s)
        starts = reader.log_starts(fresh, timeout_s)
    else:
        with EndOffsetReader(bootstrap, source) as once:
            end = once.read(tps, start=done, timeout_s=timeout_s)
            starts = once.log_starts(fresh, timeout_s)
    return compute_lag(group, done, end, starts)


def group_lag(
    bootstrap: str, group: str, source: Source = "fetch", timeout_s: float = 10.0
) -> list[PartitionLag]:
    """Lag of ``group`` on every partition of every topic it has committed offsets on.

    Partitions of those topics it never committed on are listed with ``committed=None``: a
    partition nobody consumes is precisely what an operator looking at lag wants to see.
    """
    done: dict[TopicPartition, int | None] = dict(committed_offsets(bootstrap, group))
    if not done:
        return []
    consumer = _consumer(bootstrap)
    try:
        tps = _partitions(consumer, {tp.topic for tp in done})
        tps = sorted(set(tps) | set(done))
        if source == "fetch":
            end = _fetch_highwaters(consumer, tps, done, timeout_s)
        else:
            answer = consumer.end_offsets(tps, timeout_ms=int(timeout_s * 1000))
            end = {tp: int(o) for tp, o in answer.items()}
        starts = log_starts(consumer, uncommitted(tps, done), timeout_s)
    finally:
        consumer.close()
    return compute_lag(group, done, end, starts)


def all_lag(
    bootstrap: str,
    groups: Iterable[str] | None = None,
    source: Source = "fetch",
    timeout_s: float = 10.0,
) -> list[PartitionLag]:
    """Lag of each of ``groups`` (every group in the cluster when ``None``)."""
    names = list(groups) if groups is not None else list_groups(bootstrap)
    rows: list[PartitionLag] = []
    for group in names:
        rows.extend(group_lag(bootstrap, group, source, timeout_s))
    return rows
