"""The Stripe connector: off-session PaymentIntents (saved cards, SEPA debits) and refunds.

Every call that creates or changes something carries an ``Idempotency-Key`` derived from the
command id (:func:`connectors.base.idempotency_key`), so a command re-delivered after a crash
replays Stripe's first answer instead of charging twice. A declined card is a business outcome
(a ``failed`` event), never an exception. Transient failures are retried in process with
backoff (:mod:`connectors.retry`); what still fails is raised with ``should_retry`` for the bus
to park. Mapping lives in :mod:`connectors.stripe.transformers`, signatures in
:mod:`connectors.stripe.webhooks`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from connectors.base import (
    CommandResult,
    PageState,
    PspConnector,
    StatusLookup,
    VerifiedWebhook,
    idempotency_key,
)
from connectors.errors import NotFoundError, PermanentError
from connectors.retry import call_with_retries
from connectors.stripe import results
from connectors.stripe import transformers as tf
from connectors.stripe.client import CardDeclined, StripeApi
from connectors.stripe.settings import META_AGGREGATE_ID, PSP
from connectors.stripe.webhooks import parse_event, verify_request
from streams.records import PaymentCommand, PaymentEvent
from streams.redaction import redact

if TYPE_CHECKING:
    from streams.settings import Settings

T = TypeVar("T")

__all__ = ["StripeConnector"]

#: Canonical payment statuses of a PaymentIntent Stripe can still cancel.
_CANCELLABLE = frozenset({"created", "pending_customer_approval", "pending_submission"})


class StripeConnector(PspConnector):
    """paybus's Stripe connector (entry point ``stripe`` in ``paybus.connectors``)."""

    name: ClassVar[str] = PSP

    def __init__(
        self,
        settings: Settings,
        *,
        api: StripeApi | None = None,
        attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings, attempts=attempts, sleep=sleep, clock=clock)
        self.stripe = settings.stripe
        self.api = api if api is not None else StripeApi(settings.stripe)

    # --- helpers -------------------------------------------------------------------------------

    def _retry(self, fn: Callable[[], T]) -> T:
        return call_with_retries(fn, attempts=self._attempts, sleep=self._sleep)

    def _now(self) -> datetime:
        """Now, at Stripe's second resolution (so it orders like Stripe's own timestamps)."""
        return datetime.fromtimestamp(int(self._clock()), tz=UTC)

    @staticmethod
    def _links(obj: Mapping[str, Any], aggregate_id: str) -> dict[str, str]:
        """PSP ids -> aggregate id: the object, and its charge (disputes may name only that)."""
        links = {str(obj["id"]): aggregate_id}
        charge = obj.get("latest_charge")
        charge_id = charge.get("id") if isinstance(charge, Mapping) else charge
        if isinstance(charge_id, str) and charge_id:
            links[charge_id] = aggregate_id
        return links

    # --- PspConnector --------------------------------------------------------------------------

    def execute(self, command: PaymentCommand) -> CommandResult:
        key = idempotency_key(command.command_id, self.name)
        op = command.operation
        if op == "create_payment":
            return self._create_payment(command, key)
        if op == "request_payment":
            params = tf.payment_page_params(command)
            pi = self._retry(lambda: self.api.create_payment_intent(params, key))
            return CommandResult(
                psp_object_id=str(pi["id"]),
                events=results.command_events(command, pi, fallback_at=self._now()),
                links=self._links(pi, command.aggregate_id),
            )
        if op == "cancel":
            return self._cancel(command, key)
        if op == "refund":
            params = tf.refund_params(command)
            refund = self._retry(lambda: self.api.create_refund(params, key))
            events = results.command_events(command, refund, fallback_at=self._now())
            pi_id = str(params["payment_intent"])
            pi = self._retry(lambda: self.api.retrieve_payment_intent(pi_id))
            events += results.refunded_payment_events(
                command, pi, occurred_at=events[0].occurred_at
            )
            return CommandResult(
                psp_object_id=str(refund["id"]),
                events=events,
                links={str(refund["id"]): command.aggregate_id},
            )
        raise PermanentError(
            f"stripe connector cannot {op!r} (mandates are GoCardless's)",
            psp=PSP,
            code="unsupported_operation",
        )

    def _cancel(self, command: PaymentCommand, key: str) -> CommandResult:
        """Cancel a PaymentIntent. Stripe refuses once it is past cancelling (the customer
        paid on its page meanwhile, or the CRM showed an older status when staff asked): then
        its actual status is the answer, as GoCardless's connector reads a refused cancel's
        payment back. Raised, the refusal became the payment's ``failed``, a paid payment
        shown failed in the CRM (raised again by staff: charged twice). A refusal of an
        intent still cancellable is answered the same way, with Stripe's message as the
        reason: the payment has not failed and may still be paid."""
        if not command.psp_object_id:
            raise PermanentError(
                f"cancel command {command.command_id} names no PaymentIntent",
                psp=PSP,
                code="invalid_command",
            )
        pi_id = command.psp_object_id
        refusal: str | None = None
        try:
            pi = self._retry(lambda: self.api.cancel_payment_intent(pi_id, key))
        except NotFoundError:
            raise
        except PermanentError as exc:
            pi = self._retry(lambda: self.api.retrieve_payment_intent(pi_id))
            if tf.payment_status(pi) in _CANCELLABLE:
                # Refused for another reason (an intent Checkout owns, say): the payment may
                # still go on, so it is no failure either; Stripe's words go to the CRM.
                # Free text onto Kafka: redacted here, since a cancel the bus asked for itself
                # (an expired page's) is not passed through streams.refusals.
                refusal = redact(f"stripe refused the cancel: {exc.message}")[:500]
        events = results.command_events(command, pi, fallback_at=self._now())
        if refusal is not None:
            events = [e.derive(reason=e.reason or refusal) for e in events]
        return CommandResult(
            psp_object_id=str(pi["id"]),
            events=events,
            links={str(pi["id"]): command.aggregate_id},
        )

    def _create_payment(self, command: PaymentCommand, key: str) -> CommandResult:
        params = tf.payment_intent_params(command)
        try:
            pi = self._retry(lambda: self.api.create_payment_intent(params, key))
        except CardDeclined as declined:
            failed_pi = declined.payment_intent
            pi_id = str(failed_pi["id"]) if failed_pi and failed_pi.get("id") else None
            return CommandResult(
                psp_object_id=pi_id,
                events=results.decline_events(
                    command,
                    failed_pi,
                    reason=declined.decline_code or declined.message,
                    fallback_at=self._now(),
                ),
                links=self._links(failed_pi, command.aggregate_id) if pi_id and failed_pi else {},
            )
        return CommandResult(
            psp_object_id=str(pi["id"]),
            events=results.command_events(command, pi, fallback_at=self._now()),
            links=self._links(pi, command.aggregate_id),
        )

    def lookup_status(self, aggregate_type: str, psp_object_id: str) -> StatusLookup:
        if aggregate_type == "payment":
            pi = self._retry(lambda: self.api.retrieve_payment_intent(psp_object_id))
            status = tf.payment_status(pi)
        elif aggregate_type == "refund":
            refund = self._retry(lambda: self.api.retrieve_refund(psp_object_id))
            status = tf.refund_status(refund)
        else:
            raise PermanentError(
                f"stripe has no {aggregate_type} objects", psp=PSP, code="unsupported_operation"
            )
        return StatusLookup(
            psp_object_id=psp_object_id,
            aggregate_type=aggregate_type,
            status=status,
            observed_at=self._now(),
        )

    def page_state(self, psp_object_id: str) -> PageState:
        """The payment page of a PaymentIntent made by ``request_payment`` (any other is no
        page's: NotFoundError, whatever link names it)."""
        pi = self._retry(lambda: self.api.retrieve_payment_intent(psp_object_id))
        if not tf.is_page(pi):
            raise NotFoundError(f"{psp_object_id} is no payment page's", psp=PSP)
        status = str(pi.get("status"))
        state, reason = "closed", None
        if status in tf.PAGE_OPEN:
            state = "open"
        elif status == "processing":
            state = "processing"
        elif status in ("succeeded", "requires_capture"):
            state = "paid"
        else:
            reason = "this payment request was cancelled" if status == "canceled" else None
        description = pi.get("description")
        return PageState(
            state=state,
            amount_minor=int(pi["amount"]),
            currency=str(pi["currency"]).upper(),
            description=str(description) if description else None,
            client_secret=str(pi["client_secret"]) if state == "open" else None,
            reason=reason,
        )

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[VerifiedWebhook]:
        return [
            verify_request(
                body,
                headers,
                self.stripe.webhook_secret.get_secret_value(),
                tolerance_s=self.stripe.webhook_tolerance_s,
                now=self._clock(),
                max_bytes=self.max_webhook_bytes,
            )
        ]

    def normalise(self, body: bytes) -> list[PaymentEvent]:
        return self._events_of(parse_event(body))

    def _events_of(self, event: Mapping[str, Any]) -> list[PaymentEvent]:
        if event["type"] == "payout.paid":
            payout = event["data"]["object"]
            payout_id = str(payout["id"])
            txns = self._retry(lambda: list(self.api.payout_transactions(payout_id)))
            return tf.payout_events(event, payout, txns)
        return tf.events_from_event(event)

    def backfill(self, since: datetime) -> Iterator[PaymentEvent]:
        """Canonical events from Stripe's event log (kept 30 days by Stripe), oldest first."""
        events = self._retry(lambda: list(self.api.events_since(int(since.timestamp()))))
        owners: dict[str, str | None] = {}
        for event in sorted(events, key=lambda e: (e["created"], e["id"])):
            for pe in self._events_of(event):
                yield self._with_refunded_payment(pe, owners)

    def _with_refunded_payment(
        self, pe: PaymentEvent, owners: dict[str, str | None]
    ) -> PaymentEvent:
        """A refund made at Stripe (its dashboard, another system: no paybus metadata) named
        with the bus's payment it refunds, read from the PaymentIntent's metadata (once per
        PaymentIntent in ``owners``): a backfill has none of the normaliser's links, and
        without it a refund of the bus's payment was counted another system's (foreign)."""
        pi_id = (pe.attributes or {}).get("stripe_payment_intent")
        if pe.aggregate_type != "refund" or pe.aggregate_id or pe.payment_id or not pi_id:
            return pe
        if pi_id not in owners:
            try:
                pi = self._retry(lambda: self.api.retrieve_payment_intent(pi_id))
            except NotFoundError:
                pi = {}
            found = (pi.get("metadata") or {}).get(META_AGGREGATE_ID)
            owners[pi_id] = str(found) if found else None
        return pe.derive(payment_id=owners[pi_id]) if owners[pi_id] else pe
