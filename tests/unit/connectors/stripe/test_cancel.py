"""A cancel Stripe refuses (pure: a stand-in API, no broker): answered, never failed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connectors.errors import NotFoundError, PermanentError
from connectors.stripe.connector import StripeConnector
from streams.records import PaymentCommand, PaymentEvent
from streams.settings import Settings
from tests.support import stripe_events as se


class _Api:
    """Stripe refusing every cancel, as it does for a PaymentIntent past cancelling."""

    def __init__(self, status: str) -> None:
        self.pi = se.payment_intent("pi_page", status=status, aggregate_id="pay-1")
        self.pi["metadata"]["paybus_page"] = "1"

    def cancel_payment_intent(self, pi_id: str, idempotency_key: str) -> dict[str, Any]:
        raise PermanentError(
            f"You cannot cancel this PaymentIntent because it has a status of {self.pi['status']}.",
            psp="stripe",
            code="payment_intent_unexpected_state",
        )

    def retrieve_payment_intent(self, pi_id: str) -> dict[str, Any]:
        return self.pi


def _answer(api: _Api) -> list[PaymentEvent]:
    connector = StripeConnector(Settings(), api=api)  # type: ignore[arg-type]
    command = PaymentCommand(
        command_id="cmd-cancel", aggregate_id="pay-1", aggregate_type="payment",
        operation="cancel", psp="stripe", issued_at=datetime.now(UTC), psp_object_id="pi_page",
    )  # fmt: skip
    return connector.execute(command).events


def _cancel(api: _Api) -> list[tuple[str, str]]:
    return [(e.aggregate_id, e.status) for e in _answer(api)]


def test_a_payment_its_customer_paid_before_the_cancel_stays_paid(clean_env: Path) -> None:
    """Staff cancel a page payment as its customer pays (or while the CRM still shows the
    page waiting): the refusal was the payment's ``failed``, and the sequencer applies
    confirmed -> failed (a late failure), so the CRM showed a paid payment failed."""
    assert _cancel(_Api("succeeded")) == [("pay-1", "confirmed")]


def test_a_cancel_refused_while_the_payment_waits_reports_it_waiting_with_the_reason(
    clean_env: Path,
) -> None:
    """Refused for another reason while still cancellable: raised, it became ``failed`` while
    the customer could still pay the page (and the late ``confirmed`` was dead-lettered)."""
    (event,) = _answer(_Api("requires_payment_method"))
    assert (event.status, event.reason) == (
        "pending_customer_approval",
        "stripe refused the cancel: You cannot cancel this PaymentIntent because it has a "
        "status of requires_payment_method.",
    )


def test_a_cancel_stripe_does_not_find_still_raises(clean_env: Path) -> None:
    class _Gone(_Api):
        def cancel_payment_intent(self, pi_id: str, idempotency_key: str) -> dict[str, Any]:
            raise NotFoundError("No such payment_intent", psp="stripe", code="resource_missing")

    with pytest.raises(NotFoundError):
        _cancel(_Gone("requires_payment_method"))
