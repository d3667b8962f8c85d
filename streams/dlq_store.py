"""Reading, replaying and marking dead letters on ``paybus.dlq`` (for ``paybus dlq``).

The DLQ is read whole from the beginning by a consumer without a group (nothing commits).
Replaying puts the original key and value bytes back on the original topic and partition, in
the original order (by offset within each partition), and then writes a *replay marker*: a
``DeadLetter`` with stage ``replayed`` and the same ``dead_letter_id``, keyed by that id (so
compaction keeps one marker per letter and never drops a letter for it). A letter with a marker
is listed as replayed. Markers are written after the records were delivered, so a crash in
between at worst lets an operator replay the same records twice, which the bus absorbs
(commands and events carry their own ids).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.codec import AvroCodec
from streams.lag import end_offsets_from_fetch

REPLAYED = "replayed"


@dataclass
class Letter:
    """One dead letter as the CLI shows it."""

    record: dict[str, Any]
    replayed_at: datetime | None = None
    dlq_offsets: list[tuple[int, int]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.record["dead_letter_id"])

    @property
    def replayed(self) -> bool:
        return self.replayed_at is not None


def collect(records: Iterable[dict[str, Any]]) -> dict[str, Letter]:
    """Letters by id from DLQ records in log order: the latest copy wins, markers flag."""
    letters: dict[str, Letter] = {}
    replays: dict[str, datetime] = {}
    for record in records:
        lid = str(record["dead_letter_id"])
        if record.get("stage") == REPLAYED:
            replays[lid] = record["failed_at"]
            continue
        if lid in letters and lid in replays and replays[lid] <= record["failed_at"]:
            del replays[lid]  # failed again after its replay: pending once more
        letters[lid] = Letter(record)
    for lid, at in replays.items():
        if lid in letters and at >= letters[lid].record["failed_at"]:
            letters[lid].replayed_at = at
    return letters


def replay_order(letters: Sequence[Letter]) -> list[Letter]:
    """The order to re-inject: per original topic and partition, by original offset."""
    return sorted(
        letters,
        key=lambda lt: (
            lt.record["original_topic"],
            lt.record["original_partition"],
            lt.record["original_offset"],
        ),
    )


def select(
    letters: dict[str, Letter],
    *,
    ids: Sequence[str] = (),
    everything: bool = False,
    aggregate: str | None = None,
) -> list[Letter]:
    """Which letters a replay takes: the named ids, or every pending one (of an aggregate)."""
    if ids:
        missing = [i for i in ids if i not in letters]
        if missing:
            raise KeyError(", ".join(missing))
        return [letters[i] for i in ids]
    return [
        lt
        for lt in letters.values()
        if not lt.replayed
        and (everything or (aggregate is not None and lt.record.get("aggregate_id") == aggregate))
    ]


def read_dlq(bootstrap: str, topic: str, timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Every record of the DLQ topic, decoded, in (partition, offset) order."""
    codec = AvroCodec()
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=50,
        client_id="paybus-dlq",
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        ends = end_offsets_from_fetch(bootstrap, tps, timeout_s=timeout_s)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        by_tp: dict[int, list[tuple[int, dict[str, Any]]]] = {tp.partition: [] for tp in tps}
        deadline = datetime.now(UTC).timestamp() + timeout_s
        while any(consumer.position(tp) < ends.get(tp, 0) for tp in tps):
            polled = consumer.poll(timeout_ms=200)
            for tp, batch in polled.items():
                for msg in batch:
                    if msg.value is None:
                        continue
                    record = codec.decode(msg.value, "DeadLetter")
                    by_tp[tp.partition].append((msg.offset, record))
            if not polled and datetime.now(UTC).timestamp() > deadline:
                break
        return [rec for p in sorted(by_tp) for _o, rec in by_tp[p]]
    finally:
        consumer.close()


def replay(
    bootstrap: str,
    dlq_topic: str,
    letters: Sequence[Letter],
    *,
    values: dict[str, bytes] | None = None,
) -> list[Letter]:
    """Re-inject ``letters`` in replay order (``values`` overrides fixed ones), then mark them."""
    codec = AvroCodec()
    ordered = replay_order(letters)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for letter in ordered:
            rec = letter.record
            value = (values or {}).get(letter.id, rec["value"])
            producer.send(
                rec["original_topic"],
                key=rec.get("key"),
                value=value,
                partition=rec["original_partition"],
            ).get(timeout=30)  # one at a time: order within the partition is the point
        now = datetime.now(UTC)
        for letter in ordered:
            marker = {
                **letter.record,
                "stage": REPLAYED,
                "reason": f"replayed to {letter.record['original_topic']}",
                "failed_at": now,
                "value": b"",
                "error_log": [],
            }
            producer.send(
                dlq_topic, key=letter.id.encode(), value=codec.encode("DeadLetter", marker)
            )
            letter.replayed_at = now
        producer.flush(30)
    finally:
        producer.close()
    return ordered
