"""Table writes for a whole batch: the local store, and the changelog as one send per partition.

``table[key] = value`` queues one changelog message in Faust's producer buffer, and Faust's
conductor stops feeding every stream of the worker until that buffer is back under 100
messages, draining it one message per event-loop round (``ProducerBuffer.wait_until_ebb``).
A stage that writes a table entry per event of a 500-event batch therefore stalls its own
consumer: measured on the normaliser, webhook -> payment event took ~1 s at 1,000 webhooks/s
and fell further behind as the run went on. Here the store is written directly and the
changelog records go out through :class:`~streams.agents.batch_send.BatchSender`, as the
sequencer has done since its state moved to compact bytes.

The changelog partition is the partition of the event that caused the write (Faust's rule:
recovery after a rebalance reads a partition's changelog back into that partition's store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from faust.stores.memory import Store as MemoryStore
from faust.types import EventT

from streams.agents.batch_send import BatchSender, Record
from streams.agents.common import as_current


async def write_table(
    table: Any, sender: BatchSender, writes: Iterable[tuple[str, Any, EventT[Any]]]
) -> list[asyncio.Future[Any]]:
    """Put each ``(key, value, event)`` in ``table``'s store and queue it on the changelog;
    return the delivery futures (the caller decides whether to wait)."""
    app = table.app
    store = table.data
    memory = store if isinstance(store, MemoryStore) else None
    changelog: list[Record] = []
    for key, value, event in writes:
        partition = event.message.partition
        if memory is not None:  # its dicts directly, as Store.__setitem__ and recovery do
            memory.data[key] = value
            memory._key_partition[key] = partition
        else:  # a store on disk picks the partition's database from the current event
            with as_current(event):
                store[key] = value
        changelog.append(
            (
                partition,
                app.serializers.dumps_key(table.key_type, key, serializer=table.key_serializer),
                app.serializers.dumps_value(
                    table.value_type, value, serializer=table.value_serializer
                ),
            )
        )
    if not changelog:
        return []
    return await sender.send(table.changelog_topic.get_topic_name(), changelog)
