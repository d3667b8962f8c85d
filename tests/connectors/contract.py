"""The PSP connector contract: one test class every connector's tests subclass and must pass.

A connector's test package subclasses :class:`PspConnectorContract`, provides a ``harness``
fixture returning a :class:`ContractHarness` bound to its PSP stand-in (localstripe, the
GoCardless sandbox, ...), and declares what its PSP can do in ``capabilities``::

    class TestStripeContract(PspConnectorContract):
        capabilities = PspConnectorContract.capabilities | {"signature_timestamps"}
        webhook_cases = (("payment", "confirmed"), ("refund", "refunded"))

        @pytest.fixture
        def harness(self, stripe_stand_in) -> ContractHarness:
            return StripeHarness(stripe_stand_in)

Everything PSP-specific (which test card declines, how to push a direct debit to
``confirmed``, how a webhook body looks and is signed, how to count objects at the stand-in)
lives in the harness; the assertions here are about paybus's contract only: ids, links,
idempotency, canonical statuses, verification and error metadata. A capability a PSP lacks
(GoCardless declines asynchronously; it signs without a timestamp) is left out of
``capabilities`` and its tests are skipped, not weakened.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

import pytest

from connectors.base import CommandResult, PspConnector
from connectors.errors import ConnectorError, NotFoundError, WebhookVerificationError
from streams.lifecycles import lifecycle_for
from streams.records import PaymentCommand, PaymentEvent


def lifecycle_statuses(aggregate_type: str) -> frozenset[str]:
    """The canonical statuses of ``aggregate_type`` (DESIGN.md, kept as data in streams)."""
    return lifecycle_for(aggregate_type).statuses


class ContractHarness(Protocol):
    """What a PSP's tests provide so the contract can drive its connector and stand-in."""

    def new_connector(self) -> PspConnector:
        """A fresh connector instance (a restarted worker), configured for the stand-in.

        It should not really sleep between in-process retries (inject a no-op sleep).
        """

    def payment_command(self, scenario: str = "succeeds", **fields: Any) -> PaymentCommand:
        """A ``create_payment`` command for ``scenario``: ``succeeds`` (reaches confirmed, or
        gets there through :meth:`advance_to`), ``cancellable`` (stays cancellable after
        create) or ``declines`` (refused synchronously). ``fields`` override the command."""

    def count_payments(self) -> int:
        """How many payment objects the stand-in has created so far (counted at the PSP)."""

    def advance_to(self, psp_object_id: str, status: str) -> None:
        """Drive the stand-in until the payment reaches canonical ``status`` (no-op if it is
        there already); ``pytest.skip`` if the stand-in cannot."""

    def webhook(
        self,
        *,
        aggregate_type: str,
        status: str,
        psp_object_id: str,
        aggregate_id: str,
        payment_id: str | None = None,
    ) -> bytes:
        """A webhook body the connector should normalise to ``status`` for that aggregate
        (its events may also include others, e.g. a batch)."""

    def sign(
        self, body: bytes, *, secret: str | None = None, timestamp: int | None = None
    ) -> dict[str, str]:
        """Request headers signing ``body`` (the connector's secret unless ``secret`` given;
        ``timestamp`` only for PSPs with ``signature_timestamps``)."""

    @property
    def signature_header(self) -> str:
        """Name of the signature header (to test its absence)."""

    def fail_next(
        self, status: int, *, times: int = 1, headers: Mapping[str, str] | None = None
    ) -> None:
        """Make the stand-in answer the next ``times`` API calls with HTTP ``status``."""


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def assert_canonical(events: list[PaymentEvent], *, psp: str) -> None:
    """Every event names a known aggregate type, a status of its lifecycle, and the PSP."""
    for event in events:
        assert event.status in lifecycle_statuses(event.aggregate_type), event
        assert event.event_id, event
        assert event.psp == psp, event
        assert isinstance(event.occurred_at, datetime) and event.occurred_at.tzinfo is not None
        if event.aggregate_type == "payment":
            assert event.method in (None, "card", "direct_debit"), event


