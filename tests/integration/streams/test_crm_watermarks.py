"""KafkaWatermarkStore on the embedded broker: durable, per key, newest wins, incremental."""

from __future__ import annotations

import datetime as dt
import logging
import time

import pytest

from connectors.salesforce.poller import Cursor, Watermark
from streams.broker import EmbeddedBroker
from streams.watermarks import KafkaWatermarkStore

pytestmark = pytest.mark.broker


def _mark(n: int) -> Watermark:
    stamp = dt.datetime(2026, 3, 1, 12, 0, n, tzinfo=dt.UTC)
    return Watermark({"Payment__c": Cursor(stamp, f"a01{n:012d}AAA")})


def test_saved_watermark_survives_a_new_store_and_the_newest_wins(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.crm.watermarks"
    first = KafkaWatermarkStore(broker.bootstrap, topic, "paybus/salesforce", timeout_s=10)
    other = KafkaWatermarkStore(broker.bootstrap, topic, "other/salesforce", timeout_s=10)
    try:
        assert first.load() is None  # creates the topic; nothing stored yet
        first.save(_mark(1))
        other.save(_mark(9))
        first.save(_mark(2))
        # A restart: a fresh store reads the topic to its end and keeps its key's last value.
        again = KafkaWatermarkStore(broker.bootstrap, topic, "paybus/salesforce", timeout_s=10)
        assert again.load() == _mark(2)
        assert other.load() == _mark(9)
        # Another leader saves; the first store's next load reads only what is new.
        again.save(_mark(3))
        assert first.load() == _mark(3)
        assert first.load() == _mark(3)
        again.close()
    finally:
        first.close()
        other.close()


def test_loading_every_poll_logs_no_kafka_errors(
    broker: EmbeddedBroker, topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The CRM poller loads the watermark every poll (each second in `paybus dev`); a consumer
    # made and closed per load logged "ERROR kafka.cluster: Metadata refresh: failed
    # Cancelled" each time.
    caplog.set_level(logging.ERROR, logger="kafka")
    store = KafkaWatermarkStore(
        broker.bootstrap, f"{topic_prefix}.crm.watermarks", "paybus/salesforce", timeout_s=10
    )
    try:
        for n in range(5):
            store.save(_mark(n))
            assert store.load() == _mark(n)
            time.sleep(0.2)  # the poller waits between loads too (poll_interval_s)
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors == []
    finally:
        store.close()
