"""Fixtures for the Stripe connector's integration tests.

One localstripe per test session (its store is a module global; see
:mod:`tests.support.localstripe`), flushed before each test, behind the idempotency proxy that
gives it Stripe's ``Idempotency-Key`` semantics and counts the PaymentIntents it creates.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
import stripe

from connectors.base import PspConnector
from connectors.stripe import StripeConnector
from streams.records import PaymentCommand
from streams.settings import Settings, StripeSettings
from tests.support import stripe_events as se
from tests.support.localstripe import LocalStripe, LoopThread, WebhookReceiver
from tests.support.stripe_idempotency import IdempotencyProxy

API_KEY = "sk_test_paybus_contract"
SECRET = "whsec_paybus_contract"

#: Stripe's documented test card that always asks for 3-D Secure (localstripe honours it). It
#: lives here only, to create a PaymentMethod at the stand-in; nothing else sees a number.
_THREE_DS_TEST_CARD = "4000002500003155"
#: Stripe's documented SEPA test IBAN that succeeds (localstripe: any IBAN but the fail one).
_SEPA_TEST_IBAN = "DE89370400440532013000"


@pytest.fixture
def localstripe(_localstripe_session: LocalStripe) -> LocalStripe:
    _localstripe_session.reset()
    return _localstripe_session


@pytest.fixture
def proxy(localstripe: LocalStripe, _proxy_session: IdempotencyProxy) -> IdempotencyProxy:
    _proxy_session.reset()
    return _proxy_session


@pytest.fixture
def settings(proxy: IdempotencyProxy) -> Settings:
    return Settings(
        stripe=StripeSettings(api_key=API_KEY, webhook_secret=SECRET, base_url=proxy.base_url)
    )


@pytest.fixture
def stripe_client(proxy: IdempotencyProxy) -> stripe.StripeClient:
    """A raw client for test set-up and inspection (behind the same proxy)."""
    return stripe.StripeClient(
        API_KEY, base_addresses={"api": proxy.base_url}, max_network_retries=0
    )


@pytest.fixture
def receiver(loop_thread: LoopThread, localstripe: LocalStripe) -> Iterator[WebhookReceiver]:
    rec = WebhookReceiver().start(loop_thread)
    localstripe.register_webhook("paybus-test", rec.url, SECRET)
    yield rec
    rec.stop(loop_thread)


def make_connector(settings: Settings) -> StripeConnector:
    """A connector that does not really sleep between in-process retries."""
    return StripeConnector(settings, sleep=lambda _s: None)


class StripeHarness:
    """The contract harness for Stripe over localstripe + the idempotency proxy."""

    signature_header = "Stripe-Signature"

    def __init__(self, settings: Settings, proxy: IdempotencyProxy, client: stripe.StripeClient):
        self.settings = settings
        self.proxy = proxy
        self.client = client
        self.customer = client.v1.customers.create(params={"name": "Ada Lovelace"}).id

    def new_connector(self) -> PspConnector:
        return make_connector(self.settings)

    def _payment_method(self, scenario: str, method: str) -> str:
        if method == "direct_debit":
            pm = self.client.v1.payment_methods.create(
                params={"type": "sepa_debit", "sepa_debit": {"iban": _SEPA_TEST_IBAN}}
            )
            return pm.id
        if scenario == "declines":
            return "pm_card_chargeCustomerFail"
        if scenario == "cancellable":
            card = {"number": _THREE_DS_TEST_CARD, "exp_month": 12, "exp_year": 2030, "cvc": "123"}
            pm = self.client.v1.payment_methods.create(params={"type": "card", "card": card})  # type: ignore[typeddict-item]
            return pm.id
        return "pm_card_visa"

    def payment_command(self, scenario: str = "succeeds", **fields: Any) -> PaymentCommand:
        method = fields.pop("method", "card")
        values: dict[str, Any] = {
            "command_id": f"cmd-{uuid.uuid4().hex[:12]}",
            "aggregate_id": f"pay-{uuid.uuid4().hex[:12]}",
            "aggregate_type": "payment",
            "operation": "create_payment",
            "psp": "stripe",
            "issued_at": datetime.now(UTC),
            "amount_minor": 1500,
            "currency": "EUR",
            "method": method,
            "customer_ref": self.customer,
            "payment_method_ref": self._payment_method(scenario, method),
            "description": "paybus contract",
        }
        values.update(fields)
        return PaymentCommand(**values)

    def count_payments(self) -> int:
        return self.proxy.created["payment_intents"]

    def advance_to(self, psp_object_id: str, status: str, timeout: float = 5.0) -> None:
        """localstripe settles SEPA debits on its own after ~0.5 s; wait for the status."""
        connector = self.new_connector()
        deadline = time.monotonic() + timeout
        while (current := connector.lookup_status("payment", psp_object_id).status) != status:
            if time.monotonic() > deadline:
                pytest.fail(f"{psp_object_id} stuck at {current}, wanted {status}")
            time.sleep(0.05)

    def webhook(
        self,
        *,
        aggregate_type: str,
        status: str,
        psp_object_id: str,
        aggregate_id: str,
        payment_id: str | None = None,
    ) -> bytes:
        if aggregate_type == "refund":
            obj = se.refund(
                f"re_{psp_object_id}",
                payment_intent=f"pi_{psp_object_id}",
                charge_id=f"ch_{psp_object_id}",
                amount=500,
                status={"refunded": "succeeded", "pending": "pending", "failed": "failed"}[status],
                aggregate_id=aggregate_id,
                payment_id=payment_id or "",
            )
            kind = "refund.failed" if status == "failed" else "refund.updated"
            return se.signed(se.event(kind, obj), SECRET)[0]
        pi_status, kind = {
            "created": ("requires_payment_method", "payment_intent.created"),
            "pending_customer_approval": ("requires_action", "payment_intent.requires_action"),
            "submitted": ("processing", "payment_intent.processing"),
            "confirmed": ("succeeded", "payment_intent.succeeded"),
            "cancelled": ("canceled", "payment_intent.canceled"),
            "failed": ("requires_payment_method", "payment_intent.payment_failed"),
        }[status]
        error = {"code": "card_declined", "decline_code": "insufficient_funds"}
        obj = se.payment_intent(
            f"pi_{psp_object_id}",
            status=pi_status,
            aggregate_id=aggregate_id,
            last_payment_error=error if status == "failed" else None,
        )
        return se.signed(se.event(kind, obj), SECRET)[0]

    def sign(
        self, body: bytes, *, secret: str | None = None, timestamp: int | None = None
    ) -> dict[str, str]:
        from connectors.stripe.webhooks import sign

        return {
            "Content-Type": "application/json",
            "Stripe-Signature": sign(body, secret or SECRET, timestamp),
        }

    def fail_next(
        self, status: int, *, times: int = 1, headers: Mapping[str, str] | None = None
    ) -> None:
        self.proxy.fail_next(status, times=times, headers=dict(headers or {}))


@pytest.fixture
def harness(
    settings: Settings, proxy: IdempotencyProxy, stripe_client: stripe.StripeClient
) -> StripeHarness:
    return StripeHarness(settings, proxy, stripe_client)
