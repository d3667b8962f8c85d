"""Direct debits end to end on the embedded broker and the GoCardless sandbox.

Bank details go to GoCardless through ``POST /bank-details`` (never through Kafka or the CRM),
the token sets up a mandate through a CRM change, a direct debit on that mandate walks the
whole lifecycle through webhooks, a re-delivered command charges once, and the account number
is found nowhere: not on any topic, not in the worker's log, not in the sandbox's database.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from tests.e2e.gocardless_support import (
    API_TOKEN,
    GcBus,
    files_with,
    json_body,
    post,
    raw_topic_bytes,
    sandbox_db_files,
)
from tests.support.workers import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

#: Numbers this module pushes through the flow, then looks for everywhere.
ACCOUNT_NUMBER = "31926819"
SORT_CODE = "601613"
IBAN = "GB29NWBK60161331926819"  # the same account as an IBAN (schwifty-generated)
LOCAL_ACCOUNT = "71846259"
#: The labels of the sequencer's count of payment events that repeat the current status.
PAYMENT_DUPLICATES = ('stage="sequencer"', 'outcome="duplicate"', 'aggregate_type="payment"')


def test_direct_debit_reaches_paid_out_through_every_stage(gc_bus: GcBus) -> None:
    gc_bus.reset_webhooks()
    token, masked = gc_bus.bank_details().register(
        account_holder_name="Ada Lovelace",
        sort_code="20-00-00",
        account_number=LOCAL_ACCOUNT,
        customer={"email": "ada@example.com"},
        reference="signup-flow-1",
    )
    assert token.startswith("BA") and masked == "****" + LOCAL_ACCOUNT[-4:]
    # The reference makes a retried registration return the same account.
    again = gc_bus.bank_details().register(
        account_holder_name="Ada Lovelace",
        sort_code="20-00-00",
        account_number=LOCAL_ACCOUNT,
        customer={"email": "ada@example.com"},
        reference="signup-flow-1",
    )
    assert again.token == token

    mandate_aggregate, mandate_id = gc_bus.create_mandate(token)
    mandate = gc_bus.gc.mandates.get(mandate_id)
    assert mandate.links.customer_bank_account == token
    assert [u["to_status"] for u in gc_bus.updates(mandate_aggregate)] == [
        "pending_submission",
        "submitted",
        "active",
    ]

    change = gc_bus.payment_change(mandate_id, amount=4200)
    payment = change["aggregate_id"]
    gc_bus.publish(change)
    created = gc_bus.wait_status(payment, "pending_submission")
    assert created["psp_object_id"].startswith("PM")
    gc_bus.sandbox.advance(days=4)
    gc_bus.deliver()
    gc_bus.wait_status(payment, "paid_out")

    updates = gc_bus.updates(payment)
    assert [u["to_status"] for u in updates] == [
        "pending_submission",
        "submitted",
        "confirmed",
        "paid_out",
    ]
    assert not any(u["inferred"] for u in updates)
    assert [u["seq"] for u in updates] == sorted(u["seq"] for u in updates)
    assert updates[-1]["settlement_date"], "paid_out should carry the payout's arrival date"
    assert gc_bus.true_status(created["psp_object_id"]) == "paid_out"


def test_bank_details_endpoint_refuses_without_token_and_names_bad_fields(gc_bus: GcBus) -> None:
    url = f"{gc_bus.web_url}/bank-details"
    body = json.dumps(
        {"account_holder_name": "Ada", "sort_code": SORT_CODE, "account_number": ACCOUNT_NUMBER}
    ).encode()
    status, raw = post(url, body, {"Content-Type": "application/json"})
    assert status == 401 and ACCOUNT_NUMBER.encode() not in raw
    status, _ = post(url, body, {"Authorization": "Bearer wrong-token"})
    assert status == 401

    bad_iban = IBAN[:2] + "00" + IBAN[4:]  # wrong check digits, same account inside
    auth = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
    status, raw = post(
        url, json.dumps({"account_holder_name": "Ada", "iban": bad_iban}).encode(), auth
    )
    answer = json_body(raw)
    assert status == 400 and answer["field"] == "iban", answer
    assert ACCOUNT_NUMBER.encode() not in raw

    short = {"account_holder_name": "Ada", "sort_code": SORT_CODE, "account_number": "123"}
    status, raw = post(url, json.dumps(short).encode(), auth)
    assert status == 400 and json_body(raw)["field"] == "account_number"
    status, raw = post(url, b"{not json", auth)
    assert status == 400 and json_body(raw)["field"] == "body"
    assert gc_bus.metric('paybus_bank_details_total{outcome="unauthorized"') >= 2
    assert gc_bus.metric('paybus_bank_details_total{outcome="invalid"') >= 3


def _send_again(gc_bus: GcBus, topic: str, key: str) -> None:
    """Re-send the first record keyed ``key`` on ``topic`` to its partition, bytes unchanged."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=gc_bus.broker.bootstrap, auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )  # fmt: skip
    try:
        found = next(m for m in consumer if m.key == key.encode())
    finally:
        consumer.close()
    producer = KafkaProducer(bootstrap_servers=gc_bus.broker.bootstrap, acks="all")
    try:
        producer.send(topic, key=found.key, value=found.value, partition=found.partition).get(10)
    finally:
        producer.close()


