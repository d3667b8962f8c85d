"""One payment's story across the bus, read back from Kafka (``paybus trace``).

Every record about a payment (its refunds too) carries the payment id as its key, so all of
them sit in one partition of each topic: the partition the key hashes to (Kafka's murmur2,
which Faust, aiokafka and kafka-python producers all use). A trace reads that one partition
of each keyed topic from its start, keeps the records with the key, then the raw webhooks
of the PSP objects those records name (keyed by PSP object id), the dead letters about the
aggregate (the DLQ is keyed by letter id: read whole, it is compacted and small), and what
the sequencer holds for each aggregate now (its table's changelog, last value wins).

What each record says is summarised without card or account data: a webhook's body is not
shown, only which PSP object it is about.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from streams.agents.commands import is_link
from streams.agents.sequencer_records import load_state
from streams.codec import AvroCodec
from streams.partition_read import behind, drain
from streams.sequencing_state import AggregateState, format_time
from streams.topics import TopicMap


@dataclass(frozen=True)
class Step:
    """One record of the story: when, on which topic, what it says."""

    at: datetime
    topic: str
    kind: str
    aggregate_id: str
    summary: str
    offset: int = 0
    #: When the bus wrote the record (its Kafka timestamp): the order the story is told in.
    #: ``at`` is the record's own time, which for a PSP's event is the PSP's clock in whole
    #: seconds, so sorting by it put an event before the command that caused it.
    written: datetime | None = None


def partition_for(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner puts ``key`` in (Java's murmur2)."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def _when(value: Any, fallback_ms: int) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(fallback_ms / 1000, UTC)


def _parts(*items: tuple[str, Any]) -> str:
    return ", ".join(
        f"{name} {format_time(value) if isinstance(value, datetime) else value}"
        for name, value in items
        if value not in (None, "", {})
    )


def summarise(schema: str, record: Mapping[str, Any], timestamp_ms: int, offset: int) -> Step:
    """A record of ``schema`` as a :class:`Step` (pure: what ``paybus trace`` prints)."""
    r = record
    agg = str(r.get("aggregate_id") or "")
    if schema == "CrmChange":
        at, kind = _when(r.get("occurred_at"), timestamp_ms), f"intent {r.get('intent')}"
        text = _parts(("from", r.get("source")), ("amount", r.get("amount_minor")),
                      ("currency", r.get("currency")), ("method", r.get("method")),
                      ("change", r.get("change_id")))  # fmt: skip
    elif schema == "PaymentCommand":
        at, kind = _when(r.get("issued_at"), timestamp_ms), f"command {r.get('operation')}"
        text = _parts(("to", r.get("psp")), ("command", r.get("command_id")),
                      ("psp object", r.get("psp_object_id")))  # fmt: skip
    elif schema == "PaymentEvent":
        at, kind = _when(r.get("occurred_at"), timestamp_ms), f"event {r.get('status')}"
        text = _parts(("from", r.get("source")), ("event", r.get("event_id")),
                      ("psp object", r.get("psp_object_id")),
                      ("reason", r.get("reason")))  # fmt: skip
    elif schema == "StatusUpdate":
        at, kind = _when(r.get("occurred_at"), timestamp_ms), f"status {r.get('to_status')}"
        text = _parts(("from status", r.get("from_status")), ("seq", r.get("seq")),
                      ("inferred", "yes" if r.get("inferred") else None),
                      ("event", r.get("event_id")), ("reason", r.get("reason")))  # fmt: skip
    elif schema == "RetryEnvelope":
        at, kind = _when(r.get("first_failed_at"), timestamp_ms), f"parked ({r.get('stage')})"
        last = str(r.get("error") or "").splitlines()[-1:] or [""]
        text = _parts(("attempt", r.get("attempt")), ("due", r.get("due_at")),
                      ("error", last[0]))  # fmt: skip
    elif schema == "PspWebhook":
        at = _when(r.get("received_at"), timestamp_ms)
        # a connector worker's link (PSP object -> aggregate) rides the webhooks topic too
        link = is_link(r.get("content_type"), r.get("webhook_id"), r.get("psp_object_id"))
        kind = f"{'link' if link else 'webhook'} {r.get('psp')}"
        text = _parts(("id", r.get("webhook_id")), ("psp object", r.get("psp_object_id")))
    elif schema == "DeadLetter":
        at, kind = _when(r.get("failed_at"), timestamp_ms), f"dead letter ({r.get('stage')})"
        text = _parts(("id", r.get("dead_letter_id")), ("reason", r.get("reason")))
    else:
        raise ValueError(f"no summary for schema {schema!r}")
    return Step(at, "", kind, agg, text, offset)


@dataclass
class Trace:
    """What :func:`trace` found: the steps in time order, and the sequencer's states."""

    steps: list[Step]
    states: dict[str, AggregateState]
    #: Topics it could not read (absent on this cluster), or partitions it could not read to
    #: the end in time, with why.
    skipped: dict[str, str]


