"""Building dead letters: the original bytes plus where they came from and why they failed.

A dead letter keeps the original key and value untouched, so ``paybus dlq replay`` can put the
very same record back after the cause is fixed. Its reason and error log are redacted
(:mod:`streams.redaction`): they quote PSP and CRM errors and exceptions, which may quote a
card or account number, and a dead letter is a Kafka record operators print.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from streams.records import DeadLetter
from streams.redaction import redact


def dead_letter_id(topic: str, partition: int, offset: int, part: str | None = None) -> str:
    """Stable id: the same record failing twice yields the same id.

    ``part`` tells apart several letters one record gives rise to (the sequencer dead-letters
    held events, by event id, while judging another record): the DLQ is compacted by letter
    id, so letters sharing one would replace each other.
    """
    base = f"{topic}:{partition}:{offset}"
    return f"{base}/{part}" if part else base


def make_dead_letter(
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    stage: str,
    reason: str,
    aggregate_id: str | None = None,
    error_log: Sequence[str] = (),
    attempts: int = 1,
    part: str | None = None,
) -> DeadLetter:
    return DeadLetter(
        dead_letter_id=dead_letter_id(topic, partition, offset, part),
        original_topic=topic,
        original_partition=partition,
        original_offset=offset,
        key=key,
        value=value or b"",
        aggregate_id=aggregate_id,
        stage=stage,
        reason=redact(reason),
        error_log=[redact(line) for line in error_log] or [redact(reason)],
        attempts=attempts,
        failed_at=datetime.now(UTC),
    )
