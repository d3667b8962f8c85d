"""Reading assigned partitions to their end, for the commands and gauges that read a topic
without a consumer group (``paybus trace``, the DLQ gauge).

"The end" is the high-water mark each partition's last fetch reported: fetch responses are
right on Tansu, where ListOffsets is one batch short.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

from kafka import KafkaConsumer, TopicPartition


def drain(
    consumer: KafkaConsumer, tps: Sequence[TopicPartition], timeout_s: float
) -> Iterator[Any]:
    """The messages of ``tps`` (assigned and positioned by the caller), polled until every one
    is read to its end or ``timeout_s`` has passed; :func:`behind` then says what was not."""
    deadline = time.monotonic() + timeout_s
    while True:
        for batch in consumer.poll(timeout_ms=200).values():
            yield from batch
        if not behind(consumer, tps) or time.monotonic() > deadline:
            return


def behind(
    consumer: KafkaConsumer, tps: Sequence[TopicPartition]
) -> dict[TopicPartition, tuple[int, int | None]]:
    """The partitions of ``tps`` not read to their end: (position, high-water mark or None
    while no fetch has answered)."""
    out: dict[TopicPartition, tuple[int, int | None]] = {}
    for tp in tps:
        hw = consumer.highwater(tp)
        at = consumer.position(tp)
        if hw is None or at < hw:
            out[tp] = (at, hw)
    return out
