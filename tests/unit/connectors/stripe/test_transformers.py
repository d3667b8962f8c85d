"""Pure Stripe -> canonical mapping, fed documented Stripe shapes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import stripe

from connectors.base import FOREIGN_ATTRIBUTE
from connectors.errors import AuthenticationError, NotFoundError, PermanentError, TransientError
from connectors.stripe import results
from connectors.stripe import transformers as tf
from connectors.stripe.client import CardDeclined, map_error
from streams.lifecycles import lifecycle_for
from streams.records import PaymentCommand
from tests.support import stripe_events as se

AT = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _command(**fields: object) -> PaymentCommand:
    values: dict[str, object] = {
        "command_id": "cmd-1",
        "aggregate_id": "pay-1",
        "aggregate_type": "payment",
        "operation": "create_payment",
        "psp": "stripe",
        "issued_at": AT,
        "amount_minor": 1500,
        "currency": "EUR",
        "method": "card",
        "customer_ref": "cus_1",
        "payment_method_ref": "pm_1",
    }
    values.update(fields)
    return PaymentCommand(**values)


@pytest.mark.parametrize(
    ("pi_status", "canonical"),
    [
        ("requires_payment_method", "created"),
        ("requires_confirmation", "created"),
        ("requires_action", "pending_customer_approval"),
        ("requires_capture", "pending_submission"),
        ("processing", "submitted"),
        ("succeeded", "confirmed"),
        ("canceled", "cancelled"),
    ],
)
def test_payment_intent_status_table(pi_status: str, canonical: str) -> None:
    assert tf.payment_status(se.payment_intent("pi_1", status=pi_status)) == canonical
    assert canonical in lifecycle_for("payment").statuses


def test_failed_attempt_and_charge_outcomes() -> None:
    err = {"code": "card_declined"}
    pi = se.payment_intent("pi_1", status="requires_payment_method", last_payment_error=err)
    assert tf.payment_status(pi) == "failed"
    for refunded, disputed, want in [
        (0, False, "confirmed"),
        (500, False, "partially_refunded"),
        (1500, False, "refunded"),
        (0, True, "charged_back"),
    ]:
        ch = se.charge("ch_1", payment_intent="pi_1", amount_refunded=refunded, disputed=disputed)
        assert (
            tf.payment_status(se.payment_intent("pi_1", status="succeeded", latest_charge=ch))
            == want
        )
    with pytest.raises(PermanentError):
        tf.payment_status({"status": "mystery"})


@pytest.mark.parametrize(
    ("status", "want"),
    [
        ("pending", "pending"),
        ("requires_action", "pending"),
        ("succeeded", "refunded"),
        ("failed", "failed"),
        ("canceled", "failed"),
    ],
)
def test_refund_status_table(status: str, want: str) -> None:
    assert tf.refund_status({"status": status}) == want
    assert want in lifecycle_for("refund").statuses


def test_payment_intent_params_for_card_and_sepa() -> None:
    card = tf.payment_intent_params(_command(metadata={"order": "o-1"}, description="Invoice 7"))
    assert card == {
        "amount": 1500,
        "currency": "eur",
        "payment_method": "pm_1",
        "payment_method_types": ["card"],
        "confirm": True,
        "off_session": True,
        "customer": "cus_1",
        "description": "Invoice 7",
        "metadata": {
            "order": "o-1",
            "paybus_aggregate_id": "pay-1",
            "paybus_aggregate_type": "payment",
            "paybus_method": "card",
        },
    }
    sepa = tf.payment_intent_params(_command(method="direct_debit", mandate_ref="mandate_1"))
    assert sepa["payment_method_types"] == ["sepa_debit"] and sepa["mandate"] == "mandate_1"
    with pytest.raises(PermanentError, match="payment_method_ref"):
        tf.payment_intent_params(_command(payment_method_ref=None))
    with pytest.raises(PermanentError):
        tf.payment_intent_params(_command(method="cash"))


def test_refund_params_full_and_partial() -> None:
    cmd = _command(
        aggregate_id="ref-1",
        aggregate_type="refund",
        operation="refund",
        psp_object_id="pi_1",
        payment_id="pay-1",
        amount_minor=None,
    )
    full = tf.refund_params(cmd)
    assert "amount" not in full and full["payment_intent"] == "pi_1"
    assert full["metadata"]["paybus_refund_id"] == "ref-1"
    assert full["metadata"]["paybus_payment_id"] == "pay-1"
    cmd.amount_minor = 400
    assert tf.refund_params(cmd)["amount"] == 400


def test_command_events_ids_derive_from_command_and_sepa_reports_mandatory_stages() -> None:
    pi = se.payment_intent("pi_1", status="processing", method="direct_debit")
    events = results.command_events(_command(method="direct_debit"), pi, fallback_at=AT)
    assert [e.status for e in events] == ["pending_submission", "submitted"]
    assert [e.event_id for e in events] == ["cmd-1:pending_submission", "cmd-1:submitted"]
    assert {e.aggregate_id for e in events} == {"pay-1"}
    card = results.command_events(
        _command(), se.payment_intent("pi_1", status="succeeded"), fallback_at=AT
    )
    assert [(e.status, e.method) for e in card] == [("confirmed", "card")]


def test_decline_without_payment_intent_still_fails_the_payment() -> None:
    [event] = results.decline_events(_command(), None, reason="insufficient_funds", fallback_at=AT)
    assert (event.status, event.reason, event.occurred_at) == ("failed", "insufficient_funds", AT)
    assert event.event_id == "cmd-1:failed"


@pytest.mark.parametrize(
    ("kind", "pi_status", "want"),
    [
        ("payment_intent.created", "requires_payment_method", "created"),
        ("payment_intent.requires_action", "requires_action", "pending_customer_approval"),
        ("payment_intent.processing", "processing", "submitted"),
        ("payment_intent.succeeded", "succeeded", "confirmed"),
        ("payment_intent.canceled", "canceled", "cancelled"),
        ("payment_intent.payment_failed", "requires_payment_method", "failed"),
    ],
)
def test_payment_intent_events(kind: str, pi_status: str, want: str) -> None:
    evt = se.event(
        kind,
        se.payment_intent("pi_1", status=pi_status, aggregate_id="pay-1"),
        event_id="evt_9",
        created=1_700_000_000,
    )
    [event] = tf.events_from_event(evt)
    assert (event.event_id, event.status, event.aggregate_id) == ("evt_9", want, "pay-1")
    assert event.occurred_at == datetime.fromtimestamp(1_700_000_000, UTC)


def test_charge_refund_and_dispute_events() -> None:
    partial = se.charge("ch_1", payment_intent="pi_1", amount_refunded=500)
    [p] = tf.events_from_event(se.event("charge.refunded", partial))
    assert (p.status, p.psp_object_id, p.amount_minor, p.aggregate_id) == (
        "partially_refunded",
        "pi_1",
        500,
        "",
    )
    full = se.charge("ch_1", payment_intent="pi_1", amount_refunded=1500)
    assert tf.events_from_event(se.event("charge.refunded", full))[0].status == "refunded"
    refund = se.refund(
        "re_1",
        payment_intent="pi_1",
        charge_id="ch_1",
        amount=500,
        aggregate_id="ref-1",
        payment_id="pay-1",
        status="failed",
        failure_reason="expired_or_canceled_card",
    )
    [r] = tf.events_from_event(se.event("refund.failed", refund))
    assert (r.aggregate_type, r.aggregate_id, r.payment_id, r.status, r.reason) == (
        "refund",
        "ref-1",
        "pay-1",
        "failed",
        "expired_or_canceled_card",
    )
    dispute = se.dispute("dp_1", charge_id="ch_1", payment_intent="pi_1")
    [d] = tf.events_from_event(se.event("charge.dispute.created", dispute))
    assert (d.status, d.psp_object_id, d.reason) == ("charged_back", "pi_1", "fraudulent")


def test_objects_another_system_made_are_marked_foreign() -> None:
    def marked(kind: str, obj: dict[str, object]) -> list[bool]:
        events = tf.events_from_event(se.event(kind, obj))
        return [FOREIGN_ATTRIBUTE in (e.attributes or {}) for e in events]

    shop = se.payment_intent("pi_shop", status="succeeded")
    assert marked("payment_intent.succeeded", shop) == [True]
    ours = se.payment_intent("pi_ours", status="succeeded", aggregate_id="pay-1")
    assert marked("payment_intent.succeeded", ours) == [False]
    refund = se.refund("re_1", payment_intent="pi_shop", charge_id="ch_1", amount=5)
    assert marked("refund.created", refund) == [True]
    charge = se.charge("ch_1", payment_intent="pi_ours", amount_refunded=1500,
                       metadata={"paybus_aggregate_id": "pay-1"})  # fmt: skip
    assert marked("charge.refunded", charge) == [False]
    # a dispute's metadata never says whose it is: no verdict, the link table decides
    dispute = se.dispute("dp_1", charge_id="ch_1", payment_intent="pi_shop")
    assert marked("charge.dispute.created", dispute) == [False]


def test_a_page_payment_waits_for_its_customer_through_declined_attempts() -> None:
    page = _command(operation="request_payment", payment_method_ref=None, description="Dues")
    params = tf.payment_page_params(page)
    assert "confirm" not in params and "payment_method" not in params
    assert params["payment_method_types"] == ["card"] and params["description"] == "Dues"
    assert params["metadata"]["paybus_page"] == "1"
    with pytest.raises(PermanentError, match="takes cards"):
        tf.payment_page_params(page.derive(method="direct_debit"))
    pi = se.payment_intent("pi_page", status="requires_payment_method", aggregate_id="pay-1")
    pi["metadata"]["paybus_page"] = "1"
    assert tf.payment_status(pi) == "pending_customer_approval"
    declined = {**pi, "last_payment_error": {"code": "card_declined"}}
    assert tf.payment_status(declined) == "pending_customer_approval"  # another card may do
    [failed] = tf.events_from_event(se.event("payment_intent.payment_failed", declined))
    assert failed.status == "pending_customer_approval" and failed.reason is None
    ordinary = se.payment_intent("pi_off", status="requires_payment_method", aggregate_id="p")
    assert tf.payment_status({**ordinary, "last_payment_error": {"code": "x"}}) == "failed"
    # a saved-card payment is no page's, whatever metadata its CRM record sent along
    saved = _command(metadata={"paybus_page": "1", "order": "o-1"})
    assert tf.payment_intent_params(saved)["metadata"].get("paybus_page") is None
    assert tf.payment_intent_params(saved)["metadata"]["order"] == "o-1"


def test_a_page_payments_created_webhook_leaves_the_status_to_the_commands_event() -> None:
    """The request_payment command's event (pending_customer_approval) carries the page link
    to the CRM record. A webhook saying the same status, sequenced first, made that event a
    duplicate, and the record never got its link; the webhook can come first (the create's
    answer lost and retried, the command re-delivered after a crash)."""
    pi = se.payment_intent("pi_page", status="requires_payment_method", aggregate_id="pay-1")
    pi["metadata"]["paybus_page"] = "1"
    assert tf.events_from_event(se.event("payment_intent.created", pi)) == []
    ordinary = se.payment_intent("pi_off", status="requires_payment_method", aggregate_id="p")
    [created] = tf.events_from_event(se.event("payment_intent.created", ordinary))
    assert created.status == "created"


def test_ignored_event_types() -> None:
    assert (
        tf.events_from_event(se.event("customer.created", {"id": "cus_1", "object": "customer"}))
        == []
    )


def test_payout_events_use_arrival_date_and_skip_non_charges() -> None:
    arrival = int(datetime(2024, 5, 3, tzinfo=UTC).timestamp())
    payout = se.payout("po_1", amount=2500, arrival_date=arrival)
    txns = [
        se.balance_transaction(
            "txn_1",
            amount=1500,
            source=se.charge(
                "ch_1", payment_intent="pi_1", metadata={"paybus_aggregate_id": "pay-1"}
            ),
        ),
        se.balance_transaction("txn_2", amount=1000, source="ch_2"),
        se.balance_transaction("txn_3", amount=-300, source="re_1", kind="refund"),
    ]
    events = tf.payout_events(se.event("payout.paid", payout, event_id="evt_p"), payout, txns)
    assert [
        (e.psp_object_id, e.aggregate_id, e.status, e.settlement_date, e.amount_minor)
        for e in events
    ] == [
        ("pi_1", "pay-1", "paid_out", "2024-05-03", 1500),
        ("ch_2", "", "paid_out", "2024-05-03", 1000),
    ]
    assert [e.event_id for e in events] == ["evt_p:pi_1", "evt_p:ch_2"]


def _err(
    cls: type[stripe.StripeError],
    status: int,
    headers: dict[str, str] | None = None,
    body: dict[str, object] | None = None,
    code: str | None = None,
) -> stripe.StripeError:
    hdrs = {"request-id": "req_1", **(headers or {})}
    json_body = {"error": body or {"type": "api_error", "message": "m"}}
    if cls is stripe.CardError:
        return stripe.CardError("declined", None, "card_declined", None, status, json_body, hdrs)
    if cls is stripe.InvalidRequestError:
        return stripe.InvalidRequestError("bad", None, code, None, status, json_body, hdrs)
    return cls("m", None, status, json_body, hdrs)  # type: ignore[call-arg]


def test_error_mapping() -> None:
    cases = [
        (_err(stripe.APIError, 503), TransientError, True),
        (_err(stripe.APIError, 409), TransientError, True),
        (_err(stripe.RateLimitError, 429, {"Retry-After": "2"}), TransientError, True),
        (_err(stripe.InvalidRequestError, 400), PermanentError, False),
        (_err(stripe.InvalidRequestError, 404), NotFoundError, False),
        # a refund naming a PaymentIntent the account does not have: 400, not 404
        (_err(stripe.InvalidRequestError, 400, code="resource_missing"), NotFoundError, False),
        (_err(stripe.AuthenticationError, 401), AuthenticationError, False),
        (_err(stripe.APIError, 500, {"Stripe-Should-Retry": "false"}), PermanentError, False),
        (
            _err(stripe.InvalidRequestError, 400, {"Stripe-Should-Retry": "true"}),
            TransientError,
            True,
        ),
    ]
    for exc, cls, retry in cases:
        mapped = map_error(exc)
        assert type(mapped) is cls, (exc, mapped)
        assert (mapped.should_retry, mapped.request_id, mapped.http_status) == (
            retry,
            "req_1",
            exc.http_status,
        )
    assert map_error(cases[2][0]).retry_after_s == 2.0
    declined = map_error(
        _err(
            stripe.CardError,
            402,
            body={
                "type": "card_error",
                "decline_code": "insufficient_funds",
                "payment_intent": {"id": "pi_1", "status": "requires_payment_method"},
            },
        )
    )
    assert isinstance(declined, CardDeclined) and not declined.should_retry
    assert declined.decline_code == "insufficient_funds"
    assert declined.payment_intent == {"id": "pi_1", "status": "requires_payment_method"}
