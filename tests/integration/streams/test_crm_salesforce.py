"""The crm role against the Salesforce sandbox: write-back, faults, alerts, poller, no echo.

One worker (``paybus worker --role crm``) and one sandbox (HTTPS, SQLite in tmp) serve the
whole module; every test uses its own aggregates and records. The restart test runs last.
"""

from __future__ import annotations

import datetime as dt
import random
import re
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from connectors.salesforce.poller import Watermark, parse_datetime
from connectors.salesforce.sandbox import Sandbox, start_sandbox
from connectors.salesforce.settings import FieldMap
from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.codec import AvroCodec
from streams.topics import TopicMap
from streams.watermarks import KafkaWatermarkStore
from tests.integration.connectors.salesforce.test_alerts import RELAY_LOGIN, _SmtpServer
from tests.support.workers import WorkerProcess, paybus_env, wait_for

pytestmark = pytest.mark.broker

INTEGRATION = "integration@paybus.sandbox"
STATUSES = ("created", "pending_submission", "submitted", "confirmed", "paid_out")
PAN = "4242 4242 4242 4242"
RECORDS = "paybus_crm_records_written_total"


class Reader:
    """Decoded records of the CRM changes topic and the DLQ, read from the start."""

    def __init__(self, bootstrap: str, tm: TopicMap) -> None:
        self.codec = AvroCodec()
        self.tm = tm
        self.consumer = KafkaConsumer(
            tm.crm_changes.name,
            tm.dlq.name,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=50,
        )
        self.changes: list[dict[str, Any]] = []
        self.dead: list[dict[str, Any]] = []

    def poll(self) -> None:
        for tp, batch in self.consumer.poll(200).items():
            if tp.topic == self.tm.dlq.name:
                self.dead += [self.codec.decode(m.value, "DeadLetter") for m in batch]
            else:
                self.changes += [self.codec.decode(m.value, "CrmChange") for m in batch]

    def changes_of(self, record_ids: set[str]) -> list[dict[str, Any]]:
        self.poll()
        return [c for c in self.changes if c["crm_record_id"] in record_ids]


@dataclass
class Env:
    bootstrap: str
    tm: TopicMap
    sandbox: Sandbox
    smtp: _SmtpServer
    worker: WorkerProcess
    reader: Reader
    producer: KafkaProducer
    codec: AvroCodec

    def publish(self, updates: list[dict[str, Any]]) -> None:
        for update in updates:
            self.producer.send(
                self.tm.status_updates.name,
                key=str(update["aggregate_id"]).encode(),
                value=self.codec.encode("StatusUpdate", update),
            )
        self.producer.flush()

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the worker's samples of ``name`` whose labels include ``labels``."""
        return worker_metric(self.worker, name, **labels)

    def settled(self) -> float:
        return self.metric("paybus_crm_records_written_total")

    def records_by_ext(self) -> dict[str, dict[str, Any]]:
        return {
            str(r["External_Id__c"]): r
            for r in self.sandbox.admin.records("Payment__c")
            if r.get("External_Id__c")
        }


def worker_metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    """Sum of ``worker``'s samples of ``name`` whose labels include ``labels``."""
    text = worker.metrics_text() or ""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match[1] or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match[2])
    return total


def sandbox_env(sandbox: Sandbox) -> dict[str, str]:
    """A worker's Salesforce settings for ``sandbox``, writing as its integration user."""
    return {
        "PAYBUS_SALESFORCE__INSTANCE_URL": sandbox.instance_url,
        "PAYBUS_SALESFORCE__SESSION_ID": sandbox.token_for("integration"),
        "PAYBUS_SALESFORCE__CA_BUNDLE": str(sandbox.cert_path),
    }


def update(agg: str, seq: int, **extra: Any) -> dict[str, Any]:
    base = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    return {
        "event_id": f"evt-{agg}-{seq}",
        "aggregate_id": agg,
        "aggregate_type": "payment",
        "to_status": STATUSES[(seq - 1) % len(STATUSES)],
        "from_status": STATUSES[(seq - 2) % len(STATUSES)] if seq > 1 else None,
        "occurred_at": base + dt.timedelta(minutes=seq),
        "seq": seq,
        "source": "test",
        "psp": "stripe",
        "psp_object_id": f"pi_{agg}",
        **extra,
    }


