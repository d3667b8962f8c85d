"""``streams.trace`` against the embedded broker: it finds a key's records where the bus put
them, and says so when it could not read a partition to its end."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer
from typer.testing import CliRunner

from streams.admin import create_topics
from streams.agents.commands import LINK_CONTENT_TYPE
from streams.broker import EmbeddedBroker
from streams.cli import app
from streams.codec import AvroCodec
from streams.topics import TopicMap
from streams.trace import trace

pytestmark = pytest.mark.broker


def _event(n: int, aggregate: str) -> dict[str, object]:
    return {"event_id": f"e-{aggregate}-{n}", "aggregate_id": aggregate,
            "aggregate_type": "payment", "status": ("created", "confirmed")[n % 2],
            "occurred_at": datetime(2026, 12, 4, 12, tzinfo=UTC) + timedelta(seconds=n),
            "source": "test", "method": "card"}  # fmt: skip


def test_a_trace_finds_its_keys_records_and_owns_up_to_what_it_did_not_read(
    broker: EmbeddedBroker, topic_prefix: str
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, [tm.crm_changes, tm.payment_events, tm.status_updates])
    codec = AvroCodec()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for n in range(200):  # neighbours on every partition, ours among them
        agg = "pay-traced" if n % 50 == 0 else f"pay-other-{n}"
        producer.send(tm.payment_events.name, key=agg.encode(),
                      value=codec.encode("PaymentEvent", _event(n, agg)))  # fmt: skip
    for n in range(2000):  # more than one poll returns (500 records)
        producer.send(tm.payment_events.name, key=b"pay-busy",
                      value=codec.encode("PaymentEvent", _event(n, "pay-busy")))  # fmt: skip
    producer.flush()
    producer.close()

    found = trace(broker.bootstrap, tm, "pay-traced", codec)
    assert [s.summary.split(", ")[1] for s in found.steps] == [
        f"event e-pay-traced-{n}" for n in (0, 50, 100, 150)
    ]
    assert [s.kind for s in found.steps] == ["event created", "event created"] * 2
    assert {s.topic for s in found.steps} == {tm.payment_events.name}
    # topics this bus has not created are named, not silently passed over
    assert found.skipped[tm.retry.name] == "no such topic"
    assert not any(name.startswith(tm.payment_events.name) for name in found.skipped)

    hurried = trace(broker.bootstrap, tm, "pay-busy", codec, timeout_s=0.0)
    assert 0 < len(hurried.steps) < 2000
    unfinished = [why for name, why in hurried.skipped.items() if "[" in name]
    assert unfinished and all("(--timeout)" in why for why in unfinished)


def _linked_payment(
    producer: KafkaProducer, tm: TopicMap, codec: AvroCodec, object_id: str, payment: str
) -> None:
    """What a connector worker leaves for a Stripe object it created for ``payment``: the link
    record (keyed by the object id), and one of the payment's events."""
    link = {"aggregate_id": payment, "aggregate_type": "payment", "payment_id": payment,
            "crm_record_id": None}  # fmt: skip
    producer.send(tm.psp_webhooks.name, key=object_id.encode(), value=codec.encode("PspWebhook", {
        "webhook_id": f"link:{object_id}", "psp": "stripe", "psp_object_id": object_id,
        "received_at": datetime(2026, 12, 4, 12, tzinfo=UTC), "body": json.dumps(link).encode(),
        "content_type": LINK_CONTENT_TYPE, "headers": {},
    }))  # fmt: skip
    producer.send(tm.payment_events.name, key=payment.encode(),
                  value=codec.encode("PaymentEvent", _event(0, payment)))  # fmt: skip


def _cli_env(broker: EmbeddedBroker, topic_prefix: str) -> dict[str, str]:
    """The environment of a ``paybus trace`` run against this test's topics."""
    return {"PAYBUS_BOOTSTRAP_SERVERS": broker.bootstrap, "PAYBUS_TOPIC_PREFIX": topic_prefix,
            "PAYBUS_PARTITIONS": "8", "COLUMNS": "250"}  # fmt: skip


