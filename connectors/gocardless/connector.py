"""The GoCardless connector: mandates on tokenised bank accounts, direct debits, refunds.

Every create carries an ``Idempotency-Key`` derived from the command id
(:func:`connectors.base.idempotency_key`), so a command re-delivered after a crash gets the
resource the first attempt created instead of a second debit. Command answers are reported
as GoCardless's own events about them (looked up by resource and action), so the event a
command yields and the webhook that later announces the same change share one id and the
sequencer drops the second as a duplicate. Transient failures are retried in process with
backoff (:mod:`connectors.retry`); what still fails is raised with ``should_retry`` for the bus
to park. Mapping lives in :mod:`connectors.gocardless.transformers`, signatures in
:mod:`connectors.gocardless.webhooks`, bank details in :mod:`connectors.gocardless.bank_details`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from connectors.base import (
    CommandResult,
    PspConnector,
    StatusLookup,
    VerifiedWebhook,
    idempotency_key,
)
from connectors.errors import AuthenticationError, NotFoundError, PermanentError
from connectors.gocardless import transformers as tf
from connectors.gocardless.bank_details import BankAccountToken, register_bank_account
from connectors.gocardless.client import GoCardlessApi
from connectors.gocardless.settings import META_AGGREGATE_ID, PSP
from connectors.gocardless.webhooks import parse_events, verify_request
from connectors.retry import call_with_retries
from streams.records import PaymentCommand, PaymentEvent
from streams.redaction import redact

if TYPE_CHECKING:
    from streams.settings import Settings

T = TypeVar("T")
Json = dict[str, Any]
#: Metadata a cancel request carries, which GoCardless repeats on the events it causes.
COMMAND_ID_KEY = "paybus_command_id"

__all__ = ["GoCardlessConnector"]

log = logging.getLogger(__name__)

_LINK = {"payment": "payment", "mandate": "mandate", "refund": "refund"}
_PAYOUT_CACHE = 256
_PAID_OUT = ("payments", "paid_out")


def _iso(moment: datetime) -> str:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _caused_by(gc_event: Json, command: PaymentCommand) -> bool:
    """Whether ``gc_event`` is what ``command``'s own cancel call did: GoCardless puts the
    metadata of the request that triggered an event on the event. Its cause then says only
    that paybus cancelled it (``payment_cancelled``, "The payment was cancelled."), so it
    carries no reason of its own: the command stage gives it the cancel's reason (the
    intent's, or an expired page's). A cancellation that happened otherwise (the customer,
    a cancelled mandate taking its payments) keeps GoCardless's reason."""
    if command.operation != "cancel" or gc_event.get("action") != "cancelled":
        return False
    metadata = gc_event.get("metadata")
    return isinstance(metadata, dict) and (metadata.get(COMMAND_ID_KEY) == command.command_id[:500])


