"""End offsets from fetch responses, for brokers whose ListOffsets is wrong.

Tansu answers ListOffsets LATEST with the base offset of the last record batch + 1, so a
multi-record last batch makes the "end" look short. Faust decides that changelog recovery is
complete from that figure, stops early, and silently loses table state after a rebalance.
Fetch responses carry the right high-water mark, so here we fetch one record below the listed
end of each partition and read the high-water mark off the response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition


async def fetch_highwaters(
    bootstrap: str, listed: Mapping[Any, int], *, timeout_s: float = 10.0
) -> dict[Any, int]:
    """True end offsets of ``listed``'s partitions (keys are any ``(topic, partition)`` tuples).

    ``listed`` holds the ListOffsets answer, used as the place to start fetching from (one
    batch below it is enough to get a response carrying the high-water mark).
    """
    if not listed:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_wait_ms=50,
        max_partition_fetch_bytes=64 * 1024,
    )
    await consumer.start()
    try:
        by_tp = {TopicPartition(key[0], key[1]): key for key in listed}
        consumer.assign(list(by_tp))
        for tp, key in by_tp.items():
            consumer.seek(tp, max(int(listed[key]) - 1, 0))
        result: dict[Any, int] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(result) < len(by_tp) and loop.time() < deadline:
            await consumer.getmany(timeout_ms=200, max_records=1)
            for tp, key in by_tp.items():
                if key in result:
                    continue
                hw = consumer.highwater(tp)
                if hw is not None:
                    result[key] = max(int(hw), int(listed[key]))
                    consumer.pause(tp)
        # Whatever did not answer keeps its listed value (no worse than before).
        for key, value in listed.items():
            result.setdefault(key, int(value))
        return result
    finally:
        await consumer.stop()
