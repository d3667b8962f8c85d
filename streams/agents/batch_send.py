"""Pre-encoded records out through the app's own aiokafka producer, one batch per partition.

Faust's ``Topic.send`` costs a record object, a serializer call, a sensor round and an asyncio
future per message, and aiokafka's ``send`` one future more; at a few thousand events a second
that per-message machinery was most of the sequencer's CPU (profile: ~28 % in the sender and
socket writes of many small batches, ~14 % in futures and callbacks, ~7 % in ``Topic.send``).
A stage that already holds its output as bytes can hand them over as one ``BatchBuilder`` per
topic-partition and wait on one future per partition instead.

It uses the producer Faust started (same connection, settings and acks), so Faust's commit
path, which flushes that producer before committing offsets, also waits for these batches.
Partitions come from the producer's own partitioner, so a key lands where ``Topic.send`` would
have put it (consumers keyed on the aggregate id see no difference).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer

#: One record: (partition or None for "by key", key, value).
Record = tuple[int | None, bytes | None, bytes | None]


class BatchSender:
    """Sends lists of already-encoded records, grouped by partition, in order per partition."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._partitions: dict[str, list[int]] = {}

    @property
    def producer(self) -> AIOKafkaProducer:
        """The aiokafka producer inside Faust's (raises NotReady before the app starts)."""
        producer: AIOKafkaProducer = self.app.producer._ensure_producer()
        return producer

    async def partitions(self, topic: str) -> list[int]:
        """The topic's partitions, sorted (as the partitioner wants them); cached."""
        known = self._partitions.get(topic)
        if known is None:
            producer = self.producer
            await producer.client._wait_on_metadata(topic)
            known = sorted(producer.client.cluster.partitions_for_topic(topic) or ())
            if not known:
                raise RuntimeError(f"no partitions known for topic {topic}")
            self._partitions[topic] = known
        return known

    async def send(self, topic: str, records: Iterable[Record]) -> list[asyncio.Future[Any]]:
        """Queue ``records`` on ``topic``; return one delivery future per batch sent.

        Records keep their relative order within a partition (a partition's records go into
        its batches in the order given, and aiokafka delivers a partition's batches in order).
        """
        producer = self.producer
        by_partition: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
        all_partitions: list[int] | None = None
        for partition, key, value in records:
            if partition is None:
                if all_partitions is None:
                    all_partitions = await self.partitions(topic)
                partition = producer._partitioner(key, all_partitions, all_partitions)
            by_partition.setdefault(partition, []).append((key, value))
        futures: list[asyncio.Future[Any]] = []
        for partition, items in by_partition.items():
            batch = producer.create_batch()
            for key, value in items:
                if batch.append(key=key, value=value, timestamp=None) is None:
                    futures.append(await self._submit(batch, topic, partition))
                    batch = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        raise ValueError(f"record of {len(value or b'')} B exceeds a batch")
            futures.append(await self._submit(batch, topic, partition))
        return futures

    async def send_one(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        """One record through the producer's own accumulator (lingers, so records sent by
        concurrent callers share batches); returns its delivery future. The partition is
        chosen here from the cached list, as :meth:`send` does: aiokafka would rebuild the
        topic's partition lists for every record (6 % of the webhook receiver's main thread)."""
        producer = self.producer
        partitions = await self.partitions(topic)
        partition = producer._partitioner(key, partitions, partitions)
        future: asyncio.Future[Any] = await producer.send(
            topic, value=value, key=key, partition=partition
        )
        return future

    async def _submit(self, batch: Any, topic: str, partition: int) -> asyncio.Future[Any]:
        """Hand a complete batch to the sender. Closing it first tells aiokafka it is full, so
        it goes out with the next request instead of lingering (``linger_ms`` is for
        collecting single sends; this batch has everything it will get, and the caller is
        usually waiting on it)."""
        batch.close()
        future: asyncio.Future[Any] = await self.producer.send_batch(
            batch, topic, partition=partition
        )
        return future
