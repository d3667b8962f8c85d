"""Stripe-specific connector behaviour beyond the shared contract."""

from __future__ import annotations

import pytest
import stripe

from connectors.base import idempotency_key
from connectors.errors import NotFoundError, PermanentError, TransientError
from streams.settings import Settings
from tests.integration.connectors.stripe.conftest import StripeHarness, make_connector
from tests.support import stripe_events as se
from tests.support.stripe_idempotency import IdempotencyProxy

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:aiohttp")


def test_payment_intent_carries_metadata_and_off_session_params(
    harness: StripeHarness, settings: Settings, stripe_client: stripe.StripeClient
) -> None:
    command = harness.payment_command(metadata={"order": "o-42"})
    result = make_connector(settings).execute(command)
    assert result.psp_object_id
    pi = stripe_client.v1.payment_intents.retrieve(result.psp_object_id)
    assert pi.metadata["paybus_aggregate_id"] == command.aggregate_id
    assert pi.metadata["paybus_aggregate_type"] == "payment"
    assert pi.metadata["paybus_method"] == "card"
    assert pi.metadata["order"] == "o-42"
    assert (pi.amount, pi.currency, pi.customer) == (1500, "eur", harness.customer)


def test_same_command_id_with_different_params_is_an_idempotency_error(
    harness: StripeHarness, settings: Settings, proxy: IdempotencyProxy
) -> None:
    connector = make_connector(settings)
    command = harness.payment_command()
    connector.execute(command)
    changed = harness.payment_command(command_id=command.command_id, amount_minor=999)
    with pytest.raises(PermanentError) as info:
        connector.execute(changed)
    assert info.value.code == "idempotency_error"
    assert info.value.http_status == 400 and info.value.should_retry is False
    assert proxy.created["payment_intents"] == 1


def test_idempotency_key_is_derived_from_command_id() -> None:
    assert idempotency_key("cmd-1", "stripe") == idempotency_key("cmd-1", "stripe")
    assert idempotency_key("cmd-1", "stripe") != idempotency_key("cmd-2", "stripe")


def test_rate_limit_hint_is_honoured_and_surfaced(
    harness: StripeHarness, settings: Settings
) -> None:
    slept: list[float] = []
    connector = type(make_connector(settings))(settings, sleep=slept.append, attempts=2)
    harness.fail_next(429, times=2, headers={"Retry-After": "3"})
    with pytest.raises(TransientError) as info:
        connector.execute(harness.payment_command())
    assert info.value.http_status == 429 and info.value.retry_after_s == 3.0
    assert slept == [3.0]  # one retry, waited as long as Stripe asked


def test_stripe_should_retry_header_overrides_status(
    harness: StripeHarness, settings: Settings
) -> None:
    harness.fail_next(500, times=5, headers={"Stripe-Should-Retry": "false"})
    with pytest.raises(PermanentError) as info:
        make_connector(settings).execute(harness.payment_command())
    assert info.value.should_retry is False and info.value.http_status == 500


def test_refund_and_dispute_webhooks_from_real_objects(
    harness: StripeHarness, settings: Settings, stripe_client: stripe.StripeClient
) -> None:
    """localstripe emits no charge.refunded / refund.* / dispute events: build them around the
    real objects it holds, sign them, and check the connector maps them."""
    connector = make_connector(settings)
    payment = harness.payment_command()
    created = connector.execute(payment)
    assert created.psp_object_id
    pi = stripe_client.v1.payment_intents.retrieve(created.psp_object_id)
    charge = stripe_client.v1.charges.retrieve(str(pi.latest_charge.id)).to_dict()  # type: ignore[union-attr]

    partially = {**charge, "amount_refunded": 500, "refunded": False}
    body, headers = se.signed(se.event("charge.refunded", partially), "whsec_paybus_contract")
    [unit] = connector.verify_webhook(body, headers)
    assert unit.psp_object_id == created.psp_object_id  # keyed by the PaymentIntent
    [event] = connector.normalise(body)
    assert (event.status, event.psp_object_id) == ("partially_refunded", created.psp_object_id)

    body, headers = se.signed(
        se.event(
            "charge.dispute.created",
            se.dispute("dp_1", charge_id=charge["id"], payment_intent=created.psp_object_id),
        ),
        "whsec_paybus_contract",
    )
    [event] = connector.normalise(connector.verify_webhook(body, headers)[0].body)
    assert (event.status, event.reason) == ("charged_back", "fraudulent")
    assert event.psp_object_id in created.links


def test_a_refund_or_cancel_of_a_payment_intent_the_account_lacks_is_not_found(
    harness: StripeHarness, settings: Settings
) -> None:
    # Another account's key (streams.unknown_objects): both must read as NotFoundError, or
    # the payment is failed instead of waiting for the key. Stripe answers an id in the URL
    # (the cancel) 404 and one in a parameter (the refund's) 400 resource_missing, which the
    # unit tests of the error mapping cover; localstripe answers both 404.
    connector = make_connector(settings)
    for operation in ("cancel", "refund"):
        command = harness.payment_command(operation=operation, psp_object_id="pi_NotThisAccount")
        with pytest.raises(NotFoundError) as info:
            connector.execute(command)
        assert info.value.should_retry is False, operation
