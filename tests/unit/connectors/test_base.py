"""Helpers every PSP connector shares through ``connectors.base``."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.base import header_value, idempotency_key, require_fields
from connectors.errors import PermanentError
from streams.records import PaymentCommand


def test_header_value_ignores_the_case_of_the_name() -> None:
    headers = {"stripe-signature": "t=1,v1=ab", "Content-Type": "application/json"}
    assert header_value(headers, "Stripe-Signature") == "t=1,v1=ab"
    assert header_value(headers, "CONTENT-TYPE") == "application/json"
    assert header_value(headers, "Webhook-Signature") is None


def test_require_fields_names_every_missing_field_as_a_permanent_error() -> None:
    command = PaymentCommand(
        command_id="cmd-9", aggregate_id="pay-9", aggregate_type="payment",
        operation="create_payment", psp="acme", issued_at=datetime(2024, 5, 1, tzinfo=UTC),
        amount_minor=100, currency="", payment_method_ref=None,
    )  # fmt: skip
    require_fields(command, "acme", "amount_minor", "aggregate_id")
    with pytest.raises(PermanentError) as caught:
        require_fields(command, "acme", "amount_minor", "currency", "payment_method_ref")
    err = caught.value
    assert "currency, payment_method_ref" in str(err) and "cmd-9" in str(err)
    assert (err.psp, err.code, err.should_retry) == ("acme", "invalid_command", False)


def test_idempotency_key_is_derived_not_random() -> None:
    assert idempotency_key("cmd-1", "stripe") == idempotency_key("cmd-1", "stripe")
    assert idempotency_key("cmd-1", "stripe") != idempotency_key("cmd-2", "stripe")
    assert idempotency_key("cmd-1", "stripe") != idempotency_key("cmd-1", "gocardless")
