"""The PSP connector contract, run for Stripe against localstripe."""

from __future__ import annotations

import pytest

from tests.connectors.contract import ContractHarness, PspConnectorContract
from tests.integration.connectors.stripe.conftest import StripeHarness


class TestStripeContract(PspConnectorContract):
    capabilities = PspConnectorContract.capabilities | {"signature_timestamps"}
    webhook_cases = (
        ("payment", "submitted"),
        ("payment", "confirmed"),
        ("payment", "failed"),
        ("payment", "cancelled"),
        ("payment", "pending_customer_approval"),
        ("refund", "refunded"),
        ("refund", "pending"),
        ("refund", "failed"),
    )

    @pytest.fixture
    def harness(self, harness: StripeHarness) -> ContractHarness:  # type: ignore[override]
        return harness