def test_redelivered_payment_command_creates_one_payment(gc_bus: GcBus) -> None:
    gc_bus.reset_webhooks()
    mandate_id = gc_bus.active_mandate()
    calls = 'paybus_connector_calls_total{operation="create_payment",psp="gocardless",result="ok"}'
    before = gc_bus.metric(calls)
    change = gc_bus.payment_change(mandate_id)
    gc_bus.publish(change)
    wait_for(lambda: gc_bus.metric(calls) >= before + 1, 60, "the command to be executed")
    # The command again, byte for byte: what a crash between the PSP call and the offset
    # commit makes the connectors stage read a second time.
    _send_again(gc_bus, gc_bus.tm.commands("gocardless").name, change["aggregate_id"])
    wait_for(lambda: gc_bus.metric(calls) >= before + 2, 60, "both commands to be executed")
    payments = gc_bus.gc.payments.list(params={"mandate": mandate_id}).records
    assert len(payments) == 1, [p.id for p in payments]
    gc_bus.wait_status(change["aggregate_id"], "pending_submission")

    # Both executions answered with GoCardless's own ``created`` event: one id, one status.
    def events() -> list[dict[str, Any]]:
        gc_bus.reader.poll()
        topic = gc_bus.reader.records[gc_bus.tm.payment_events.name]
        return [e for e in topic if e["aggregate_id"] == change["aggregate_id"]]

    wait_for(lambda: len(events()) >= 2, 60, "both executions' events on the events topic")
    assert len({e["event_id"] for e in events()}) == 1, events()
    updates = gc_bus.updates(change["aggregate_id"])
    assert [u["to_status"] for u in updates] == ["pending_submission"]
    assert updates[0]["psp_object_id"] == payments[0].id


def test_no_account_number_anywhere(gc_bus: GcBus) -> None:
    gc_bus.reset_webhooks()
    client = gc_bus.bank_details()
    by_iban = client.register(account_holder_name="Grace Hopper", iban=IBAN)
    by_number = client.register(
        account_holder_name="Grace Hopper", sort_code=SORT_CODE, account_number=ACCOUNT_NUMBER
    )
    assert by_iban.masked == "****" + IBAN[-4:] and by_number.masked == "****6819"
    payments: list[str] = []
    for token in (by_iban.token, by_number.token):
        _, mandate_id = gc_bus.create_mandate(token)
        change = gc_bus.payment_change(mandate_id, amount=1999)
        gc_bus.publish(change)
        gc_bus.wait_status(change["aggregate_id"], "pending_submission")
        payments.append(change["aggregate_id"])
    gc_bus.sandbox.advance(days=4)
    gc_bus.deliver()
    for payment in payments:
        gc_bus.wait_status(payment, "paid_out")

    spaced_iban = " ".join(IBAN[i : i + 4] for i in range(0, len(IBAN), 4))
    needles = [ACCOUNT_NUMBER, IBAN, spaced_iban, SORT_CODE + ACCOUNT_NUMBER]
    topics = raw_topic_bytes(gc_bus.broker.bootstrap, gc_bus.prefix)
    assert gc_bus.tm.payment_events.name in topics and gc_bus.tm.psp_webhooks.name in topics
    assert any(t.endswith("changelog") for t in topics), sorted(topics)
    leaks: dict[str, Any] = {}
    for needle in needles:
        raw = needle.encode()
        on_topics = [name for name, data in topics.items() if raw in data]
        in_files = files_with(raw, [gc_bus.worker.log_path, *sandbox_db_files(gc_bus.sandbox_db)])
        if on_topics or in_files:
            leaks[needle] = on_topics + in_files
    assert not leaks, f"bank details leaked: {leaks}"
    # The scan can see: the tokens are there, and the log is not empty.
    assert by_number.token.encode() in topics[gc_bus.tm.commands("gocardless").name]
    assert gc_bus.worker.log_path.stat().st_size > 0


def test_a_cancel_intents_reason_is_the_cancelled_records_reason(gc_bus: GcBus) -> None:
    """Staff cancel a direct debit with a reason: the CRM's status update says it, not
    GoCardless's cause for an API cancel ("The payment was cancelled."), which the answer
    carried and which kept the reason off; GoCardless's webhook that follows changes nothing."""
    gc_bus.reset_webhooks()
    change = gc_bus.payment_change(gc_bus.active_mandate())
    payment = change["aggregate_id"]
    gc_bus.publish(change)
    gc_bus.wait_status(payment, "pending_submission")
    gc_bus.publish({**change, "change_id": f"chg-cancel-{payment}", "intent": "cancel",
                    "reason": "customer asked", "occurred_at": datetime.now(UTC)})  # fmt: skip
    cancelled = gc_bus.wait_status(payment, "cancelled")
    assert cancelled["reason"] == "customer asked"

    def duplicates() -> float:
        text = gc_bus.worker.metrics_text() or ""
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("paybus_events_total{")
            and all(label in line for label in PAYMENT_DUPLICATES)
        )

    before = duplicates()
    gc_bus.deliver()  # GoCardless's webhooks: the payment's created, then this cancelled
    wait_for(lambda: duplicates() > before, 30, "the webhook judged a duplicate")
    updates = gc_bus.updates(payment)
    assert [(u["to_status"], u["reason"]) for u in updates][-1] == ("cancelled", "customer asked")
    assert [u["to_status"] for u in updates].count("cancelled") == 1
    assert gc_bus.true_status(cancelled["psp_object_id"]) == "cancelled"
