"""The PSP connector contract, run for GoCardless against the sandbox (behind a fault proxy).

GoCardless declines asynchronously (a ``failed`` event days later, never at create), signs
webhooks without a timestamp, and does not change a payment's status when it is refunded
(refunds are their own resources), so ``sync_decline``, ``signature_timestamps`` and
``refund_updates_payment`` are left out of the capabilities.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.gocardless.sandbox import RunningSandbox
from tests.connectors.contract import ContractHarness, PspConnectorContract

from .harness import FaultProxy, GoCardlessHarness, proxy_for


@pytest.fixture
def proxy(sandbox: RunningSandbox) -> Iterator[FaultProxy]:
    yield from proxy_for(sandbox)


class TestGoCardlessContract(PspConnectorContract):
    capabilities = frozenset({"cancel", "refund", "partial_refund", "faults"})
    webhook_cases = (
        ("payment", "pending_submission"),
        ("payment", "submitted"),
        ("payment", "confirmed"),
        ("payment", "failed"),
        ("payment", "cancelled"),
        ("payment", "charged_back"),
        ("mandate", "pending_submission"),
        ("mandate", "submitted"),
        ("mandate", "active"),
        ("mandate", "suspended"),
        ("mandate", "cancelled"),
        ("mandate", "failed"),
        ("refund", "created"),
        ("refund", "refunded"),
        ("refund", "failed"),
    )

    @pytest.fixture
    def harness(self, sandbox: RunningSandbox, proxy: FaultProxy) -> ContractHarness:
        return GoCardlessHarness(sandbox, proxy)
