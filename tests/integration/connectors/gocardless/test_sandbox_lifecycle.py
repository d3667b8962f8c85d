"""The sandbox's clock: payments, mandates, refunds and payouts move through GoCardless's
statuses, and every move is an event a backfill can page through in order."""

from __future__ import annotations

from typing import Any

import gocardless_pro
import pytest
from gocardless_pro import errors

from connectors.gocardless.sandbox import RunningSandbox, SandboxAdminError

from .conftest import make_mandate, make_payment


def actions(events: list[Any]) -> list[tuple[str, str]]:
    return [(e["resource_type"], e["action"]) for e in events]


def test_clock_takes_a_payment_to_paid_out_with_events_in_order(
    client: gocardless_pro.Client, sandbox: RunningSandbox
) -> None:
    start = sandbox.admin("GET", "/_sandbox/clock")["now"]
    mandate = make_mandate(client)
    payment = make_payment(client, mandate.id, metadata={"paybus_id": "pay-1"})

    happened = sandbox.advance(days=4)
    assert actions(happened) == [
        ("mandates", "submitted"), ("payments", "submitted"),
        ("mandates", "active"), ("payments", "confirmed"),
        ("payments", "paid_out"), ("payouts", "paid"),
    ]  # fmt: skip
    assert sandbox.admin("GET", "/_sandbox/clock")["now"] > start
    paid = client.payments.get(payment.id)
    assert paid.status == "paid_out"
    payout = client.payouts.get(paid.links.payout)
    assert (payout.status, payout.amount, payout.currency) == ("paid", 1500, "GBP")
    assert client.mandates.get(mandate.id).status == "active"

    history = list(client.events.all(params={"payment": payment.id}))[::-1]
    assert [e.action for e in history] == ["created", "submitted", "confirmed", "paid_out"]
    stamps = [e.created_at for e in history]
    assert stamps == sorted(stamps) and len(set(stamps)) == 4
    assert all(e.resource_metadata == {"paybus_id": "pay-1"} for e in history)
    assert history[-1].links.payout == payout.id
    assert history[1].details.origin == "gocardless"
    assert history[1].details.cause == "payment_submitted"
    assert sandbox.advance(days=10) == []  # nothing left to do


def test_backfill_pages_events_after_a_time(
    client: gocardless_pro.Client, sandbox: RunningSandbox
) -> None:
    mandate = make_mandate(client)
    make_payment(client, mandate.id)
    sandbox.advance(steps=1)
    cutoff = client.events.list(params={"limit": 1}).records[0].created_at
    for _ in range(5):
        make_payment(client, mandate.id)
    sandbox.advance(steps=3)

    newer = list(client.events.all(params={"created_at[gt]": cutoff, "limit": 4}))
    assert newer and all(e.created_at > cutoff for e in newer)
    chronological = sorted(newer, key=lambda e: (e.created_at, e.id))
    assert chronological == newer[::-1]  # pages are newest first; reversed they are in order
    everything = list(client.events.all())
    assert {e.id for e in everything if e.created_at > cutoff} == {e.id for e in newer}
    only = client.events.list(params={"resource_type": "payouts"}).records
    assert [e.action for e in only] == ["paid"]
    with pytest.raises(errors.InvalidApiUsageError):
        client.events.list(params={"created_at[gt]": "not-a-time"})


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("failed", ["created", "submitted", "failed"]),
        ("late_failure", ["created", "submitted", "confirmed", "failed"]),
        ("charged_back", ["created", "submitted", "confirmed", "paid_out", "charged_back"]),
    ],
)
def test_scripted_outcome_through_metadata(
    client: gocardless_pro.Client, sandbox: RunningSandbox, outcome: str, expected: list[str]
) -> None:
    payment = make_payment(client, make_mandate(client).id, metadata={"sandbox_outcome": outcome})
    sandbox.advance(steps=6)
    history = client.events.list(params={"payment": payment.id}).records[::-1]
    assert [e.action for e in history] == expected
    assert client.payments.get(payment.id).status == expected[-1]
    assert history[-1].details.origin == "bank"


