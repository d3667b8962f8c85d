"""GoCardless webhooks as they really arrive: batched and shuffled, forged, or lost.

A shuffled batch of 50 events ends every payment at its true status; a forged signature is
refused and publishes nothing; and when a fifth of the webhooks are dropped, ``paybus
backfill gocardless`` (the real CLI, as a subprocess) reads GoCardless's event log and brings
every payment to the status the sandbox itself reports.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid

import pytest

from connectors.gocardless import transformers as tf
from tests.e2e.gocardless_support import GcBus, post, raw_topic_bytes
from tests.support.workers import wait_for

pytestmark = [pytest.mark.broker, pytest.mark.e2e]

#: Scripted outcomes -> the canonical status each payment must end at.
FINAL = {"success": "paid_out", "failed": "failed", "charged_back": "charged_back"}


def _payments(gc_bus: GcBus, mandate_id: str, outcomes: list[str]) -> dict[str, str]:
    """Create one payment per outcome through the bus; aggregate id -> GoCardless id."""
    created: dict[str, str] = {}
    changes = [gc_bus.payment_change(mandate_id, outcome=o) for o in outcomes]
    for change in changes:
        gc_bus.publish(change)
    for change in changes:
        update = gc_bus.wait_status(change["aggregate_id"], "pending_submission")
        created[change["aggregate_id"]] = str(update["psp_object_id"])
    return created


def _assert_true_statuses(gc_bus: GcBus, payments: dict[str, str]) -> None:
    def all_true() -> bool:
        return all(gc_bus.status(a) == gc_bus.true_status(p) for a, p in payments.items())

    wait_for(all_true, 60, "every payment at the sandbox's own status")


def test_shuffled_batch_of_50_ends_at_the_true_statuses(gc_bus: GcBus) -> None:
    mandate_id = gc_bus.active_mandate()
    gc_bus.reset_webhooks(shuffle=True, batch_size=50, seed=7)
    outcomes = ["success"] * 9 + ["failed"] * 2 + ["charged_back"] * 2
    payments = _payments(gc_bus, mandate_id, outcomes)
    gc_bus.sandbox.advance(days=3)  # every payment to paid_out or failed; the payout is paid
    gc_bus.sandbox.advance(days=1)  # then the chargebacks
    report = gc_bus.deliver()

    first = report["batches"][0]["event_ids"]
    assert len(first) == 50 and sum(len(b["event_ids"]) for b in report["batches"]) == 53
    assert first != sorted(first), "the batch was not shuffled"
    expected = {agg: FINAL[o] for agg, o in zip(payments, outcomes, strict=True)}
    for aggregate, status in expected.items():
        gc_bus.wait_status(aggregate, status)
    for aggregate, psp_id in payments.items():
        assert gc_bus.true_status(psp_id) == expected[aggregate]
        moves = [u["to_status"] for u in gc_bus.updates(aggregate)]
        assert len(moves) == len(set(moves)), f"a status applied twice: {moves}"
        if expected[aggregate] != "failed":
            # A direct debit cannot skip a mandatory stage: whatever order the batch had,
            # the main line is applied in stage order (a failure may legally skip ahead).
            line = ["pending_submission", "submitted", "confirmed", "paid_out"]
            assert moves[:4] == line, moves


def test_forged_signature_is_refused_and_nothing_published(gc_bus: GcBus) -> None:
    gc_bus.reset_webhooks()
    forged_id = f"EVFORGED{uuid.uuid4().hex[:8].upper()}"
    body = json.dumps(
        {
            "events": [
                {
                    "id": forged_id,
                    "created_at": "2030-01-01T00:00:00.000Z",
                    "resource_type": "payments",
                    "action": "paid_out",
                    "links": {"payment": "PMFORGED0001"},
                    "details": {"origin": "gocardless", "cause": "payment_paid_out"},
                    "metadata": {},
                }
            ],
            "meta": {"webhook_id": "WBFORGED"},
        }
    ).encode()
    wrong = hmac.new(b"not-the-secret", body, hashlib.sha256).hexdigest()
    bad = gc_bus.metric('paybus_webhooks_total{outcome="bad_signature",psp="gocardless"}')
    for signature in (wrong, "", "zz" * 32):
        status, _ = post(
            gc_bus.webhook_url,
            body,
            {"Content-Type": "application/json", "Webhook-Signature": signature},
        )
        assert status == 400, signature
    after = gc_bus.metric('paybus_webhooks_total{outcome="bad_signature",psp="gocardless"}')
    assert after == bad + 3
    raw = raw_topic_bytes(gc_bus.broker.bootstrap, gc_bus.tm.psp_webhooks.name)
    assert forged_id.encode() not in raw[gc_bus.tm.psp_webhooks.name]
    assert b"PMFORGED0001" not in b"".join(raw.values())
    # The same body correctly signed is accepted: the refusal was the signature's doing.
    good = hmac.new(b"gc_e2e_webhook_secret", body, hashlib.sha256).hexdigest()
    status, _ = post(gc_bus.webhook_url, body, {"Webhook-Signature": good})
    assert status == 200


def test_backfill_cli_recovers_dropped_webhooks(gc_bus: GcBus) -> None:
    mandate_id = gc_bus.active_mandate()
    since = gc_bus.sandbox_now()
    gc_bus.reset_webhooks(drop_rate=0.2, seed=11, shuffle=True)
    outcomes = ["success"] * 6 + ["failed"] * 2 + ["charged_back"] * 2
    payments = _payments(gc_bus, mandate_id, outcomes)
    gc_bus.sandbox.advance(days=3)
    gc_bus.sandbox.advance(days=1)
    report = gc_bus.deliver()
    dropped = set(report["dropped"])
    assert dropped, "the seed should drop some webhooks"
    delivered = {e for b in report["batches"] for e in b["event_ids"]}
    # Lifecycle events dropped after creation exist nowhere on the bus before the backfill
    # (a payment's ``created`` event also comes back with the command's answer).
    events = {
        e["id"]: e for e in gc_bus.gc.events.list(params={"created_at[gt]": since, "limit": 500})
        .records for e in [dict(e.attributes)]
    }  # fmt: skip
    missing = {
        i for i in dropped
        if events[i]["action"] != "created" and events[i]["resource_type"] == "payments"
    }  # fmt: skip
    assert missing, f"no post-creation payment event was dropped: {dropped}"
    wait_for(
        lambda: (
            delivered - {i for i in delivered if events[i]["resource_type"] == "payouts"}
            <= gc_bus.event_ids_on_bus()
        ),
        60,
        "every delivered payment event on paybus.payments.events",
    )
    assert not missing & gc_bus.event_ids_on_bus()
    behind = [a for a, p in payments.items() if gc_bus.status(a) != gc_bus.true_status(p)]
    assert behind, "dropping webhooks left no payment behind: the test proves nothing"

    result = gc_bus.run_cli("backfill", "gocardless", "--since", since)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "published" in result.stdout and "unresolved 0" in result.stdout, result.stdout
    _assert_true_statuses(gc_bus, payments)
    assert missing <= gc_bus.event_ids_on_bus()
    for aggregate, outcome in zip(payments, outcomes, strict=True):
        assert gc_bus.status(aggregate) == FINAL[outcome]
        assert not any(u["inferred"] for u in gc_bus.updates(aggregate))
    # Every status the sandbox reports maps onto a canonical one the bus shows.
    assert {gc_bus.true_status(p) for p in payments.values()} <= set(tf.PAYMENT_STATUS.values())


def test_refund_made_at_gocardless_becomes_its_own_aggregate_not_a_dead_letter(
    gc_bus: GcBus,
) -> None:
    """A refund staff make in GoCardless's dashboard carries no paybus metadata: its events
    become the refund aggregate ``gocardless-<RF id>`` under the payment, walk the refund
    lifecycle, name no CRM record, and none of them is dead-lettered."""
    gc_bus.reset_webhooks()
    change = gc_bus.payment_change(gc_bus.active_mandate(), amount=3000)
    payment = change["aggregate_id"]
    gc_bus.publish(change)
    pm = str(gc_bus.wait_status(payment, "pending_submission")["psp_object_id"])
    gc_bus.sandbox.advance(days=4)
    gc_bus.deliver()
    gc_bus.wait_status(payment, "paid_out")
    rejected = (
        'paybus_events_total{aggregate_type="refund",outcome="rejected",'
        'source="gocardless",stage="normaliser"}'
    )
    rejected_before = gc_bus.metric(rejected)

    refund = gc_bus.gc.refunds.create(
        params={"amount": 1200, "total_amount_confirmation": 1200, "links": {"payment": pm}}
    )
    gc_bus.deliver()
    aggregate = f"gocardless-{refund.id}"
    gc_bus.wait_status(aggregate, "created")
    gc_bus.sandbox.advance(days=3)
    gc_bus.deliver()
    gc_bus.wait_status(aggregate, "refunded")

    updates = gc_bus.updates(aggregate)
    assert [u["to_status"] for u in updates] == ["created", "refunded"]
    assert {u["payment_id"] for u in updates} == {payment}
    assert {u["psp_object_id"] for u in updates} == {refund.id}
    assert not any(u["crm_record_id"] for u in updates), "a payment's record is not a refund's"
    assert gc_bus.metric(rejected) == rejected_before
    assert gc_bus.status(payment) == "paid_out"
