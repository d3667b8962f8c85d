"""The pending-letter gauge's reader: a scrape never waits for Kafka."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaError

from streams.dlq_watch import PENDING, DlqWatch

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


class _Consumer:
    """A DLQ of one empty partition whose ``poll`` waits until released (or 2 s): a refresh
    busy reading Kafka, as it is for up to its timeout when the broker is slow."""

    def __init__(self) -> None:
        self.polling = threading.Event()
        self.release = threading.Event()

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition("dlq", 0)}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0}

    def poll(self, timeout_ms: int) -> dict[Any, Any]:
        self.polling.set()
        self.release.wait(2.0)
        return {}

    def highwater(self, tp: TopicPartition) -> int:
        return 0

    def position(self, tp: TopicPartition) -> int:
        return 0

    def close(self) -> None:
        pass


def _samples(watch: DlqWatch, name: str = PENDING) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value) for family in watch.collect() for s in family.samples if s.name == name
    ]


def test_a_scrape_does_not_wait_for_a_refresh_reading_kafka() -> None:
    # /metrics is rendered on the event loop: a collect() waiting for the refresh thread's
    # lock would stall every agent of the worker (heartbeats too) for as long as it reads
    consumer = _Consumer()
    watch = DlqWatch("unused:9092", "dlq", timeout_s=5.0)
    watch._consumer = consumer  # type: ignore[assignment]
    watch._ledger.add({"dead_letter_id": "d1", "stage": "decode", "failed_at": NOW})
    consumer.release.set()
    watch.refresh()
    assert _samples(watch) == [({"stage": "decode"}, 1.0)]

    consumer.release.clear()
    consumer.polling.clear()
    reading = threading.Thread(target=watch.refresh)
    reading.start()
    try:
        assert consumer.polling.wait(2.0)
        started = time.monotonic()
        samples = _samples(watch)
        waited = time.monotonic() - started
    finally:
        consumer.release.set()
        reading.join(5.0)
    assert waited < 0.5, f"collect() waited {waited:.1f}s for the refresh"
    assert samples == [({"stage": "decode"}, 1.0)]  # the last complete count meanwhile


def test_no_series_before_the_dlq_was_read_to_the_end() -> None:
    watch = DlqWatch("unused:9092", "dlq")
    watch._ledger.add({"dead_letter_id": "d1", "stage": "decode", "failed_at": NOW})
    assert _samples(watch) == [] and watch.pending_by_stage() == {}


class _Gone:
    """A consumer whose broker went away."""

    def assignment(self) -> set[object]:
        raise KafkaError("broker gone")

    def close(self) -> None:
        pass


def test_a_failed_refresh_keeps_the_last_complete_count() -> None:
    # dropping the series would restart PaybusDeadLettersPending's hour at every hiccup
    watch = DlqWatch("unused:9092", "dlq")
    watch._pending, watch.caught_up = {"decode": 2, "crm-writer": 0}, True
    watch._consumer = _Gone()  # type: ignore[assignment]
    with pytest.raises(KafkaError):
        watch.refresh()
    assert _samples(watch) == [({"stage": "crm-writer"}, 0.0), ({"stage": "decode"}, 2.0)]
    assert not watch.caught_up and watch._consumer is None  # the next refresh starts afresh
