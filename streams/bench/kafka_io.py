"""Small aiokafka helpers the measurements share: read a topic back, count and time it.

Throughput windows are timed from the first to the last record (never from process start),
so group joins — about half the session timeout on Tansu — stay out of every rate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass
class TopicRead:
    """What reading a topic back found: record count and CreateTime span (ms)."""

    count: int
    first_ms: int
    last_ms: int
    first_seen: float
    last_seen: float

    @property
    def span_s(self) -> float:
        """Seconds between the first and last record's CreateTime."""
        return max(self.last_ms - self.first_ms, 1) / 1000

    @property
    def seen_s(self) -> float:
        """Seconds from the first fetch to receiving the last record here (no group join:
        the consumer is assigned its partitions, so this is all fetching and decoding)."""
        return max(self.last_seen - self.first_seen, 1e-6)


async def read_topic(
    bootstrap: str,
    topic: str,
    partitions: int,
    expected: int,
    *,
    timeout_s: float = 60.0,
    progress: Callable[[int], None] | None = None,
    decode: Callable[[bytes], object] | None = None,
) -> TopicRead:
    """Read ``topic`` from the beginning (no group: no join) until ``expected`` records.

    Counts records instead of trusting end offsets (Tansu's ListOffsets LATEST is short by
    the last batch). ``decode`` is applied to each value when given (the raw consume baseline
    does not decode).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    read = TopicRead(0, 0, 0, 0.0, 0.0)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        read.first_seen = time.perf_counter()
        while read.count < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for messages in batch.values():
                for msg in messages:
                    if decode is not None and msg.value is not None:
                        decode(msg.value)
                    ts = msg.timestamp
                    if not read.count:
                        read.first_ms = read.last_ms = ts
                    read.first_ms = min(read.first_ms, ts)
                    read.last_ms = max(read.last_ms, ts)
                    read.count += 1
            if batch:
                read.last_seen = time.perf_counter()
                if progress is not None:
                    progress(read.count)
    finally:
        await consumer.stop()
    return read


def read_topic_sync(bootstrap: str, topic: str, partitions: int, expected: int) -> TopicRead:
    """:func:`read_topic`, blocking."""
    return asyncio.run(read_topic(bootstrap, topic, partitions, expected))
