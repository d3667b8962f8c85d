"""Webhooks as localstripe really sends them: received raw, verified, normalised.

A tiny aiohttp receiver registered with localstripe records each request's raw body and
headers; the tests wait on it (no sleeps) and feed what arrived to the connector.
"""

from __future__ import annotations

import json
import time

import pytest
import stripe

from connectors.errors import WebhookVerificationError
from connectors.stripe.webhooks import MAX_WEBHOOK_BYTES, sign
from streams.settings import Settings
from tests.integration.connectors.stripe.conftest import (
    SECRET,
    StripeHarness,
    make_connector,
)
from tests.support.localstripe import WebhookReceiver
from tests.support.stripe_idempotency import IdempotencyProxy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:aiohttp")


def _of_type(kind: str, pi_id: str | None = None):  # type: ignore[no-untyped-def]
    def match(body: bytes, _headers: dict[str, str]) -> bool:
        event = json.loads(body)
        obj = event["data"]["object"]
        return bool(event["type"] == kind and (pi_id is None or obj.get("id") == pi_id))

    return match


def test_succeeded_webhook_is_verified_and_normalised(
    harness: StripeHarness, receiver: WebhookReceiver, settings: Settings
) -> None:
    connector = make_connector(settings)
    command = harness.payment_command()
    result = connector.execute(command)
    body, headers = receiver.wait_for(_of_type("payment_intent.succeeded", result.psp_object_id))
    [unit] = connector.verify_webhook(body, headers)
    assert unit.webhook_id.startswith("evt_")
    assert unit.psp_object_id == result.psp_object_id
    [event] = connector.normalise(unit.body)
    assert event.event_id == unit.webhook_id
    assert event.status == "confirmed"
    assert event.aggregate_id == command.aggregate_id  # from the metadata set at create time
    assert event.psp_object_id == result.psp_object_id
    assert event.method == "card" and event.amount_minor == 1500 and event.currency == "EUR"
    assert int(event.occurred_at.timestamp()) == json.loads(body)["created"]
    # a redelivery of the same request is the same canonical event
    assert [e.event_id for e in connector.normalise(body)] == [event.event_id]


def test_decline_webhook_is_failed_with_reason(
    harness: StripeHarness, receiver: WebhookReceiver, settings: Settings
) -> None:
    connector = make_connector(settings)
    command = harness.payment_command("declines")
    result = connector.execute(command)
    assert result.psp_object_id  # the proxy reshapes the 402 as Stripe does: PI attached
    body, headers = receiver.wait_for(
        _of_type("payment_intent.payment_failed", result.psp_object_id)
    )
    [unit] = connector.verify_webhook(body, headers)
    [event] = connector.normalise(unit.body)
    assert (event.status, event.aggregate_id) == ("failed", command.aggregate_id)
    assert event.reason


def test_sepa_debit_goes_submitted_then_confirmed(
    harness: StripeHarness, receiver: WebhookReceiver, settings: Settings
) -> None:
    connector = make_connector(settings)
    command = harness.payment_command(method="direct_debit")
    result = connector.execute(command)
    # Stripe answers "processing" ([pending_submission, submitted]); localstripe settles SEPA
    # synchronously ("succeeded"): either way the mandatory stages come first, in order.
    statuses = [e.status for e in result.events]
    assert statuses in (
        ["pending_submission", "submitted"],
        ["pending_submission", "submitted", "confirmed"],
    )
    assert {e.method for e in result.events} == {"direct_debit"}
    body, headers = receiver.wait_for(_of_type("payment_intent.succeeded", result.psp_object_id))
    [unit] = connector.verify_webhook(body, headers)
    [event] = connector.normalise(unit.body)
    assert (event.status, event.method) == ("confirmed", "direct_debit")
    assert result.psp_object_id
    assert connector.lookup_status("payment", result.psp_object_id).status == "confirmed"


def test_payout_paid_maps_settled_payments_to_paid_out(
    harness: StripeHarness,
    receiver: WebhookReceiver,
    settings: Settings,
    proxy: IdempotencyProxy,
    stripe_client: stripe.StripeClient,
) -> None:
    connector = make_connector(settings)
    command = harness.payment_command()
    result = connector.execute(command)
    assert result.psp_object_id
    pi = stripe_client.v1.payment_intents.retrieve(result.psp_object_id)
    charge = stripe_client.v1.charges.retrieve(str(pi.latest_charge.id))  # type: ignore[union-attr]
    payout = stripe_client.v1.payouts.create(
        params={"amount": 1500, "currency": "eur", "status": "paid"}  # type: ignore[typeddict-unknown-key]
    )
    proxy.settle_payout(payout.id, [str(charge.balance_transaction)])
    body, headers = receiver.wait_for(_of_type("payout.paid"))
    [unit] = connector.verify_webhook(body, headers)
    assert unit.psp_object_id == payout.id
    [event] = connector.normalise(unit.body)
    assert event.status == "paid_out"
    assert event.psp_object_id == result.psp_object_id
    arrival = time.strftime("%Y-%m-%d", time.gmtime(payout.arrival_date))
    assert event.settlement_date == arrival


@pytest.fixture
def real_webhook(
    harness: StripeHarness, receiver: WebhookReceiver, settings: Settings
) -> tuple[bytes, dict[str, str]]:
    result = make_connector(settings).execute(harness.payment_command())
    return receiver.wait_for(_of_type("payment_intent.succeeded", result.psp_object_id))


def test_forged_signature_is_refused(
    real_webhook: tuple[bytes, dict[str, str]], settings: Settings
) -> None:
    body, headers = real_webhook
    forged = {**headers, "Stripe-Signature": sign(body, "whsec_attacker")}
    with pytest.raises(WebhookVerificationError):
        make_connector(settings).verify_webhook(body, forged)


def test_stale_timestamp_is_refused(
    real_webhook: tuple[bytes, dict[str, str]], settings: Settings
) -> None:
    body, headers = real_webhook
    connector = make_connector(settings)
    assert connector.verify_webhook(body, headers)  # fresh: accepted
    later = time.time() + settings.stripe.webhook_tolerance_s + 5
    replayed = type(connector)(settings, clock=lambda: later)
    with pytest.raises(WebhookVerificationError, match="tolerance"):
        replayed.verify_webhook(body, headers)


def test_truncated_body_is_refused(
    real_webhook: tuple[bytes, dict[str, str]], settings: Settings
) -> None:
    body, headers = real_webhook
    with pytest.raises(WebhookVerificationError):
        make_connector(settings).verify_webhook(body[:-2], headers)


def test_oversized_body_is_refused_even_if_signed(settings: Settings) -> None:
    body = b'{"id": "evt_big", "pad": "' + b"x" * MAX_WEBHOOK_BYTES + b'"}'
    with pytest.raises(WebhookVerificationError, match="exceeds"):
        make_connector(settings).verify_webhook(body, {"Stripe-Signature": sign(body, SECRET)})
