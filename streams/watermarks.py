"""The CRM poller's watermark, kept durably in a compacted Kafka topic.

The poller must resume exactly where its last published batch ended, on whichever worker is
the leader after a restart or a rebalance; a local file would be lost with the pod, and the
bus already has a durable, replicated store: Kafka. One compacted topic holds the latest
watermark per key (one key per CRM source), so compaction keeps it small forever.

Loading reads the topic up to the high-water mark taken from a fetch response (Tansu's
ListOffsets LATEST is short by the last batch, see :mod:`streams.lag`) and keeps the last value
of the key; the read position is remembered, so later loads only read what is new (the saves
of another leader, or our own). Saving produces with ``acks=all`` and waits, so a commit that
returned is durable. The poller loads every few seconds, so the store keeps its consumers
open between loads (see :class:`streams.lag.EndOffsetReader` for what closing each one cost).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from connectors.salesforce.poller import Watermark
from streams.admin import create_topics
from streams.lag import EndOffsetReader
from streams.topics import TopicSpec


def watermark_topic(name: str, replication_factor: int = 1, partitions: int = 1) -> TopicSpec:
    """The spec of a compacted watermark topic (one partition is plenty: a few keys)."""
    return TopicSpec(
        role="crm_watermarks",
        name=name,
        key="CRM source",
        value_schema="Watermark (JSON)",
        cleanup_policy="compact",
        partitions=partitions,
        replication_factor=replication_factor,
        writers="CRM source (leader)",
        readers="CRM source (leader)",
    )


def latest_for_key(
    records: Iterable[tuple[bytes | None, bytes | None]], key: bytes, current: bytes | None
) -> bytes | None:
    """The last value of ``key`` among ``(key, value)`` records in offset order.

    ``current`` is what earlier records said; a tombstone (``None`` value) clears it.
    """
    value = current
    for rec_key, rec_value in records:
        if rec_key == key:
            value = rec_value
    return value


class KafkaWatermarkStore:
    """A :class:`~connectors.salesforce.poller.WatermarkStore` over a compacted topic."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        key: str,
        *,
        replication_factor: int = 1,
        timeout_s: float = 30.0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.key = key.encode()
        self.replication_factor = replication_factor
        self.timeout_s = timeout_s
        self._positions: dict[TopicPartition, int] = {}
        self._value: bytes | None = None
        self._producer: KafkaProducer | None = None
        self._consumer: KafkaConsumer | None = None
        self._ends = EndOffsetReader(bootstrap, "fetch", client_id="paybus-crm-watermarks")
        self._lock = threading.Lock()
        self._ensured = False

    def ensure_topic(self) -> None:
        """Create the compacted topic when missing (idempotent)."""
        if not self._ensured:
            create_topics(self.bootstrap, [watermark_topic(self.topic, self.replication_factor)])
            self._ensured = True

    def load(self) -> Watermark | None:
        """The newest stored watermark of the key (None when never saved)."""
        with self._lock:
            self.ensure_topic()
            self._catch_up()
            return Watermark.from_json(self._value.decode()) if self._value else None

    def save(self, watermark: Watermark) -> None:
        """Store ``watermark``; returns once every in-sync replica has it (acks=all)."""
        with self._lock:
            self.ensure_topic()
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap,
                    client_id="paybus-crm-watermarks",
                    acks="all",
                    retries=5,
                    linger_ms=0,
                )
            value = watermark.to_json().encode()
            self._producer.send(self.topic, key=self.key, value=value).get(self.timeout_s)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(self.timeout_s)
                self._producer = None
            self._drop_consumer()
            self._ends.close()

    def _catch_up(self) -> None:
        """Read every partition from the remembered position to its high-water mark."""
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=None,
                client_id="paybus-crm-watermarks",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=50,
            )
        consumer = self._consumer
        try:
            partitions = self._partitions(consumer)
            ends = self._ends.read(partitions, dict(self._positions), self.timeout_s)
            behind = [tp for tp in partitions if self._positions.get(tp, 0) < ends[tp]]
            if not behind:
                return
            # Positions are ours (seeked every time), so a kept assignment carries nothing over.
            consumer.assign(behind)
            for tp in behind:
                consumer.seek(tp, self._positions.get(tp, 0))
            self._read_until(consumer, behind, ends)
        except Exception:
            self._drop_consumer()  # broker trouble: the next load starts with a fresh client
            raise

    def _drop_consumer(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _partitions(self, consumer: KafkaConsumer) -> list[TopicPartition]:
        found: Any = None
        for _ in range(50):  # metadata of a just-created topic can take a moment
            found = consumer.partitions_for_topic(self.topic)
            if found:
                break
            consumer.poll(timeout_ms=100)
        if not found:
            raise TimeoutError(f"no partitions known for {self.topic}")
        return [TopicPartition(self.topic, p) for p in sorted(found)]

    def _read_until(
        self, consumer: KafkaConsumer, tps: list[TopicPartition], ends: dict[TopicPartition, int]
    ) -> None:
        deadline = time.monotonic() + self.timeout_s
        remaining = set(tps)
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"watermark topic {self.topic} not read within the timeout")
            for tp, batch in consumer.poll(timeout_ms=200).items():
                # Records past the end seen at the start are newer still: keep them too.
                pairs = [(m.key, m.value) for m in batch]
                self._value = latest_for_key(pairs, self.key, self._value)
                if batch:
                    self._positions[tp] = max(self._positions.get(tp, 0), batch[-1].offset + 1)
            for tp in list(remaining):
                if consumer.position(tp) >= ends[tp]:
                    self._positions[tp] = max(self._positions.get(tp, 0), ends[tp])
                    remaining.discard(tp)
