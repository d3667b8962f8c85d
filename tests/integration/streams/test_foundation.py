"""Foundation on the real embedded broker: SDK -> Faust worker, topics, ``paybus publish``."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.admin import create_topics, describe_topics
from streams.broker import EmbeddedBroker
from streams.publisher import Publisher
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess, paybus_env, wait_for

pytestmark = pytest.mark.broker
HERE = Path(__file__).parent


def _change(i: int, **over: object) -> dict[str, object]:
    return {
        "change_id": f"chg-{i}",
        "aggregate_id": f"pay-{i % 5}",
        "aggregate_type": "payment",
        "intent": "create_payment",
        "occurred_at": datetime(2026, 11, 22, 10, i, tzinfo=UTC),
        "source": "test",
        "amount_minor": 100 + i,
        "currency": "EUR",
        "payment_method_ref": "pm_card_visa",
        **over,
    }


def _paybus(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sdk_record_reaches_a_faust_agent_typed(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    env = paybus_env(
        broker.bootstrap, topic_prefix, tmp_path, ECHO_OUT=str(tmp_path / "echo.jsonl")
    )
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    worker = WorkerProcess([sys.executable, str(HERE / "echo_worker.py")], env, tmp_path / "w.log")
    worker.start()
    try:
        worker.wait_ready()
        with Publisher(broker.bootstrap, topic_prefix=topic_prefix) as pub:
            sent = pub.publish_crm_changes([_change(i) for i in range(10)])
        assert [s.key for s in sent] == [f"pay-{i % 5}" for i in range(10)]
        out = tmp_path / "echo.jsonl"

        def all_received() -> bool:
            return out.exists() and len(out.read_text().splitlines()) >= 10

        wait_for(all_received, 60, "10 records in the agent")
        received = {r["change_id"]: r for r in map(json.loads, out.read_text().splitlines())}
        assert len(received) == 10
        for i, where in enumerate(sent):
            got = received[f"chg-{i}"]
            assert got["type"] == "CrmChange"
            assert got["key"] == where.key
            assert (got["partition"], got["offset"]) == (where.partition, where.offset)
            assert got["amount_minor"] == 100 + i
            assert got["occurred_at"] == f"2026-11-22T10:{i:02d}:00+00:00"
        # Same key, same partition: the aggregate's order is the partition's order.
        by_key: dict[str, set[int]] = {}
        for where in sent:
            by_key.setdefault(where.key, set()).add(where.partition)
        assert all(len(parts) == 1 for parts in by_key.values())
    finally:
        worker.stop()


def test_topics_create_is_idempotent(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    env = paybus_env(broker.bootstrap, topic_prefix, tmp_path, PAYBUS_PARTITIONS="3")
    first = _paybus(env, "topics", "create")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("created") == 8
    second = _paybus(env, "topics", "create")
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("exists") == 8 and "created" not in second.stdout
    names = [t.name for t in TopicMap(topic_prefix, 3, 1).all()]
    assert all(s.exists and s.partitions == 3 for s in describe_topics(broker.bootstrap, names))
    listed = _paybus(env, "topics", "list")
    assert listed.returncode == 0 and f"{topic_prefix}.payments.events" in listed.stdout


def test_a_topic_with_another_partition_count_is_refused(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """A producer that wrote before ``paybus topics create`` had the broker auto-create its
    topic with the broker's default count: said by ``topics create``/``list``, and no worker
    starts on it (its payments' records would not share partition numbers across topics)."""
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, [TopicMap(topic_prefix, 4, 1).crm_changes])
    env = paybus_env(broker.bootstrap, topic_prefix, tmp_path)
    created = _paybus(env, "topics", "create")
    assert created.returncode == 1, created.stdout
    assert created.stdout.count("created") == 7  # the rest is created all the same
    expected = f"{tm.crm_changes.name} has 4 partitions; the bus is configured for 8"
    assert expected in created.stderr and "PAYBUS_PARTITIONS" in created.stderr
    listed = _paybus({**env, "COLUMNS": "250"}, "topics", "list")
    assert listed.returncode == 0 and "4 (configured 8)" in listed.stdout
    worker = _paybus(env, "worker")
    assert worker.returncode == 1 and expected in worker.stderr, worker.stderr


def test_publish_file_with_good_and_bad_lines(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    env = paybus_env(broker.bootstrap, topic_prefix, tmp_path)
    create_topics(broker.bootstrap, TopicMap(topic_prefix, 8, 1).all())
    good = [json.dumps({**_change(i), "occurred_at": f"2026-11-22T10:0{i}:00Z"}) for i in range(3)]
    no_card = json.dumps({**json.loads(good[0]), "change_id": "chg-9", "payment_method_ref": None})
    lines = [good[0], '{"change_id": "x"', good[1], json.dumps({"change_id": 5}), good[2], no_card]
    path = tmp_path / "changes.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = _paybus(env, "publish", "crm-changes", str(path))
    assert result.returncode == 1
    assert f"{path}:2:18: bad JSON: Expecting ',' delimiter" in result.stderr
    assert f"{path}:4:" in result.stderr and "change_id" in result.stderr
    # Fits the schema, yet could only be failed by the router: refused at the source.
    assert f"{path}:6: a card payment needs payment_method_ref" in result.stderr
    assert "published 3, invalid 3" in result.stdout

    from kafka import KafkaConsumer

    from streams.codec import AvroCodec

    consumer = KafkaConsumer(
        f"{topic_prefix}.crm.changes",
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    ids = sorted(AvroCodec().decode(m.value, "CrmChange")["change_id"] for m in consumer)
    consumer.close()
    assert ids == ["chg-0", "chg-1", "chg-2"]


def test_publish_missing_file_is_a_clear_error(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    result = _paybus(
        paybus_env(broker.bootstrap, topic_prefix, tmp_path),
        "publish",
        "crm-changes",
        str(tmp_path / "nope.jsonl"),
    )
    assert result.returncode == 1
    assert f"error: {tmp_path / 'nope.jsonl'}: no such file" in result.stderr
