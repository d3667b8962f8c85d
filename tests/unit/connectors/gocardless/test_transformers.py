"""The GoCardless -> canonical mapping, fed documented GoCardless shapes (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from connectors.base import FOREIGN_ATTRIBUTE
from connectors.errors import PermanentError
from connectors.gocardless import transformers as tf
from streams.lifecycles import lifecycle_for
from streams.records import PaymentCommand


def event(rtype: str, action: str, rid: str, **extra: Any) -> dict[str, Any]:
    link = {"payments": "payment", "mandates": "mandate", "refunds": "refund", "payouts": "payout"}
    return {
        "id": "EV123",
        "created_at": "2024-05-01T12:00:00.123Z",
        "resource_type": rtype,
        "action": action,
        "links": {link[rtype]: rid, **extra.pop("links", {})},
        "details": {"origin": "bank", "cause": "insufficient_funds", "reason_code": "ARUDD-0"},
        "metadata": {},
        "resource_metadata": extra.pop("resource_metadata", {}),
        **extra,
    }


def command(operation: str, **fields: Any) -> PaymentCommand:
    values: dict[str, Any] = {
        "command_id": "cmd-1",
        "aggregate_id": "pay-1",
        "aggregate_type": "payment",
        "operation": operation,
        "psp": "gocardless",
        "issued_at": datetime(2024, 5, 1, tzinfo=UTC),
    }
    values.update(fields)
    return PaymentCommand(**values)


@pytest.mark.parametrize(
    ("rtype", "action", "status"),
    [
        ("payments", "created", "pending_submission"),
        ("payments", "customer_approval_granted", "pending_submission"),
        ("payments", "resubmission_requested", "pending_submission"),
        ("payments", "submitted", "submitted"),
        ("payments", "confirmed", "confirmed"),
        ("payments", "paid_out", "paid_out"),
        ("payments", "failed", "failed"),
        ("payments", "late_failure_settled", "failed"),
        ("payments", "customer_approval_denied", "failed"),
        ("payments", "charged_back", "charged_back"),
        ("payments", "chargeback_settled", "charged_back"),
        ("payments", "cancelled", "cancelled"),
        ("mandates", "created", "pending_submission"),
        ("mandates", "submitted", "submitted"),
        ("mandates", "active", "active"),
        ("mandates", "reinstated", "active"),
        ("mandates", "suspended_by_payer", "suspended"),
        ("mandates", "failed", "failed"),
        ("mandates", "blocked", "failed"),
        ("mandates", "cancelled", "cancelled"),
        ("mandates", "expired", "expired"),
        ("mandates", "consumed", "expired"),
        ("refunds", "created", "created"),
        ("refunds", "paid", "refunded"),
        ("refunds", "refund_settled", "refunded"),
        ("refunds", "failed", "failed"),
        ("refunds", "funds_returned", "reversed"),
    ],
)
def test_event_mapping(rtype: str, action: str, status: str) -> None:
    [out] = tf.events_from_event(
        event(rtype, action, "X1", resource_metadata={"paybus_aggregate_id": "agg-1"})
    )
    assert out.status == status
    assert out.aggregate_type == tf.AGGREGATE_TYPE[rtype]
    assert out.event_id == "EV123" and out.psp_object_id == "X1" and out.aggregate_id == "agg-1"
    assert out.occurred_at == datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    assert out.method == ("direct_debit" if rtype == "payments" else None)


def test_every_mapped_status_is_canonical() -> None:
    for (rtype, _action), status in tf.ACTIONS.items():
        assert status in lifecycle_for(tf.AGGREGATE_TYPE[rtype]).statuses
    for aggregate_type, table in tf.STATUSES.items():
        assert set(table.values()) <= lifecycle_for(aggregate_type).statuses


@pytest.mark.parametrize(
    ("rtype", "action"),
    [("payments", "surcharge_fee_debited"), ("mandates", "transferred"), ("payouts", "paid")],
)
def test_actions_that_are_no_lifecycle_move_yield_nothing(rtype: str, action: str) -> None:
    assert tf.events_from_event(event(rtype, action, "X1")) == []


def test_without_metadata_the_aggregate_is_left_for_the_lookup_table() -> None:
    [out] = tf.events_from_event(event("payments", "confirmed", "PM1"))
    assert out.aggregate_id == ""


def test_resources_another_system_made_are_marked_foreign() -> None:
    shop = {"resource_metadata": {"order": "shop-1"}}
    [theirs] = tf.events_from_event(event("payments", "confirmed", "PM1", **shop))
    assert theirs.attributes is not None and theirs.attributes[FOREIGN_ATTRIBUTE] == "true"
    ours = {"resource_metadata": {"paybus_aggregate_id": "pay-1"}}
    [mine] = tf.events_from_event(event("payments", "confirmed", "PM1", **ours))
    assert FOREIGN_ATTRIBUTE not in (mine.attributes or {})
    # a refund whose payment the connector found is the bus's business, whatever its metadata
    [found] = tf.events_from_event(event("refunds", "paid", "RF1"), payment_id="pay-1")
    assert FOREIGN_ATTRIBUTE not in (found.attributes or {})
    paid_out = [event("payments", "paid_out", p, **m) for p, m in (("PM1", shop), ("PM2", ours))]
    payout = tf.payout_events(event("payouts", "paid", "PO1"), {"id": "PO1"}, paid_out)
    assert [FOREIGN_ATTRIBUTE in (e.attributes or {}) for e in payout] == [True, False]


def test_failure_carries_cause_and_details() -> None:
    ours = {"paybus_aggregate_id": "pay-1"}
    [out] = tf.events_from_event(event("payments", "failed", "PM1", resource_metadata=ours))
    assert out.reason == "insufficient_funds"
    assert out.attributes == {
        "gocardless_event": "payments.failed",
        "gocardless_cause": "insufficient_funds",
        "gocardless_origin": "bank",
        "gocardless_reason_code": "ARUDD-0",
        "gocardless_payment": "PM1",
    }
    [ok] = tf.events_from_event(event("payments", "confirmed", "PM1"))
    assert ok.reason is None


def test_refund_event_names_its_payment_from_metadata() -> None:
    gc = event(
        "refunds",
        "paid",
        "RF1",
        links={"payment": "PM1"},
        resource_metadata={"paybus_aggregate_id": "ref-1", "paybus_payment_id": "pay-1"},
    )
    [out] = tf.events_from_event(gc)
    assert (out.aggregate_id, out.payment_id, out.psp_object_id) == ("ref-1", "pay-1", "RF1")
    assert out.attributes and out.attributes["gocardless_payment"] == "PM1"


def test_paid_out_with_its_payout_gives_the_settlement_date() -> None:
    gc = event("payments", "paid_out", "PM1", links={"payout": "PO1"})
    [out] = tf.events_from_event(gc, payout={"id": "PO1", "arrival_date": "2024-05-03"})
    assert out.settlement_date == "2024-05-03"
    [bare] = tf.events_from_event(gc)
    assert bare.settlement_date is None


def test_payout_paid_gives_each_payment_its_settlement_date() -> None:
    payout_event = event("payouts", "paid", "PO1", id="EVPO")
    paid = [
        event("payments", "paid_out", "PM1", resource_metadata={"paybus_aggregate_id": "pay-1"}),
        event("payments", "paid_out", "PM2", resource_metadata={"paybus_aggregate_id": "pay-2"}),
        event("payments", "paid_out", "PM1"),  # listed twice: one event
        event("payouts", "paid", "PO1"),  # the payout's own event is not a payment
    ]
    out = tf.payout_events(payout_event, {"id": "PO1", "arrival_date": "2024-05-03"}, paid)
    assert [(e.event_id, e.aggregate_id, e.psp_object_id) for e in out] == [
        ("EVPO:PM1", "pay-1", "PM1"),
        ("EVPO:PM2", "pay-2", "PM2"),
    ]
    assert {(e.status, e.settlement_date) for e in out} == {("paid_out", "2024-05-03")}


def test_resource_status_mapping_and_unknown_status() -> None:
    assert tf.resource_status("payment", {"status": "customer_approval_denied"}) == "failed"
    assert tf.resource_status("mandate", {"status": "suspended_by_payer"}) == "suspended"
    assert tf.resource_status("refund", {"status": "pending_submission"}) == "pending"
    with pytest.raises(PermanentError):
        tf.resource_status("payment", {"status": "levitating"})


def test_payment_params_carry_metadata_and_minor_units() -> None:
    params, dropped = tf.payment_params(
        command(
            "create_payment",
            amount_minor=1234,
            currency="gbp",
            mandate_ref="MD1",
            charge_date="2024-06-01",
            metadata={"order": "o-1", "zz_extra": "x"},
        )
    )
    assert params == {
        "amount": 1234,
        "currency": "GBP",
        "links": {"mandate": "MD1"},
        "charge_date": "2024-06-01",
        "metadata": {
            "paybus_aggregate_id": "pay-1",
            "paybus_aggregate_type": "payment",
            "order": "o-1",
        },
    }
    assert dropped == ["zz_extra"]  # GoCardless takes three keys


@pytest.mark.parametrize("missing", ["amount_minor", "currency", "mandate_ref"])
def test_payment_params_refuse_incomplete_commands(missing: str) -> None:
    fields: dict[str, Any] = {"amount_minor": 1, "currency": "GBP", "mandate_ref": "MD1"}
    fields[missing] = None
    with pytest.raises(PermanentError) as info:
        tf.payment_params(command("create_payment", **fields))
    assert missing in str(info.value) and info.value.should_retry is False


def test_card_payments_are_refused() -> None:
    with pytest.raises(PermanentError):
        tf.payment_params(
            command(
                "create_payment", amount_minor=1, currency="GBP", mandate_ref="M", method="card"
            )
        )


def test_mandate_params_use_the_bank_account_token() -> None:
    params, _ = tf.mandate_params(
        command("create_mandate", aggregate_type="mandate", payment_method_ref="BA1")
    )
    assert params["links"] == {"customer_bank_account": "BA1"}
    assert params["metadata"]["paybus_aggregate_type"] == "mandate"


def test_refund_params_confirm_the_total() -> None:
    cmd = command(
        "refund", aggregate_type="refund", aggregate_id="ref-1", psp_object_id="PM1", payment_id="p"
    )
    params, _ = tf.refund_params(cmd, amount=500, refunded_before=300)
    assert params["amount"] == 500 and params["total_amount_confirmation"] == 800
    assert params["links"] == {"payment": "PM1"}
    assert params["metadata"] == {
        "paybus_aggregate_id": "ref-1",
        "paybus_aggregate_type": "refund",
        "paybus_payment_id": "p",
    }


def test_metadata_limits() -> None:
    long_key, long_value = "k" * 51, "v" * 501
    meta, dropped = tf.build_metadata({"a": "1"}, {long_key: "x", "b": long_value, "c": "3"})
    assert meta == {"a": "1", "c": "3"}
    assert sorted(dropped) == sorted([long_key, "b"])


def test_command_event_ids_derive_from_the_command() -> None:
    at = datetime(2024, 5, 1, tzinfo=UTC)
    resource = {"id": "PM1", "status": "pending_submission", "amount": 100, "currency": "gbp"}
    out = tf.command_event(command("create_payment"), "payment", resource, occurred_at=at)
    assert (out.event_id, out.status, out.currency) == (
        "cmd-1:pending_submission",
        "pending_submission",
        "GBP",
    )
    assert (out.aggregate_id, out.amount_minor, out.psp_object_id) == ("pay-1", 100, "PM1")