def test_scripted_outcome_through_admin_and_retry(
    client: gocardless_pro.Client, sandbox: RunningSandbox
) -> None:
    payment = make_payment(client, make_mandate(client).id)
    sandbox.set_outcome(payment.id, "failed")
    sandbox.advance(steps=2)
    failed = client.events.list(params={"payment": payment.id}).records[0]
    assert (failed.action, failed.details.cause) == ("failed", "insufficient_funds")
    assert client.payments.retry(payment.id).status == "pending_submission"
    sandbox.advance(steps=3)
    history = [e.action for e in client.events.list(params={"payment": payment.id}).records]
    assert history[::-1] == [
        "created", "submitted", "failed", "resubmission_requested",
        "submitted", "confirmed", "paid_out",
    ]  # fmt: skip
    with pytest.raises(errors.InvalidStateError) as exc:
        client.payments.retry(payment.id)
    assert exc.value.errors[0]["reason"] == "retry_failed"


def test_failed_mandate_fails_its_payments(
    client: gocardless_pro.Client, sandbox: RunningSandbox
) -> None:
    mandate = make_mandate(client, metadata={"sandbox_outcome": "failed"})
    payment = make_payment(client, mandate.id)
    sandbox.advance(steps=2)
    assert client.mandates.get(mandate.id).status == "failed"
    assert client.payments.get(payment.id).status == "failed"
    last = client.events.list(params={"payment": payment.id}).records[0]
    assert last.details.cause == "mandate_failed"


def test_refunds_are_paid_or_fail(client: gocardless_pro.Client, sandbox: RunningSandbox) -> None:
    payment = make_payment(client, make_mandate(client).id)
    with pytest.raises(errors.InvalidStateError) as exc:
        client.refunds.create({"amount": 100, "links": {"payment": payment.id}})
    assert exc.value.errors[0]["reason"] == "refund_payment_invalid_state"
    sandbox.advance(steps=3)

    good = client.refunds.create(
        {"amount": 500, "total_amount_confirmation": 500, "links": {"payment": payment.id}}
    )
    bad = client.refunds.create(
        {"amount": 300, "links": {"payment": payment.id}, "metadata": {"sandbox_outcome": "failed"}}
    )
    assert good.status == "created" and good.links.mandate == payment.links.mandate
    assert client.payments.get(payment.id).amount_refunded == 800
    with pytest.raises(errors.InvalidStateError):
        client.refunds.create({"amount": 1000, "links": {"payment": payment.id}})
    sandbox.advance(steps=1)
    assert client.refunds.get(good.id).status == "pending_submission"
    sandbox.advance(steps=1)
    assert (client.refunds.get(good.id).status, client.refunds.get(bad.id).status) == (
        "paid",
        "failed",
    )
    assert client.payments.get(payment.id).amount_refunded == 500
    refund_events = client.events.list(params={"resource_type": "refunds"}).records[::-1]
    assert [(e.links.refund, e.action) for e in refund_events] == [
        (good.id, "created"), (bad.id, "created"), (good.id, "paid"), (bad.id, "failed"),
    ]  # fmt: skip


def test_admin_rejects_bad_requests(client: gocardless_pro.Client, sandbox: RunningSandbox) -> None:
    with pytest.raises(SandboxAdminError) as exc:
        sandbox.advance(to="2001-01-01T00:00:00Z")
    assert exc.value.status == 422
    assert exc.value.body["error"]["errors"][0]["reason"] == "clock_cannot_go_back"
    payment = make_payment(client, make_mandate(client).id)
    with pytest.raises(SandboxAdminError) as exc:
        sandbox.set_outcome(payment.id, "exploded")
    assert exc.value.status == 422
    with pytest.raises(SandboxAdminError) as exc:
        sandbox.set_outcome("PM0NOPE0000001", "failed")
    assert exc.value.status == 404