class GoCardlessConnector(PspConnector):
    """paybus's GoCardless connector (entry point ``gocardless`` in ``paybus.connectors``)."""

    name: ClassVar[str] = PSP

    def __init__(
        self,
        settings: Settings,
        *,
        api: GoCardlessApi | None = None,
        attempts: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings, attempts=attempts, sleep=sleep, clock=clock)
        self.gocardless = settings.gocardless
        self.api = api if api is not None else GoCardlessApi(settings.gocardless)
        #: Paid payouts never change their arrival date: one GET per payout, not per payment.
        self._payouts: dict[str, Json | None] = {}

    # --- helpers -------------------------------------------------------------------------------

    def _retry(self, fn: Callable[[], T]) -> T:
        return call_with_retries(fn, attempts=self._attempts, sleep=self._sleep)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), tz=UTC)

    @staticmethod
    def _log_dropped(command: PaymentCommand, dropped: list[str]) -> None:
        """Info, not a warning: dropping is the designed answer to GoCardless's 3-key limit
        (the bus's own keys win), nothing an operator can act on, and it happened on every
        refund and payment from the CRM (the poller's ``salesforce_object`` key)."""
        if dropped:
            log.info(
                "command %s: metadata keys %s do not fit GoCardless's 3-key limit; not sent",
                command.command_id,
                ", ".join(dropped),
            )

    def _answer(
        self, command: PaymentCommand, aggregate_type: str, resource: Json, action: str
    ) -> CommandResult:
        """The result of a command: GoCardless's own ``action`` events about ``resource``.

        Without one (GoCardless has not written it yet) the answer is synthesised from the
        resource, with an id derived from the command so a re-execution repeats it.
        """
        rid = str(resource["id"])
        found = self._retry(lambda: list(self.api.events(**{_LINK[aggregate_type]: rid})))
        mine = sorted(
            (e for e in found if e.get("action") == action),
            key=lambda e: (tf.ts(str(e["created_at"])), str(e["id"])),
        )
        payment_id = command.payment_id if aggregate_type == "refund" else None
        events = [
            event.derive(reason=None) if _caused_by(gc_event, command) else event
            for gc_event in mine
            for event in tf.events_from_event(
                gc_event,
                resource=resource,
                aggregate_id=command.aggregate_id,
                payment_id=payment_id,
            )
        ]
        if not events:
            created = resource.get("created_at")
            at = tf.ts(created) if action == "created" and isinstance(created, str) else None
            events = [
                tf.command_event(command, aggregate_type, resource, occurred_at=at or self._now())
            ]
        return CommandResult(psp_object_id=rid, events=events, links={rid: command.aggregate_id})

    # --- PspConnector --------------------------------------------------------------------------

    def execute(self, command: PaymentCommand) -> CommandResult:
        key = idempotency_key(command.command_id, self.name)
        op = command.operation
        if op == "create_mandate":
            params, dropped = tf.mandate_params(command)
            self._log_dropped(command, dropped)
            mandate = self._retry(lambda: self.api.create_mandate(params, key))
            return self._answer(command, "mandate", mandate, "created")
        if op == "create_payment":
            params, dropped = tf.payment_params(command)
            self._log_dropped(command, dropped)
            payment = self._retry(lambda: self.api.create_payment(params, key))
            return self._answer(command, "payment", payment, "created")
        if op == "cancel":
            return self._cancel(command)
        if op == "refund":
            return self._refund(command, key)
        raise PermanentError(
            f"gocardless connector cannot {op!r}", psp=PSP, code="unsupported_operation"
        )

    def _cancel(self, command: PaymentCommand) -> CommandResult:
        """Cancel a payment or mandate; a re-delivered cancel finds it cancelled, not an error.

        A refused cancel is answered with the resource's actual status, read back, whatever
        GoCardless's reason: ``cancellation_failed`` (past cancelling: submitted to the
        banks, confirmed) or any other refusal of a request GoCardless understood (a
        validation error, a state this code does not know). Raised, a refusal became the
        payment's ``failed`` while the debit went on. A refusal of a resource still
        cancellable carries GoCardless's words as the reason, as the Stripe connector's does.
        Only a resource GoCardless does not know, or credentials it does not accept, are
        raised: no status can be read back."""
        target = command.psp_object_id or (
            command.mandate_ref if command.aggregate_type == "mandate" else None
        )
        if not target or command.aggregate_type not in ("payment", "mandate"):
            raise PermanentError(
                f"cancel command {command.command_id} names no GoCardless payment or mandate",
                psp=PSP,
                code="invalid_command",
            )
        is_mandate = command.aggregate_type == "mandate"
        metadata = {COMMAND_ID_KEY: command.command_id[:500]}
        cancel = self.api.cancel_mandate if is_mandate else self.api.cancel_payment
        get = self.api.get_mandate if is_mandate else self.api.get_payment
        try:
            resource = self._retry(lambda: cancel(target, metadata))
        except (NotFoundError, AuthenticationError):
            raise
        except PermanentError as exc:
            resource = self._retry(lambda: get(target))
            status = tf.resource_status(command.aggregate_type, resource)
            if status != "cancelled":
                log.warning("GoCardless refused to cancel %s %s: it is %s (%s)",
                            command.aggregate_type, target, status, exc)  # fmt: skip
                event = tf.command_event(
                    command, command.aggregate_type, resource, occurred_at=self._now()
                )
                if exc.code != "cancellation_failed" and not event.reason:
                    # Not a state refusal: the payment may still go on or be cancelled later;
                    # GoCardless's words (they name fields, never values) tell staff why.
                    said = redact(f"gocardless refused the cancel: {exc.message}")[:500]
                    event = event.derive(reason=said)
                return CommandResult(psp_object_id=target, events=[event])
        return self._answer(command, command.aggregate_type, resource, "cancelled")

    def _refund(self, command: PaymentCommand, key: str) -> CommandResult:
        """Refund a payment: in full (what is left of it) without an amount, else partially.

        A refund this command already made (found by its metadata) is returned as is: the
        idempotency key covers a crash, this covers a key GoCardless no longer remembers.
        """
        if not command.psp_object_id:
            raise PermanentError(
                f"refund command {command.command_id} names no GoCardless payment",
                psp=PSP,
                code="invalid_command",
            )
        payment_id = command.psp_object_id
        refunds = self._retry(lambda: self.api.refunds_of(payment_id))
        for refund in refunds:
            if (refund.get("metadata") or {}).get(META_AGGREGATE_ID) == command.aggregate_id:
                return self._answer(command, "refund", refund, "created")
        payment = self._retry(lambda: self.api.get_payment(payment_id))
        refunded = int(payment.get("amount_refunded") or 0)
        amount = command.amount_minor or int(payment["amount"]) - refunded
        if amount <= 0:
            raise PermanentError(
                f"payment {payment_id} has nothing left to refund", psp=PSP, code="invalid_command"
            )
        params, dropped = tf.refund_params(command, amount=amount, refunded_before=refunded)
        self._log_dropped(command, dropped)
        created = self._retry(lambda: self.api.create_refund(params, key))
        return self._answer(command, "refund", created, "created")

    def lookup_status(self, aggregate_type: str, psp_object_id: str) -> StatusLookup:
        getters: dict[str, Callable[[str], Json]] = {
            "payment": self.api.get_payment,
            "mandate": self.api.get_mandate,
            "refund": self.api.get_refund,
        }
        if aggregate_type not in getters:
            raise PermanentError(
                f"gocardless has no {aggregate_type} objects", psp=PSP, code="unsupported_operation"
            )
        resource = self._retry(lambda: getters[aggregate_type](psp_object_id))
        status = tf.resource_status(aggregate_type, resource)
        settlement = None
        payout_id = (resource.get("links") or {}).get("payout")
        if aggregate_type == "payment" and status == "paid_out" and payout_id:
            payout = self._payout(str(payout_id))
            settlement = payout.get("arrival_date") if payout else None
        return StatusLookup(
            psp_object_id=psp_object_id,
            aggregate_type=aggregate_type,
            status=status,
            observed_at=self._now(),
            settlement_date=settlement,
        )

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> list[VerifiedWebhook]:
        return verify_request(
            body,
            headers,
            self.gocardless.webhook_secret.get_secret_value(),
            max_bytes=self.max_webhook_bytes,
        )

    def normalise(self, body: bytes) -> list[PaymentEvent]:
        return [event for gc_event in parse_events(body) for event in self._events_of(gc_event)]

    def backfill(self, since: datetime) -> Iterator[PaymentEvent]:
        """Canonical events of GoCardless's event log after ``since``, oldest first.

        The same events, ids and mapping as webhooks, so re-publishing what was delivered
        already only produces duplicates the sequencer drops, and what was missed fills gaps.
        """
        after = _iso(since)
        found = self._retry(lambda: list(self.api.events(**{"created_at[gt]": after})))
        for event in sorted(found, key=lambda e: (tf.ts(str(e["created_at"])), str(e["id"]))):
            yield from self._events_of(event)

    def register_bank_account(
        self,
        *,
        account_holder_name: str,
        iban: str | None = None,
        sort_code: str | None = None,
        account_number: str | None = None,
        customer_id: str | None = None,
        customer: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> BankAccountToken:
        """Bank details -> token and mask, see :mod:`connectors.gocardless.bank_details`.

        A method, so the bus reaches it through the connector registry like every other PSP
        call, without importing this package.
        """
        return register_bank_account(
            self.api,
            account_holder_name=account_holder_name,
            iban=iban,
            sort_code=sort_code,
            account_number=account_number,
            customer_id=customer_id,
            customer=customer,
            idempotency_key=idempotency_key,
        )

    # --- payouts -------------------------------------------------------------------------------

    def _payout(self, payout_id: str) -> Json | None:
        if payout_id not in self._payouts:
            try:
                payout: Json | None = self._retry(lambda: self.api.get_payout(payout_id))
            except NotFoundError:
                payout = None
            if len(self._payouts) >= _PAYOUT_CACHE:
                self._payouts.pop(next(iter(self._payouts)))
            self._payouts[payout_id] = payout
        return self._payouts[payout_id]

    def _events_of(self, event: Mapping[str, Any]) -> list[PaymentEvent]:
        kind = (event.get("resource_type"), event.get("action"))
        payout_id = (event.get("links") or {}).get("payout")
        if kind == ("payouts", "paid") and payout_id:
            payout = self._payout(str(payout_id)) or {"id": payout_id}
            linked = self._retry(lambda: list(self.api.events(payout=str(payout_id))))
            paid_out = [e for e in linked if (e.get("resource_type"), e.get("action")) == _PAID_OUT]
            return tf.payout_events(event, payout, paid_out)
        if kind == _PAID_OUT and payout_id:
            return tf.events_from_event(event, payout=self._payout(str(payout_id)))
        if kind[0] == "refunds" and not (event.get("resource_metadata") or {}).get(
            META_AGGREGATE_ID
        ):
            return tf.events_from_event(event, payment_id=self._refunded_payment(event))
        return tf.events_from_event(event)

    def _refunded_payment(self, event: Mapping[str, Any]) -> str | None:
        """The aggregate id of the payment a refund made outside the bus refunds (a refund
        staff made in GoCardless's dashboard carries no paybus metadata, and its events link
        only the refund); None when that payment is not the bus's either.

        Two look-ups (the refund for its payment, the payment for its metadata) per event
        of such a refund: rare, and it keeps those refunds out of the DLQ
        (:mod:`streams.psp_refunds`)."""
        links = event.get("links") or {}
        payment_id = links.get("payment")
        try:
            if not payment_id and links.get("refund"):
                refund = self._retry(lambda: self.api.get_refund(str(links["refund"])))
                payment_id = (refund.get("links") or {}).get("payment")
            if not payment_id:
                return None
            payment = self._retry(lambda: self.api.get_payment(str(payment_id)))
        except NotFoundError:
            return None
        found = (payment.get("metadata") or {}).get(META_AGGREGATE_ID)
        return str(found) if found else None