class TopicReader:
    """One consumer without a group, reading chosen partitions from their start to the
    high-water mark their fetches report (right on Tansu, where ListOffsets is not)."""

    def __init__(self, bootstrap: str, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        #: Partitions a read gave up on at its deadline: what was read, of how much.
        self.unfinished: dict[str, str] = {}
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", fetch_max_wait_ms=50, client_id="paybus-trace",
        )  # fmt: skip

    def partitions(
        self, topic: str, skipped: dict[str, str], why: str = "no such topic"
    ) -> int | None:
        """The topic's partition count, or None (noted in ``skipped``) when it is absent."""
        found = self.consumer.partitions_for_topic(topic)
        if not found:
            skipped[topic] = why
            return None
        return len(found)

    def read(
        self, tps: Iterable[TopicPartition], keep: Callable[[Any], bool]
    ) -> Iterator[tuple[str, Any]]:
        """``(topic, message)`` of every kept message of ``tps``, each partition in order."""
        wanted = sorted(set(tps))
        if not wanted:
            return
        self.consumer.assign(wanted)
        self.consumer.seek_to_beginning(*wanted)
        for message in drain(self.consumer, wanted, self.timeout_s):
            if keep(message):
                yield message.topic, message
        for tp, (at, hw) in behind(self.consumer, wanted).items():
            self.unfinished[f"{tp.topic}[{tp.partition}]"] = (
                f"read to offset {at} of {hw if hw is not None else '?'} in "
                f"{self.timeout_s:.0f} s (--timeout)"
            )

    def close(self) -> None:
        self.consumer.close()


def trace(
    bootstrap: str,
    topics: TopicMap,
    key: str,
    codec: AvroCodec,
    *,
    state_topic: str | None = None,
    timeout_s: float = 30.0,
) -> Trace:
    """Everything the bus holds about the payment (or mandate) keyed ``key``."""
    reader = TopicReader(bootstrap, timeout_s)
    raw = key.encode()
    steps: list[Step] = []
    skipped: dict[str, str] = {}
    try:
        keyed = [topics.crm_changes, *(topics.commands(p) for p in topics.psps),
                 topics.payment_events, topics.status_updates, topics.retry]  # fmt: skip
        schema_of = {spec.name: spec.value_schema for spec in topics.all()}
        tps = []
        for spec in keyed:
            if (n := reader.partitions(spec.name, skipped)) is None:
                continue
            tps.append(TopicPartition(spec.name, partition_for(raw, n)))
        objects: set[str] = set()
        aggregates: set[str] = {key}
        for topic, message in reader.read(tps, lambda m: m.key == raw and m.value is not None):
            record = codec.decode(message.value, schema_of[topic])
            steps.append(_step(topic, schema_of[topic], record, message))
            if record.get("psp_object_id"):
                objects.add(str(record["psp_object_id"]))
            if record.get("aggregate_id"):
                aggregates.add(str(record["aggregate_id"]))
        steps += _webhooks(reader, topics, objects, codec, skipped)
        steps += _dead_letters(reader, topics, aggregates, raw, codec, skipped)
        states = _states(reader, state_topic, raw, aggregates, skipped) if state_topic else {}
        skipped.update(reader.unfinished)
    finally:
        reader.close()
    return Trace(story_order(steps), states, skipped)


def story_order(steps: list[Step]) -> list[Step]:
    """The steps in the order the bus wrote them (each producer's clock; ties by topic and
    offset), not by the records' own times, which mix the PSPs' clocks in."""
    return sorted(steps, key=lambda s: (s.written or s.at, s.topic, s.offset))


def _step(topic: str, schema: str, record: Mapping[str, Any], message: Any) -> Step:
    step = summarise(schema, record, message.timestamp, message.offset)
    written = datetime.fromtimestamp(message.timestamp / 1000, UTC)
    return replace(step, topic=topic, offset=message.offset, written=written)


def _webhooks(
    reader: TopicReader, topics: TopicMap, objects: set[str], codec: AvroCodec,
    skipped: dict[str, str],
) -> list[Step]:  # fmt: skip
    name = topics.psp_webhooks.name
    if (n := reader.partitions(name, skipped)) is None:
        return []
    keys = {o.encode() for o in objects}
    tps = [TopicPartition(name, partition_for(k, n)) for k in keys]
    return [
        _step(topic, "PspWebhook", codec.decode(m.value, "PspWebhook"), m)
        for topic, m in reader.read(tps, lambda m: m.key in keys and m.value is not None)
    ]


def _dead_letters(
    reader: TopicReader, topics: TopicMap, aggregates: set[str], key: bytes, codec: AvroCodec,
    skipped: dict[str, str],
) -> list[Step]:  # fmt: skip
    name = topics.dlq.name
    if (n := reader.partitions(name, skipped)) is None:
        return []
    steps = []
    for topic, message in reader.read(
        [TopicPartition(name, p) for p in range(n)], lambda m: m.value is not None
    ):
        record = codec.decode(message.value, "DeadLetter")
        if record.get("aggregate_id") in aggregates or record.get("key") == key:
            steps.append(_step(topic, "DeadLetter", record, message))
    return steps


def _states(
    reader: TopicReader, topic: str, key: bytes, aggregates: set[str], skipped: dict[str, str]
) -> dict[str, AggregateState]:
    """The sequencer's state of each of ``aggregates`` (its changelog: JSON keys, raw values,
    in the partition of the records it judged, i.e. the payment's)."""
    if (n := reader.partitions(topic, skipped, "no such topic (another app id? --app-id)")) is None:
        return {}
    wanted = {json.dumps(agg).encode(): agg for agg in aggregates}
    latest: dict[str, bytes | None] = {}
    for _topic, message in reader.read(
        [TopicPartition(topic, partition_for(key, n))], lambda m: m.key in wanted
    ):
        latest[wanted[message.key]] = message.value
    return {agg: state for agg, value in latest.items() if (state := load_state(agg, value))}
