"""Where webhook -> CRM latency goes: the time each stage added, from Kafka's own stamps.

Every record a producer sends carries its CreateTime, stamped when the record was handed to
the producer. The webhook's aggregate id travels in every record along its path (the raw
webhook's metadata, the canonical event, the status update), so reading the three topics back
after a run gives, per webhook, when the web worker, the normaliser and the sequencer each
sent it on; with the POST and the CRM save around them that is four hops:

* ``web``: POST sent -> raw webhook produced (HTTP, signature check);
* ``normaliser``: raw webhook -> canonical event produced (one Kafka hop + mapping);
* ``sequencer``: canonical event -> status update produced (one Kafka hop + sequencing);
* ``crm``: status update -> CRM record saved (one Kafka hop + batching + the API calls).

No stage is instrumented for this: what is measured is what the topics hold. Stamps are in
milliseconds and every process reads one clock (one machine), so hops are good to about a
millisecond; p99s of hops do not add up to the end-to-end p99.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.bench.pickup import Pickup
from streams.bench.report import Row, percentile

HOPS = ("web", "normaliser", "sequencer", "crm")
#: Reading a topic back stops once it has been quiet this long (everything is written by then).
QUIET_S = 2.0


@dataclass(frozen=True)
class Hop:
    name: str
    count: int
    p50_ms: float
    p99_ms: float


async def first_stamps(
    bootstrap: str, topic: str, partitions: int, pattern: re.Pattern[bytes], timeout_s: float = 60
) -> dict[str, float]:
    """Per key ``pattern`` finds in a record's value, the CreateTime (seconds) of the first
    record of ``topic`` that holds it; read from the beginning until the topic is quiet."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    found: dict[str, float] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < QUIET_S:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            if batch:
                quiet_since = time.monotonic()
            for messages in batch.values():
                for msg in messages:
                    for key in set(pattern.findall(msg.value or b"")):
                        found.setdefault(key.decode(), msg.timestamp / 1000)
    finally:
        await consumer.stop()
    return found


def hops(
    posted: Mapping[str, float],
    stamps: Sequence[Mapping[str, float]],
    saved: Mapping[str, float],
) -> list[Hop]:
    """The four hops (see the module doc) from the POST times, the three topics' stamps
    (raw webhooks, canonical events, status updates) and the CRM save times, all by
    aggregate; each over the webhooks seen at both of its ends."""
    points = [posted, *stamps, saved]
    spans = (span(n, a, b) for n, a, b in zip(HOPS, points[:-1], points[1:], strict=True))
    return [hop for hop in spans if hop is not None]


def before_writer(posted: Mapping[str, float], stamps: Sequence[Mapping[str, float]]) -> Hop | None:
    """POST -> status update produced: the path before the CRM writer, whose batching the
    API-call target sizes (the last of ``stamps`` is the status updates')."""
    return span("before_writer", posted, stamps[-1]) if stamps else None


def span(name: str, start: Mapping[str, float], end: Mapping[str, float]) -> Hop | None:
    """``end - start`` in ms over the webhooks seen at both; None when none was."""
    gaps = sorted((end[a] - start[a]) * 1000 for a in end if a in start)
    if not gaps:
        return None
    return Hop(name, len(gaps), statistics.median(gaps), percentile(gaps, 0.99))


def read_stamps(
    bootstrap: str, topics: list[str], partitions: int, aggregate_prefix: str
) -> list[dict[str, float]]:
    """:func:`first_stamps` of each topic for the aggregates ``<prefix>-NNNNNNN``."""
    pattern = re.compile(rb"(?<![0-9A-Za-z])" + re.escape(aggregate_prefix.encode()) + rb"-\d{7}")

    async def read_all() -> list[dict[str, float]]:
        return [await first_stamps(bootstrap, t, partitions, pattern) for t in topics]

    return asyncio.run(read_all())


def hop_row(
    section: str,
    key: str,
    label: str,
    hop: Hop,
    title: str | None = None,
    waited: Pickup | None = None,
) -> Row:
    """A hop's row (or a span's, given its ``title``): the p50 as the figure, the p99 in the
    note; with ``waited``, the part of it the records spent in Kafka before the stage took
    them (:mod:`streams.bench.pickup`)."""
    name = title or f"of which {hop.name}"
    note = f"p99 {hop.p99_ms:.0f} ms over {hop.count:,} webhooks"
    extra: dict[str, float | None] = {
        "p50_ms": hop.p50_ms,
        "p99_ms": hop.p99_ms,
        "count": hop.count,
    }
    if waited is not None:
        note += (
            f"; in Kafka before the {waited.stage} stage took them (its pickup age) p50 "
            f"{waited.p50_ms:.0f}, p99 {waited.p99_ms:.0f} ms, the rest in the stage"
        )
        extra.update(pickup_p50_ms=waited.p50_ms, pickup_p99_ms=waited.p99_ms)
    return Row(
        f"webhook_crm_hop_{hop.name}_{key}", section, f"  {name} (p50) at {label}",
        hop.p50_ms, "ms", note=note, extra=extra,
    )  # fmt: skip