@pytest.fixture(scope="module")
def env(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("crm")
    prefix = f"t{uuid.uuid4().hex[:10]}"
    tm = TopicMap(prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    # A submission relay (STARTTLS, then a login), configured as production would be.
    smtp = _SmtpServer(tmp / "smtp-tls", login=RELAY_LOGIN)
    threading.Thread(target=smtp.serve_forever, args=(0.05,), daemon=True).start()
    with start_sandbox(db_path=tmp / "sf.sqlite") as sandbox:
        # The org-side rules: both on Payment__c (upserts by external id), the version guard
        # alone on Mandate__c (updates by Id unread); Refund__c keeps the read guard.
        sandbox.admin.deploy_paybus_rules(FieldMap().payment)
        sandbox.admin.deploy_paybus_rules(FieldMap().mandate, no_create=False)
        worker_env = paybus_env(
            broker.bootstrap, prefix, tmp, **sandbox_env(sandbox),
            PAYBUS_SALESFORCE__FLUSH_INTERVAL_S="1",
            PAYBUS_SALESFORCE__UPDATES_PER_BATCH="1000",
            PAYBUS_SALESFORCE__POLL_INTERVAL_S="0.5",
            PAYBUS_SALESFORCE__VERSION_GUARD="rule",
            PAYBUS_SALESFORCE__OUTAGE_RETRY_MAX_S="1",
            PAYBUS_CRM__INTEGRATION_USERNAME=INTEGRATION,
            PAYBUS_CRM__ALERT_SMTP_HOST="127.0.0.1",
            PAYBUS_CRM__ALERT_SMTP_PORT=str(smtp.server_address[1]),
            PAYBUS_CRM__ALERT_TO='["payments-team@example.org"]',
            PAYBUS_CRM__ALERT_SMTP_STARTTLS="true",
            PAYBUS_CRM__ALERT_SMTP_CA_BUNDLE=str(smtp.cert_path),
            PAYBUS_CRM__ALERT_SMTP_USERNAME=RELAY_LOGIN[0],
            PAYBUS_CRM__ALERT_SMTP_PASSWORD=RELAY_LOGIN[1],
        )  # fmt: skip
        worker = WorkerProcess.paybus(worker_env, tmp / "worker.log", "--role", "crm").start()
        reader = Reader(broker.bootstrap, tm)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
        try:
            worker.wait_ready()
            yield Env(broker.bootstrap, tm, sandbox, smtp, worker, reader, producer, AvroCodec())
        finally:
            producer.close()
            reader.consumer.close()
            worker.stop()
            smtp.shutdown()
            smtp.server_close()


def test_thousand_shuffled_updates_for_300_records_end_latest_in_few_calls(env: Env) -> None:
    aggs = [f"wb-{n:03d}" for n in range(300)]
    env.sandbox.admin.seed(
        "Payment__c", [{"External_Id__c": a} for a in aggs], as_user="integration"
    )
    rng = random.Random(7)
    lengths = {agg: 1 + (n % 5) for n, agg in enumerate(aggs)}  # 900 distinct updates
    unique = [update(agg, seq) for agg, k in lengths.items() for seq in range(1, k + 1)]
    replays = [dict(rng.choice(unique)) for _ in range(1000 - len(unique))]
    updates = unique + replays
    rng.shuffle(updates)
    assert len(updates) == 1000
    calls_before = env.metric("paybus_crm_api_calls_total", operation="write")
    settled_before = env.settled()
    outcomes_before = {o: env.metric(RECORDS, outcome=o) for o in ("written", "skipped_older")}
    env.publish(updates)
    wait_for(lambda: env.settled() - settled_before >= 1000, 120, "1,000 updates settled")
    calls = env.metric("paybus_crm_api_calls_total", operation="write") - calls_before
    print(f"\nCRM API calls for 1,000 status updates of 300 records: {calls:.0f}")
    stored = env.records_by_ext()
    for agg, k in lengths.items():
        assert stored[agg]["Bus_Seq__c"] == k, agg
        assert stored[agg]["Status__c"] == STATUSES[k - 1], agg
        assert stored[agg]["Psp_Id__c"] == f"pi_{agg}"
    # One batch: one Composite read and one Composite write (measured 2; 3 before Composite:
    # one read, two collection calls). The margin is for Faust's take_events splitting the
    # 1,000 over two batches; the second one reads only what the first did not cache.
    assert calls <= 4
    outcomes = {o: env.metric(RECORDS, outcome=o) - n for o, n in outcomes_before.items()}
    # Every update written or skipped as older; at least one write per record.
    assert outcomes["written"] + outcomes["skipped_older"] == 1000
    assert outcomes["written"] >= 300 and outcomes["skipped_older"] >= 100
    env.reader.poll()
    assert not [d for d in env.reader.dead if d["stage"] == "crm-writer"]


def _settle(env: Env, updates: list[dict[str, Any]]) -> tuple[float, dict[str, float]]:
    """Publish ``updates``, wait until all are settled; the API calls and outcomes it took."""
    names = ("written", "skipped_older", "not_found", "failed_permanent", "retries_exhausted")
    calls_before = env.metric("paybus_crm_api_calls_total", operation="write")
    before = {o: env.metric(RECORDS, outcome=o) for o in names}
    settled_before = env.settled()
    env.publish(updates)
    wait_for(lambda: env.settled() - settled_before >= len(updates), 120, "updates settled")
    calls = env.metric("paybus_crm_api_calls_total", operation="write") - calls_before
    return calls, {o: env.metric(RECORDS, outcome=o) - n for o, n in before.items()}


def test_records_the_writer_knows_cost_only_their_writes(env: Env) -> None:
    """The writer caches the versions it read and wrote: replays of them cost no call at all,
    newer updates only the collection writes (no read)."""
    aggs = [f"warm-{n:03d}" for n in range(200)]
    env.sandbox.admin.seed(
        "Payment__c", [{"External_Id__c": a} for a in aggs], as_user="integration"
    )
    rng = random.Random(11)
    first = [update(a, s) for a in aggs for s in (1, 2)]
    _settle(env, first)
    replays = [dict(rng.choice(first)) for _ in range(1000)]
    calls, outcomes = _settle(env, replays)
    print(f"\nCRM API calls for 1,000 replays of 200 known records: {calls:.0f}")
    assert calls == 0 and outcomes["skipped_older"] == 1000
    newer = [update(a, s) for a in aggs for s in range(3, 8)]
    rng.shuffle(newer)
    calls, outcomes = _settle(env, newer)
    print(f"CRM API calls for 1,000 newer updates of 200 known records: {calls:.0f}")
    assert calls <= 2  # one Composite write per batch (Faust may split the 1,000 in two)
    assert outcomes["written"] >= 200 and outcomes["written"] + outcomes["skipped_older"] == 1000
    stored = env.records_by_ext()
    assert {a: stored[a]["Bus_Seq__c"] for a in aggs} == dict.fromkeys(aggs, 7)


def test_with_the_orgs_rule_updates_by_id_cost_one_call_and_older_ones_are_refused(
    env: Env,
) -> None:
    """Payment__c has the guard rule, found at start: updates that carry the record's Id are
    written unread, and the rule refuses those older than the record (set behind the writer's
    back, as a late worker would have)."""
    assert env.metric("paybus_crm_version_guard", object="Payment__c", mode="upsert") == 1
    assert env.metric("paybus_crm_version_guard", object="Payment__c", mode="rule") == 0
    assert env.metric("paybus_crm_version_guard", object="Mandate__c", mode="rule") == 1
    assert env.metric("paybus_crm_version_guard", object="Refund__c", mode="read") == 1
    aggs = [f"byid-{n:03d}" for n in range(200)]
    ids = env.sandbox.admin.seed(
        "Payment__c", [{"External_Id__c": a} for a in aggs], as_user="staff"
    )
    staff = env.sandbox.client(user="staff")
    for rid in ids[:50]:
        staff.Payment__c.update(rid, {"Bus_Seq__c": 9})
    updates = [update(a, 4, crm_record_id=rid) for a, rid in zip(aggs, ids, strict=True)]
    calls, outcomes = _settle(env, updates)
    print(f"\nCRM API calls for 200 updates by Id, org-side guard: {calls:.0f}")
    assert calls <= 2  # one Composite write per batch, no read (Faust may split the 200)
    assert outcomes["written"] == 150 and outcomes["skipped_older"] == 50
    stored = env.records_by_ext()
    assert [stored[a]["Bus_Seq__c"] for a in aggs] == [9] * 50 + [4] * 150


def test_with_both_rules_updates_by_external_id_are_upserted_and_create_nothing(
    env: Env,
) -> None:
    """Payment__c has the no-create rule too: updates naming their record by external id are
    upserted unread (one call a batch, where the read guard pays a read and a write), and those
    for payments the CRM does not have end ``not_found`` without a record being created."""
    aggs = [f"ups-{n:03d}" for n in range(200)]
    env.sandbox.admin.seed("Payment__c", [{"External_Id__c": a} for a in aggs], as_user="staff")
    shop = [f"shop-{n:02d}" for n in range(50)]
    count_before = len(env.sandbox.admin.records("Payment__c"))
    calls, outcomes = _settle(env, [update(a, 3) for a in aggs + shop])
    print(f"\nCRM API calls for 250 updates by external id, both rules: {calls:.0f}")
    assert calls <= 2  # one Composite upsert per batch, no read (Faust may split the 250)
    assert outcomes["written"] == 200 and outcomes["not_found"] == 50
    assert outcomes["failed_permanent"] == 0
    assert len(env.sandbox.admin.records("Payment__c")) == count_before
    stored = env.records_by_ext()
    assert {stored[a]["Bus_Seq__c"] for a in aggs} == {3}
    assert not set(shop) & set(stored)


def test_a_known_record_deleted_in_the_crm_ends_not_found(env: Env) -> None:
    (rid,) = env.sandbox.admin.seed(
        "Payment__c", [{"External_Id__c": "deleted-1"}], as_user="integration"
    )
    _, outcomes = _settle(env, [update("deleted-1", 1)])
    assert outcomes["written"] == 1  # now cached
    env.sandbox.client(user="staff").Payment__c.delete(rid)
    _, outcomes = _settle(env, [update("deleted-1", 2)])
    assert outcomes["not_found"] == 1 and outcomes["failed_permanent"] == 0
    env.reader.poll()
    assert not [d for d in env.reader.dead if d["aggregate_id"] == "deleted-1"]


def test_a_503_burst_mid_stream_loses_nothing(env: Env) -> None:
    aggs = [f"burst-{n:02d}" for n in range(40)]
    env.sandbox.admin.seed(
        "Payment__c", [{"External_Id__c": a} for a in aggs], as_user="integration"
    )
    before = env.settled()
    env.publish([update(a, s) for a in aggs for s in (1, 2)])
    wait_for(lambda: env.settled() - before >= 80, 60, "first half settled")
    retries_before = env.metric("paybus_crm_write_retries_total")
    # The next three collection writes fail with 503, then Salesforce is back.
    env.sandbox.admin.fail_next(count=3, status=503, path="composite/sobjects", method="PATCH")
    env.publish([update(a, s) for a in aggs for s in (3, 4)])
    wait_for(lambda: env.settled() - before >= 160, 90, "second half settled")
    stored = env.records_by_ext()
    assert {a: stored[a]["Bus_Seq__c"] for a in aggs} == dict.fromkeys(aggs, 4)
    assert {stored[a]["Status__c"] for a in aggs} == {"confirmed"}
    assert env.metric("paybus_crm_write_retries_total") - retries_before >= 3 * 40
    env.reader.poll()
    assert not [d for d in env.reader.dead if d["stage"] == "crm-writer"]


def test_an_outage_longer_than_the_write_attempts_is_waited_out(env: Env) -> None:
    # Eight failed writes in a row where five attempts are allowed: the writer waits the
    # outage out (retrying every second at most here) and the updates land; none is
    # dead-lettered for an operator to replay, and the unavailable gauge shows the wait.
    aggs = [f"outage-{n:02d}" for n in range(20)]
    env.sandbox.admin.seed(
        "Payment__c", [{"External_Id__c": a} for a in aggs], as_user="integration"
    )
    before = env.settled()
    env.sandbox.admin.fail_next(count=8, status=503, path="composite/sobjects", method="PATCH")
    env.publish([update(a, 2) for a in aggs])
    wait_for(lambda: env.metric("paybus_crm_unavailable") == 1, 30, "the writer to wait")
    wait_for(lambda: env.settled() - before >= 20, 60, "the updates to land after the outage")
    assert env.metric("paybus_crm_unavailable") == 0
    stored = env.records_by_ext()
    assert {a: stored[a]["Bus_Seq__c"] for a in aggs} == dict.fromkeys(aggs, 2)
    env.reader.poll()
    assert not [d for d in env.reader.dead if str(d["aggregate_id"]).startswith("outage-")]


def test_a_refused_record_goes_to_the_dlq_and_is_e_mailed(env: Env) -> None:
    ok, bad = env.sandbox.admin.seed(
        "Payment__c",
        [{"External_Id__c": "rule-ok"}, {"External_Id__c": "rule-bad"}],
        as_user="integration",
    )
    env.sandbox.admin.add_rule(obj="Payment__c", record_id=bad, message="Payment period closed")
    reason = f"card {PAN} declined"
    env.publish([update("rule-ok", 1, reason=reason), update("rule-bad", 2, reason=reason)])

    def dead_letter() -> list[dict[str, Any]]:
        env.reader.poll()
        return [d for d in env.reader.dead if d["aggregate_id"] == "rule-bad"]

    wait_for(lambda: bool(dead_letter()), 60, "the refused update's dead letter")
    letter = dead_letter()[0]
    assert letter["stage"] == "crm-writer"
    assert "FIELD_CUSTOM_VALIDATION_EXCEPTION" in letter["reason"]
    assert PAN not in letter["reason"]
    decoded = env.codec.decode(letter["value"], "StatusUpdate")
    assert decoded["event_id"] == "evt-rule-bad-2"  # the original bytes, replayable
    rcpt, message = env.smtp.inbox.get(timeout=30)
    assert rcpt == ["payments-team@example.org"]
    # Payment__c records are upserted by external id here, and a refused upsert's answer
    # carries no record Id: the alert names the record by its external id.
    assert message["Subject"] == "[paybus] Salesforce write-back failed for rule-bad"
    body = _body(message)
    assert "Payment period closed" in body and "rule-bad" in body
    assert PAN not in body and "[redacted]" in body
    record = env.sandbox.admin.record("Payment__c", ok)
    assert record["Bus_Seq__c"] == 1 and PAN not in str(record["Failure_Reason__c"])
    assert env.sandbox.admin.record("Payment__c", bad)["Bus_Seq__c"] in (None, 0)
    assert env.metric("paybus_crm_records_written_total", outcome="failed_permanent") >= 1
    assert env.metric("paybus_crm_alerts_total", result="sent") >= 1


def _body(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload.decode()


def _staff_payments(env: Env, tag: str, n: int) -> list[str]:
    rows = [
        {"External_Id__c": f"{tag}-{i}", "Status__c": "New", "Amount__c": 10 + i,
         "Currency__c": "EUR", "Method__c": "card", "Payment_Method_Ref__c": "pm_card_visa"}
        for i in range(n)
    ]  # fmt: skip
    return env.sandbox.admin.seed("Payment__c", rows, as_user="staff")


def test_the_writers_own_updates_produce_no_crm_change(env: Env) -> None:
    ids = _staff_payments(env, "echo", 5)
    id_set = set(ids)
    wait_for(lambda: len(env.reader.changes_of(id_set)) == 5, 60, "the 5 staff creates")
    before = env.settled()
    env.publish([update(f"echo-{i}", 1, crm_record_id=rid) for i, rid in enumerate(ids)])
    wait_for(lambda: env.settled() - before >= 5, 60, "the write-backs")
    for rid in ids:
        record = env.sandbox.admin.record("Payment__c", rid)
        assert record["Bus_Seq__c"] == 1
        assert record["LastModifiedById"] == env.sandbox.user_id("integration")
    # A staff edit after the write-backs: once it is in, the poller has read past them.
    (marker,) = _staff_payments(env, "echo-marker", 1)
    wait_for(lambda: bool(env.reader.changes_of({marker})), 60, "the marker change")
    per_record = Counter(c["crm_record_id"] for c in env.reader.changes_of(id_set))
    assert per_record == dict.fromkeys(ids, 1)


def test_poller_restart_neither_skips_nor_repeats(env: Env) -> None:
    first = _staff_payments(env, "restart-a", 20)
    wait_for(lambda: len(env.reader.changes_of(set(first))) == 20, 60, "first 20 changes")
    store = KafkaWatermarkStore(
        env.bootstrap, f"{env.tm.prefix}.crm.watermarks", f"{env.tm.prefix}-app/salesforce"
    )
    rows = [env.sandbox.admin.record("Payment__c", rid) for rid in first]
    last = max((parse_datetime(r["SystemModstamp"]), r["Id"]) for r in rows)

    def committed_past_first() -> bool:
        mark: Watermark | None = store.load()
        cursor = mark.cursors.get("Payment__c") if mark else None
        return cursor is not None and (cursor.modstamp, cursor.record_id) >= last

    wait_for(committed_past_first, 30, "the watermark to cover the first 20")
    store.close()
    env.worker.kill()  # a crash: no goodbye
    second = _staff_payments(env, "restart-b", 20)  # changed while no poller runs
    env.worker.start()
    env.worker.wait_ready()
    everything = set(first) | set(second)
    wait_for(lambda: len(env.reader.changes_of(everything)) >= 40, 90, "all 40 changes")
    (marker,) = _staff_payments(env, "restart-marker", 1)
    wait_for(lambda: bool(env.reader.changes_of({marker})), 60, "the marker change")
    changes = env.reader.changes_of(everything)
    per_change = Counter(c["change_id"] for c in changes)
    assert len(per_change) == 40 and set(per_change.values()) == {1}
    assert {c["crm_record_id"] for c in changes} == everything
    assert {c["intent"] for c in changes} == {"create_payment"}