class PspConnectorContract:
    """Contract tests; subclass, provide ``harness`` and adjust the class attributes."""

    #: What the PSP (and its stand-in) can do; tests of missing capabilities are skipped.
    capabilities: ClassVar[frozenset[str]] = frozenset(
        {"cancel", "refund", "partial_refund", "refund_updates_payment", "sync_decline", "faults"}
    )
    #: (aggregate_type, status) pairs :meth:`ContractHarness.webhook` can produce.
    webhook_cases: ClassVar[tuple[tuple[str, str], ...]] = (("payment", "confirmed"),)

    def require(self, capability: str) -> None:
        if capability not in self.capabilities:
            pytest.skip(f"{type(self).__name__} lacks {capability!r}")

    @pytest.fixture
    def harness(self) -> ContractHarness:
        raise NotImplementedError("a connector's contract test class must provide `harness`")

    @pytest.fixture
    def connector(self, harness: ContractHarness) -> PspConnector:
        return harness.new_connector()

    # --- helpers ---------------------------------------------------------------------------------

    def _create(
        self, harness: ContractHarness, connector: PspConnector, scenario: str = "succeeds"
    ) -> tuple[PaymentCommand, CommandResult]:
        command = harness.payment_command(scenario)
        return command, connector.execute(command)

    def _refund_command(
        self, payment: PaymentCommand, psp_object_id: str, amount_minor: int | None
    ) -> PaymentCommand:
        return PaymentCommand(
            command_id=new_id("cmd"),
            aggregate_id=new_id("ref"),
            aggregate_type="refund",
            operation="refund",
            psp=payment.psp,
            issued_at=datetime.now(UTC),
            amount_minor=amount_minor,
            currency=payment.currency,
            psp_object_id=psp_object_id,
            payment_id=payment.aggregate_id,
        )

    # --- commands --------------------------------------------------------------------------------

    def test_create_payment_returns_psp_id_and_links_aggregate(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        command, result = self._create(harness, connector)
        assert result.psp_object_id
        assert result.links.get(result.psp_object_id) == command.aggregate_id
        assert result.events, "the PSP's answer should produce at least one canonical event"
        assert_canonical(result.events, psp=connector.name)
        for event in result.events:
            assert event.aggregate_id == command.aggregate_id
            assert event.aggregate_type == "payment"
            assert event.psp_object_id == result.psp_object_id
            assert event.status not in ("failed", "cancelled")

    def test_reexecuting_a_command_creates_no_second_object(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        before = harness.count_payments()
        command, first = self._create(harness, connector)
        second = connector.execute(command)
        assert harness.count_payments() == before + 1
        assert second.psp_object_id == first.psp_object_id
        assert [e.event_id for e in second.events] == [e.event_id for e in first.events]

    def test_command_redelivered_after_crash_creates_exactly_one_object(
        self, harness: ContractHarness
    ) -> None:
        before = harness.count_payments()
        command = harness.payment_command("succeeds")
        first = harness.new_connector().execute(command)
        # the worker "crashed" before committing; a new one gets the same command again
        again = harness.new_connector().execute(command)
        assert harness.count_payments() == before + 1
        assert again.psp_object_id == first.psp_object_id

    def test_distinct_commands_create_distinct_objects(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        before = harness.count_payments()
        _, a = self._create(harness, connector)
        _, b = self._create(harness, connector)
        assert a.psp_object_id != b.psp_object_id
        assert harness.count_payments() == before + 2

    def test_declined_payment_is_a_failed_event_not_an_error(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        self.require("sync_decline")
        command, result = self._create(harness, connector, "declines")
        assert [e.status for e in result.events] == ["failed"]
        assert result.events[0].aggregate_id == command.aggregate_id
        assert result.events[0].reason
        assert_canonical(result.events, psp=connector.name)

    def test_cancel(self, harness: ContractHarness, connector: PspConnector) -> None:
        self.require("cancel")
        payment, created = self._create(harness, connector, "cancellable")
        assert created.psp_object_id
        cancel = PaymentCommand(
            command_id=new_id("cmd"),
            aggregate_id=payment.aggregate_id,
            aggregate_type="payment",
            operation="cancel",
            psp=payment.psp,
            issued_at=datetime.now(UTC),
            psp_object_id=created.psp_object_id,
        )
        result = connector.execute(cancel)
        assert [e.status for e in result.events] == ["cancelled"]
        assert result.events[0].aggregate_id == payment.aggregate_id
        assert_canonical(result.events, psp=connector.name)
        # redelivered cancel: same answer, no error
        assert [e.event_id for e in connector.execute(cancel).events] == [
            e.event_id for e in result.events
        ]
        lookup = connector.lookup_status("payment", created.psp_object_id)
        assert lookup.status == "cancelled"

    def test_a_cancel_refused_because_the_payment_went_on_reports_it_not_failed(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        """Staff asked to cancel a payment the PSP had already taken further (the customer
        paid on its page meanwhile; the CRM showed an older status): a refusal raised became
        the payment's ``failed``, a collected payment shown failed in the CRM."""
        self.require("cancel")
        payment, created = self._create(harness, connector)
        assert created.psp_object_id
        harness.advance_to(created.psp_object_id, "confirmed")
        cancel = payment.derive(command_id=new_id("cmd"), operation="cancel",
                                psp_object_id=created.psp_object_id)  # fmt: skip
        result = connector.execute(cancel)
        now = connector.lookup_status("payment", created.psp_object_id).status
        assert [e.status for e in result.events] == [now] and now != "cancelled"
        assert_canonical(result.events, psp=connector.name)

    @pytest.mark.parametrize("partial", [False, True], ids=["full", "partial"])
    def test_refund(self, harness: ContractHarness, connector: PspConnector, partial: bool) -> None:
        self.require("partial_refund" if partial else "refund")
        payment, created = self._create(harness, connector)
        assert created.psp_object_id and payment.amount_minor
        harness.advance_to(created.psp_object_id, "confirmed")
        amount = payment.amount_minor // 3 if partial else None
        refund = self._refund_command(payment, created.psp_object_id, amount)
        result = connector.execute(refund)
        assert (
            result.psp_object_id and result.links.get(result.psp_object_id) == refund.aggregate_id
        )
        assert result.events
        assert_canonical(result.events, psp=connector.name)
        refund_events = [e for e in result.events if e.aggregate_type == "refund"]
        payment_events = [e for e in result.events if e.aggregate_type == "payment"]
        assert refund_events and len(refund_events) + len(payment_events) == len(result.events)
        for event in payment_events:  # the payment's own move, where the PSP shows one
            assert event.aggregate_id == payment.aggregate_id
            assert event.status == ("partially_refunded" if partial else "refunded")
        for event in refund_events:
            assert event.aggregate_id == refund.aggregate_id
            assert event.payment_id == payment.aggregate_id
            assert event.amount_minor == (amount or payment.amount_minor)
            assert event.status in ("created", "pending", "refunded")
        lookup = connector.lookup_status("refund", result.psp_object_id)
        assert lookup.status in ("created", "pending", "refunded")
        again = connector.execute(refund)
        assert again.psp_object_id == result.psp_object_id
        if "refund_updates_payment" in self.capabilities:
            assert payment_events, "the refund result should carry the payment's new status"
            status = connector.lookup_status("payment", created.psp_object_id).status
            assert status == ("partially_refunded" if partial else "refunded")

    def test_lookup_status_is_canonical(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        _, created = self._create(harness, connector)
        assert created.psp_object_id
        harness.advance_to(created.psp_object_id, "confirmed")
        lookup = connector.lookup_status("payment", created.psp_object_id)
        assert lookup.psp_object_id == created.psp_object_id
        assert lookup.aggregate_type == "payment"
        assert lookup.status == "confirmed"
        assert lookup.observed_at.tzinfo is not None

    # --- errors ----------------------------------------------------------------------------------

    def test_unknown_object_is_a_permanent_not_found_with_metadata(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        with pytest.raises(NotFoundError) as info:
            connector.lookup_status("payment", "does-not-exist-" + uuid.uuid4().hex[:8])
        err = info.value
        assert err.http_status == 404
        assert err.request_id
        assert err.should_retry is False

    def test_transient_failure_is_retried_in_process(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        self.require("faults")
        harness.fail_next(503, times=1)
        _, result = self._create(harness, connector)
        assert result.psp_object_id

    def test_persistent_server_error_surfaces_as_retryable(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        self.require("faults")
        harness.fail_next(503, times=20)
        with pytest.raises(ConnectorError) as info:
            self._create(harness, connector)
        assert info.value.should_retry is True
        assert info.value.http_status == 503
        assert info.value.request_id

    def test_client_error_is_not_retryable(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        self.require("faults")
        harness.fail_next(400, times=20)
        with pytest.raises(ConnectorError) as info:
            self._create(harness, connector)
        assert info.value.should_retry is False
        assert info.value.http_status == 400

    # --- webhooks --------------------------------------------------------------------------------

    def _signed_webhook(
        self, harness: ContractHarness, aggregate_type: str = "payment", status: str = "confirmed"
    ) -> tuple[bytes, dict[str, str], str, str]:
        psp_id = new_id("psp")
        aggregate_id = new_id("pay" if aggregate_type == "payment" else aggregate_type[:3])
        body = harness.webhook(
            aggregate_type=aggregate_type,
            status=status,
            psp_object_id=psp_id,
            aggregate_id=aggregate_id,
            payment_id=new_id("pay") if aggregate_type == "refund" else None,
        )
        return body, harness.sign(body), psp_id, aggregate_id

    def test_verify_accepts_a_correctly_signed_body(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        body, headers, _, _ = self._signed_webhook(harness)
        units = connector.verify_webhook(body, headers)
        assert units
        for unit in units:
            assert unit.webhook_id and unit.psp_object_id and unit.body

    def test_verify_refuses_a_forged_signature(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        body, _, _, _ = self._signed_webhook(harness)
        with pytest.raises(WebhookVerificationError):
            connector.verify_webhook(body, harness.sign(body, secret="not-the-secret"))

    def test_verify_refuses_a_missing_signature(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        body, headers, _, _ = self._signed_webhook(harness)
        stripped = {
            k: v for k, v in headers.items() if k.lower() != harness.signature_header.lower()
        }
        with pytest.raises(WebhookVerificationError):
            connector.verify_webhook(body, stripped)

    @pytest.mark.parametrize("damage", ["truncated", "tampered", "empty"])
    def test_verify_refuses_an_altered_body(
        self, harness: ContractHarness, connector: PspConnector, damage: str
    ) -> None:
        body, headers, _, _ = self._signed_webhook(harness)
        altered = {
            "truncated": body[: len(body) // 2],
            "tampered": body.replace(b"1", b"2", 1) if b"1" in body else body + b" ",
            "empty": b"",
        }[damage]
        assert altered != body
        with pytest.raises(WebhookVerificationError):
            connector.verify_webhook(altered, headers)

    def test_verify_refuses_an_oversized_body(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        limit = connector.settings.webhook_max_body_bytes
        body = b'{"padding": "' + b"x" * (limit + 1) + b'"}'
        with pytest.raises(WebhookVerificationError):
            connector.verify_webhook(body, harness.sign(body))

    def test_verify_refuses_a_stale_timestamp(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        self.require("signature_timestamps")
        body, _, _, _ = self._signed_webhook(harness)
        stale = int(time.time()) - 3600
        with pytest.raises(WebhookVerificationError):
            connector.verify_webhook(body, harness.sign(body, timestamp=stale))

    def test_normalise_yields_canonical_events_with_stable_ids(
        self, harness: ContractHarness, connector: PspConnector
    ) -> None:
        for aggregate_type, status in self.webhook_cases:
            body, headers, psp_id, aggregate_id = self._signed_webhook(
                harness, aggregate_type, status
            )
            units = connector.verify_webhook(body, headers)
            events = [e for unit in units for e in connector.normalise(unit.body)]
            assert_canonical(events, psp=connector.name)
            mine = [e for e in events if e.aggregate_id == aggregate_id]
            assert [e.status for e in mine] == [status], (aggregate_type, status, events)
            assert mine[0].aggregate_type == aggregate_type
            # redelivery: same verified ids, same event ids
            again_units = connector.verify_webhook(body, headers)
            again = [e for unit in again_units for e in connector.normalise(unit.body)]
            assert [u.webhook_id for u in again_units] == [u.webhook_id for u in units]
            assert [e.event_id for e in again] == [e.event_id for e in events]
            assert len({e.event_id for e in events}) == len(events)
            assert psp_id  # the harness decides how the PSP id appears in the body