def test_an_id_no_record_is_keyed_by_leads_to_its_payments_story(
    broker: EmbeddedBroker, topic_prefix: str, clean_env: Path
) -> None:
    # Support is asked about a payment by the id the asker holds: the PSP's (from its
    # dashboard) or a refund's. The bus keys everything by the payment id, so a trace of
    # those found nothing.
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    codec = AvroCodec()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    _linked_payment(producer, tm, codec, "pi_3Linked", "pay-linked")
    for n in range(300):  # other payments' updates around the refund's
        agg = "ref-9" if n == 150 else f"pay-other-{n}"
        key = b"pay-refunded" if n == 150 else agg.encode()
        producer.send(tm.status_updates.name, key=key, value=codec.encode("StatusUpdate", {
            "event_id": f"e-{n}", "aggregate_id": agg,
            "aggregate_type": "refund" if n == 150 else "payment", "to_status": "created",
            "occurred_at": datetime(2026, 12, 4, 12, tzinfo=UTC), "seq": 1, "source": "test",
            "payment_id": "pay-refunded" if n == 150 else agg,
        }))  # fmt: skip
    producer.flush()
    producer.close()

    env = _cli_env(broker, topic_prefix)
    by_psp_id = CliRunner().invoke(app, ["trace", "pi_3Linked", "--timeout", "10"], env=env)
    assert by_psp_id.exit_code == 0, by_psp_id.output
    assert "pi_3Linked is stripe's object for payment pay-linked" in by_psp_id.stdout
    assert "event e-pay-linked-0" in by_psp_id.stdout
    by_refund = CliRunner().invoke(app, ["trace", "ref-9", "--timeout", "10"], env=env)
    assert by_refund.exit_code == 0, by_refund.output
    assert "ref-9 is a refund: the story of pay-refunded" in by_refund.stdout
    assert "status created" in by_refund.stdout
    unknown = CliRunner().invoke(app, ["trace", "pay-nobody", "--timeout", "10"], env=env)
    assert unknown.exit_code == 1
    assert "nothing on the bus is keyed 'pay-nobody' or names it" in unknown.output


def test_a_dead_letter_keyed_by_a_psp_id_does_not_hide_its_payments_story(
    broker: EmbeddedBroker, topic_prefix: str, clean_env: Path
) -> None:
    # A webhook the normaliser could not map is dead-lettered with the webhook's key, the PSP
    # object id; and the trace's dead-letter read keeps letters whose key is the id traced. So
    # that letter made the first trace non-empty, the owner was never looked for, and the
    # trace of the PSP id support holds showed one dead letter and none of the payment.
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    codec = AvroCodec()
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    _linked_payment(producer, tm, codec, "pi_3Dead", "pay-dead")
    letter = {
        "dead_letter_id": "paybus.psp-webhooks:0:7",
        "original_topic": tm.psp_webhooks.name,
        "original_partition": 0,
        "original_offset": 7,
        "key": b"pi_3Dead",
        "value": b"",
        "aggregate_id": None,
        "stage": "normaliser",
        "reason": "cannot normalise stripe webhook",
        "error_log": ["cannot normalise stripe webhook"],
        "attempts": 1,
        "failed_at": datetime(2026, 12, 4, 12, 5, tzinfo=UTC),
    }
    producer.send(tm.dlq.name, key=b"paybus.psp-webhooks:0:7",
                  value=codec.encode("DeadLetter", letter))  # fmt: skip
    orphan_letter = {**letter, "dead_letter_id": "paybus.psp-webhooks:0:8", "key": b"pi_3Orphan"}
    producer.send(tm.dlq.name, key=b"paybus.psp-webhooks:0:8",
                  value=codec.encode("DeadLetter", orphan_letter))  # fmt: skip
    producer.flush()
    producer.close()

    env = _cli_env(broker, topic_prefix)
    by_psp_id = CliRunner().invoke(app, ["trace", "pi_3Dead", "--timeout", "10"], env=env)
    assert by_psp_id.exit_code == 0, by_psp_id.output
    assert "pi_3Dead is stripe's object for payment pay-dead" in by_psp_id.stdout
    assert "event e-pay-dead-0" in by_psp_id.stdout
    assert "dead letter (normaliser)" in by_psp_id.stdout  # the letter is part of the story
    assert by_psp_id.stdout.count("paybus.psp-webhooks:0:7") == 1  # once, not twice
    # a letter naming an id no record names is still shown, as before
    orphan = CliRunner().invoke(app, ["trace", "pi_3Orphan", "--timeout", "10"], env=env)
    assert orphan.exit_code == 0, orphan.output
    assert "pi_3Orphan: 1 record(s)" in orphan.stdout and "dead letter" in orphan.stdout
