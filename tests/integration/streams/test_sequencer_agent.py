"""The sequencing agent in a real worker on the embedded broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.codec import AvroCodec
from streams.demo_data import delivery, final_statuses, histories
from streams.sequencing_state import REASON_GIVEN_ATTRIBUTE
from streams.topics import TopicMap
from tests.integration.reliability.support import metric_sum
from tests.support.workers import WorkerProcess, paybus_env, wait_for

pytestmark = pytest.mark.broker


def publish_events(bootstrap: str, topic: str, records: list[dict[str, object]]) -> None:
    codec = AvroCodec()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for rec in records:
        producer.send(
            topic, key=str(rec["aggregate_id"]).encode(), value=codec.encode("PaymentEvent", rec)
        )
    producer.flush()
    producer.close()


class StatusReader:
    """Reads ``paybus.payments.status`` (and the DLQ) as the CRM writer would."""

    def __init__(self, bootstrap: str, tm: TopicMap) -> None:
        self.codec = AvroCodec()
        self.status = KafkaConsumer(
            tm.status_updates.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        self.dlq = KafkaConsumer(
            tm.dlq.name, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        self.updates: list[dict[str, object]] = []
        self.dead: list[dict[str, object]] = []

    def poll(self) -> None:
        for batch in self.status.poll(200).values():
            self.updates += [self.codec.decode(m.value, "StatusUpdate") for m in batch]
        for batch in self.dlq.poll(50).values():
            self.dead += [self.codec.decode(m.value, "DeadLetter") for m in batch]

    def finals(self) -> dict[str, str]:
        best: dict[str, tuple[int, str]] = {}
        for u in self.updates:
            agg, seq = str(u["aggregate_id"]), int(u["seq"])  # type: ignore[call-overload]
            if agg not in best or seq > best[agg][0]:
                best[agg] = (seq, str(u["to_status"]))
        return {agg: status for agg, (_, status) in best.items()}

    def close(self) -> None:
        self.status.close()
        self.dlq.close()


def test_shuffled_duplicated_histories_end_in_order(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    hist = histories(60, seed=3)
    events = list(delivery(hist, seed=5))
    rejected = {
        "event_id": "bad-1",
        "aggregate_id": "agg-x",
        "aggregate_type": "payment",
        "status": "teleported",
        "occurred_at": events[0].occurred_at,
        "source": "test",
    }
    env = paybus_env(broker.bootstrap, topic_prefix, tmp_path)
    worker = WorkerProcess.paybus(env, tmp_path / "worker.log", "--role", "sequencer").start()
    reader = StatusReader(broker.bootstrap, tm)
    try:
        worker.wait_ready()
        publish_events(
            broker.bootstrap, tm.payment_events.name, [e.as_record() for e in events] + [rejected]
        )
        expected = final_statuses(hist)

        def done() -> bool:
            reader.poll()
            return reader.finals() == expected and len(reader.dead) == 1

        wait_for(done, 90, "final statuses equal the in-order ones")
        # Every applied event produced exactly one update.
        ids = [u["event_id"] for u in reader.updates]
        assert len(ids) == len(set(ids))
        assert reader.dead[0]["stage"] == "sequencer"
        assert "teleported" in str(reader.dead[0]["reason"])
        metrics = worker.metrics_text() or ""
        assert 'outcome="duplicate"' in metrics and 'outcome="applied"' in metrics
    finally:
        reader.close()
        worker.stop()
    (tmp_path / "expected.json").write_text(json.dumps(expected))


def _held_gauge(worker: WorkerProcess) -> float | None:
    for line in (worker.metrics_text() or "").splitlines():
        if line.startswith("paybus_held_events "):
            return float(line.split()[1])
    return None


def direct_debit_event(
    event_id: str, aggregate: str, status: str, second: int, **extra: object
) -> dict[str, object]:
    """A direct-debit payment's event ``second`` seconds into a fixed minute."""
    at = datetime(2026, 12, 4, 12, 0, tzinfo=UTC) + timedelta(seconds=second)
    return {"event_id": event_id, "aggregate_id": aggregate, "aggregate_type": "payment",
            "status": status, "occurred_at": at, "source": "test", "method": "direct_debit",
            **extra}  # fmt: skip


