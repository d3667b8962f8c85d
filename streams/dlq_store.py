"""Reading, replaying and marking dead letters on ``paybus.dlq`` (for ``paybus dlq``).

The DLQ is read whole from the beginning by a consumer without a group (nothing commits).
Replaying puts the original key and value bytes back on the original topic and partition, in
the original order (by offset within each partition), and then writes a *replay marker*: a
``DeadLetter`` with stage ``replayed`` and the same ``dead_letter_id``, keyed by that id (so
compaction keeps one marker per letter and never drops a letter for it). A letter with a marker
is listed as replayed. Markers are written after the records were delivered, so a crash in
between at worst lets an operator replay the same records twice, which the bus absorbs
(commands and events carry their own ids).

``paybus dlq discard`` closes letters the same way with a ``discarded`` marker, for letters an
operator decided need nothing more. Letters closed by neither are *pending*: what
``dlq list --pending`` shows and the ``paybus_dlq_pending_letters`` gauge counts
(:mod:`streams.dlq_watch`), except those with a ``retry_at``, which the ops role replays
itself through :func:`replay` (:mod:`streams.auto_replay`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams import auto_replay
from streams.codec import AvroCodec
from streams.kafka_headers import Headers
from streams.lag import end_offsets_from_fetch
from streams.redaction import redact

REPLAYED = "replayed"
#: Marker stage of a letter an operator looked at and chose not to replay (``dlq discard``).
DISCARDED = "discarded"
#: Marker stages: they close a letter, they are not letters themselves.
RESOLUTIONS = frozenset({REPLAYED, DISCARDED})


@dataclass
class Letter:
    """One dead letter as the CLI shows it."""

    record: dict[str, Any]
    resolved_at: datetime | None = None
    #: How it was closed: :data:`REPLAYED` or :data:`DISCARDED` (None while pending).
    resolution: str | None = None
    #: The marker's reason (``discarded: <why>``).
    resolution_reason: str | None = None
    dlq_offsets: list[tuple[int, int]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.record["dead_letter_id"])

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None

    @property
    def replayed(self) -> bool:
        return self.resolution == REPLAYED

    @property
    def replayed_at(self) -> datetime | None:
        return self.resolved_at if self.replayed else None

    @property
    def retry_at(self) -> datetime | None:
        """When the bus replays it by itself, if it does (None: it waits for an operator)."""
        at = self.record.get("retry_at")
        return at if isinstance(at, datetime) else None


class Ledger:
    """Letters by id, fed DLQ records in log order: the latest copy wins, markers close.

    A marker closes the letter of its id that came before it; a copy of the letter that comes
    after it (the same record failing again) is pending once more. Letter and marker share a
    key, so they share a partition and arrive in log order: order, not the records' times,
    decides, so the clocks of the worker that wrote a letter and of the operator's machine
    that wrote its marker need not agree. Compaction may leave a marker without its letter,
    which is then simply not listed. Fed incrementally by the worker's DLQ gauge and all at
    once by the CLI.
    """

    def __init__(self) -> None:
        self.letters: dict[str, Letter] = {}

    def add(self, record: dict[str, Any]) -> None:
        lid = str(record["dead_letter_id"])
        stage = record.get("stage")
        if stage in RESOLUTIONS:
            if (letter := self.letters.get(lid)) is not None:
                letter.resolved_at, letter.resolution = record["failed_at"], str(stage)
                letter.resolution_reason = record.get("reason")
            return
        self.letters[lid] = Letter(record)

    def pending(self) -> list[Letter]:
        return [lt for lt in self.letters.values() if not lt.resolved]


def collect(records: Iterable[dict[str, Any]]) -> dict[str, Letter]:
    """Letters by id from DLQ records in log order (see :class:`Ledger`)."""
    ledger = Ledger()
    for record in records:
        ledger.add(record)
    return ledger.letters


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
    """Which letters a command takes: the named ids, or every pending one (of an aggregate)."""
    if ids:
        missing = [i for i in ids if i not in letters]
        if missing:
            raise KeyError(", ".join(missing))
        return [letters[i] for i in ids]
    return [
        lt
        for lt in letters.values()
        if not lt.resolved
        and (everything or (aggregate is not None and lt.record.get("aggregate_id") == aggregate))
    ]


def decode_letter(codec: AvroCodec, value: bytes, headers: Headers) -> dict[str, Any]:
    """A DLQ record decoded, with its ``retry_at`` (None unless its headers schedule an
    automatic replay; never on a marker). The time is a header, not a schema field, so the
    release's readers read the letter too (see :mod:`streams.auto_replay`)."""
    record: dict[str, Any] = codec.decode(value, "DeadLetter")
    scheduled = record.get("stage") not in RESOLUTIONS
    record["retry_at"] = auto_replay.retry_at_of(headers) if scheduled else None
    return record


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
                    record = decode_letter(codec, msg.value, msg.headers)
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
    headers: Callable[[Letter], list[tuple[str, bytes]]] | None = None,
    how: str = "replayed",
) -> list[Letter]:
    """Re-inject ``letters`` in replay order (``values`` overrides fixed ones), marking each
    once its record is delivered.

    A failure half-way raises, with the letters delivered so far marked (``resolved``): the
    next try, an operator's or the ops role's next tick, re-injects only the rest. Marked
    only at the end, every delivered letter was re-injected again by each try for as long as
    a later one failed. ``headers`` gives each re-injected record its Kafka headers (the
    automatic replay's count, see :mod:`streams.auto_replay`); ``how`` starts the markers'
    reason."""
    ordered = replay_order(letters)
    codec = AvroCodec()
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
                headers=headers(letter) if headers is not None else None,
            ).get(timeout=30)  # one at a time: order within the partition is the point
            _mark(producer, dlq_topic, [letter], REPLAYED,
                  lambda lt: f"{how} to {lt.record['original_topic']}", codec)  # fmt: skip
        producer.flush(30)
    finally:
        producer.close()
    return ordered


def discard(bootstrap: str, dlq_topic: str, letters: Sequence[Letter], reason: str) -> None:
    """Close ``letters`` without replaying them: an operator decided they need nothing more.

    The letters stay readable (``dlq list`` shows them as discarded, with the reason) until
    compaction keeps only the marker; they stop counting as pending for the DLQ gauge and its
    alert.
    """
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        _mark(producer, dlq_topic, letters, DISCARDED, lambda _lt: f"discarded: {reason}")
        producer.flush(30)
    finally:
        producer.close()


def _mark(
    producer: KafkaProducer,
    dlq_topic: str,
    letters: Sequence[Letter],
    resolution: str,
    reason: Callable[[Letter], str],
    codec: AvroCodec | None = None,
) -> None:
    """Queue one marker per letter (keyed by its id, so compaction keeps the marker)."""
    codec = codec or AvroCodec()
    now = datetime.now(UTC)
    for letter in letters:
        marker = {
            # not retry_at: a header of the letter, not a field (and a closed letter is
            # replayed by no one)
            **{k: v for k, v in letter.record.items() if k != "retry_at"},
            "stage": resolution,
            # an operator's --reason is free text entering a record: masked like a PSP's
            "reason": redact(reason(letter)),
            "failed_at": now,
            "value": b"",
            "error_log": [],
        }
        producer.send(dlq_topic, key=letter.id.encode(), value=codec.encode("DeadLetter", marker))
        letter.resolved_at, letter.resolution = now, resolution
        letter.resolution_reason = marker["reason"]