def test_the_held_gauge_follows_each_batch(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    # The reconcile timer runs every hold timeout / 4 (225 s by default): the gauge must not
    # wait for it, or the dashboard shows minutes-old held counts.
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())

    def event(n: int, status: str) -> dict[str, object]:
        return direct_debit_event(f"h-{n}", "agg-held", status, n)

    env = paybus_env(broker.bootstrap, topic_prefix, tmp_path)
    worker = WorkerProcess.paybus(env, tmp_path / "worker.log", "--role", "sequencer").start()
    try:
        worker.wait_ready()
        # A direct debit confirmed before it was submitted: held until the gap fills.
        publish_events(broker.bootstrap, tm.payment_events.name,
                       [event(0, "created"), event(3, "confirmed")])  # fmt: skip
        wait_for(lambda: _held_gauge(worker) == 1.0, 30, "the held gauge to show 1")
        publish_events(broker.bootstrap, tm.payment_events.name,
                       [event(1, "pending_submission"), event(2, "submitted")])  # fmt: skip
        wait_for(lambda: _held_gauge(worker) == 0.0, 30, "the held gauge to go back to 0")
    finally:
        worker.stop()


def test_a_held_event_dead_lettered_later_carries_its_own_bytes(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    # A held event pushed out of a full held list while another message is judged goes to the
    # DLQ: the letter must carry *that* event (so a replay judges it again), under an id of
    # its own, not the bytes and id of the message that pushed it out.
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())

    def event(n: int, status: str) -> dict[str, object]:
        return direct_debit_event(f"ev-{n}", "agg-evict", status, n,
                                  psp="gocardless", psp_object_id="PM-9")  # fmt: skip

    env = paybus_env(broker.bootstrap, topic_prefix, tmp_path, PAYBUS_MAX_HELD_EVENTS="1")
    worker = WorkerProcess.paybus(env, tmp_path / "worker.log", "--role", "sequencer").start()
    reader = StatusReader(broker.bootstrap, tm)
    try:
        worker.wait_ready()
        # created applies; submitted skips pending_submission (held); confirmed is held too
        # and, the list holding one, pushes the older submitted out.
        history = [event(0, "created"), event(2, "submitted"), event(3, "confirmed")]
        publish_events(broker.bootstrap, tm.payment_events.name, history)

        def dead_lettered() -> bool:
            reader.poll()
            return len(reader.dead) == 1

        wait_for(dead_lettered, 30, "the evicted event's dead letter")
        letter = reader.dead[0]
        assert str(letter["reason"]).startswith("ev-2: evicted:")
        carried = AvroCodec().decode(bytes(letter["value"]), "PaymentEvent")  # type: ignore[arg-type]
        assert carried["event_id"] == "ev-2" and carried["status"] == "submitted"
        assert carried["psp_object_id"] == "PM-9" and carried["method"] == "direct_debit"
        assert letter["key"] == b"agg-evict"
        assert letter["dead_letter_id"] != f"{tm.payment_events.name}:" + ":".join(
            (str(letter["original_partition"]), str(letter["original_offset"]))
        )
    finally:
        reader.close()
        worker.stop()


def test_a_cancels_reason_reaches_the_status_after_the_webhook_came_first(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    # Stripe's webhook for a cancel the bus asked for can be sequenced before the command
    # stage's answer, which alone carries the cancel's reason: the answer, one second older
    # (canceled_at against the event's created), re-asserts cancelled with it.
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    given = {REASON_GIVEN_ATTRIBUTE: "cancel"}
    history = [
        direct_debit_event("wh-created", "agg-cancel", "created", 0),
        direct_debit_event("wh-cancelled", "agg-cancel", "cancelled", 10),
        direct_debit_event(
            "cmd-9:cancelled",
            "agg-cancel",
            "cancelled",
            9,
            reason="customer asked",
            attributes=given,
        ),
        direct_debit_event("wh-cancelled-again", "agg-cancel", "cancelled", 11),
    ]
    env = paybus_env(broker.bootstrap, topic_prefix, tmp_path)
    worker = WorkerProcess.paybus(env, tmp_path / "worker.log", "--role", "sequencer").start()
    reader = StatusReader(broker.bootstrap, tm)
    try:
        worker.wait_ready()
        publish_events(broker.bootstrap, tm.payment_events.name, history)

        def judged() -> bool:  # the last webhook judged (a duplicate), its batch sent
            duplicates = metric_sum(worker, "paybus_events_total", stage="sequencer",
                                    outcome="duplicate")  # fmt: skip
            reader.poll()
            return duplicates >= 1 and len(reader.updates) >= 3

        wait_for(judged, 30, f"four events judged; log: {worker.log_tail()}")
        reader.poll()
        got = [(u["from_status"], u["to_status"], u["seq"], u["reason"]) for u in reader.updates]
        assert got == [
            (None, "created", 1, None),
            ("created", "cancelled", 2, None),
            ("cancelled", "cancelled", 3, "customer asked"),
        ]
    finally:
        reader.close()
        worker.stop()
