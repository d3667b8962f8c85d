"""Pure mapping between GoCardless and paybus: no I/O, no clock, no client.

GoCardless events and resources arrive as plain dicts (webhook JSON, the events endpoint, or
the SDK's ``attributes``), so one set of functions serves webhooks, backfill, command results
and status lookups, and the unit tests feed them documented GoCardless shapes directly.

Event ``(resource_type, action)`` -> canonical status (DESIGN.md lifecycles). GoCardless sends
no event when a payment or mandate *enters* ``pending_submission``: ``created`` is that moment
(an API-created debit starts there), so ``created`` maps onto it; otherwise every direct debit
would wait at a gap before the mandatory ``pending_submission`` stage.

==========  ============================================  ===================
type        action                                        canonical
==========  ============================================  ===================
payments    created, customer_approval_granted,           pending_submission
            resubmission_requested
payments    submitted / confirmed / paid_out              same name
payments    failed, late_failure_settled,                 failed
            customer_approval_denied
payments    charged_back, chargeback_settled              charged_back
payments    chargeback_cancelled                          paid_out (after a
                                                          terminal chargeback:
                                                          the sequencer rejects
                                                          it to the DLQ, where
                                                          an operator sees it)
payments    cancelled                                     cancelled
mandates    created, customer_approval_granted,           pending_submission
            customer_approval_skipped,
            resubmission_requested
mandates    submitted                                     submitted
mandates    active, reinstated                            active
mandates    suspended_by_payer                            suspended
mandates    failed, blocked                               failed
mandates    cancelled, replaced                           cancelled
mandates    expired, consumed                             expired
refunds     created                                       created
refunds     paid, refund_settled                          refunded
refunds     failed                                        failed
refunds     funds_returned                                reversed
payouts     paid                                          paid_out of each
                                                          payment in it, with
                                                          the settlement date
==========  ============================================  ===================

Other actions (fees, transfers, notifications) are not lifecycle moves and yield no event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from connectors.base import foreign_marker
from connectors.errors import PermanentError
from connectors.gocardless.params import (
    METHOD,
    build_metadata,
    mandate_params,
    payment_params,
    refund_params,
)
from connectors.gocardless.settings import META_AGGREGATE_ID, META_PAYMENT_ID, PSP
from streams.records import PaymentCommand, PaymentEvent

__all__ = [
    "ACTIONS",
    "AGGREGATE_TYPE",
    "MANDATE_STATUS",
    "PAYMENT_STATUS",
    "REFUND_STATUS",
    "RESOURCE_TYPE",
    "STATUSES",
    "build_metadata",
    "canonical_status",
    "command_event",
    "events_from_event",
    "linked_id",
    "mandate_params",
    "payment_params",
    "payout_events",
    "refund_params",
    "resource_status",
    "ts",
]

#: GoCardless resource type -> paybus aggregate type, and back.
AGGREGATE_TYPE: Mapping[str, str] = {
    "payments": "payment",
    "mandates": "mandate",
    "refunds": "refund",
}
RESOURCE_TYPE: Mapping[str, str] = {v: k for k, v in AGGREGATE_TYPE.items()}
_LINK = {"payments": "payment", "mandates": "mandate", "refunds": "refund", "payouts": "payout"}

_PAYMENT_ACTIONS: Mapping[str, str] = {
    "created": "pending_submission",
    "customer_approval_granted": "pending_submission",
    "resubmission_requested": "pending_submission",
    "submitted": "submitted",
    "confirmed": "confirmed",
    "paid_out": "paid_out",
    "failed": "failed",
    "late_failure_settled": "failed",
    "customer_approval_denied": "failed",
    "charged_back": "charged_back",
    "chargeback_settled": "charged_back",
    "chargeback_cancelled": "paid_out",
    "cancelled": "cancelled",
}
_MANDATE_ACTIONS: Mapping[str, str] = {
    "created": "pending_submission",
    "customer_approval_granted": "pending_submission",
    "customer_approval_skipped": "pending_submission",
    "resubmission_requested": "pending_submission",
    "submitted": "submitted",
    "active": "active",
    "reinstated": "active",
    "suspended_by_payer": "suspended",
    "failed": "failed",
    "blocked": "failed",
    "cancelled": "cancelled",
    "replaced": "cancelled",
    "expired": "expired",
    "consumed": "expired",
}
_REFUND_ACTIONS: Mapping[str, str] = {
    "created": "created",
    "paid": "refunded",
    "refund_settled": "refunded",
    "failed": "failed",
    "funds_returned": "reversed",
}
#: (resource_type, action) -> canonical status, the table above as data.
ACTIONS: Mapping[tuple[str, str], str] = {
    **{("payments", a): s for a, s in _PAYMENT_ACTIONS.items()},
    **{("mandates", a): s for a, s in _MANDATE_ACTIONS.items()},
    **{("refunds", a): s for a, s in _REFUND_ACTIONS.items()},
}

#: Resource ``status`` -> canonical status (status lookups and command answers).
PAYMENT_STATUS: Mapping[str, str] = {
    "pending_customer_approval": "pending_customer_approval",
    "pending_submission": "pending_submission",
    "submitted": "submitted",
    "confirmed": "confirmed",
    "paid_out": "paid_out",
    "cancelled": "cancelled",
    "customer_approval_denied": "failed",
    "failed": "failed",
    "charged_back": "charged_back",
}
MANDATE_STATUS: Mapping[str, str] = {
    "pending_customer_approval": "pending_customer_approval",
    "pending_submission": "pending_submission",
    "submitted": "submitted",
    "active": "active",
    "suspended_by_payer": "suspended",
    "failed": "failed",
    "blocked": "failed",
    "cancelled": "cancelled",
    "expired": "expired",
    "consumed": "expired",
}
REFUND_STATUS: Mapping[str, str] = {
    "created": "created",
    "pending_submission": "pending",
    "submitted": "pending",
    "paid": "refunded",
    "cancelled": "failed",
    "bounced": "failed",
    "failed": "failed",
    "funds_returned": "reversed",
}
STATUSES: Mapping[str, Mapping[str, str]] = {
    "payment": PAYMENT_STATUS,
    "mandate": MANDATE_STATUS,
    "refund": REFUND_STATUS,
}
#: Statuses whose event ``details.cause`` is worth carrying as the canonical ``reason``.
_REASONED = frozenset({"failed", "cancelled", "charged_back", "rejected", "reversed", "suspended"})


def ts(value: str) -> datetime:
    """A GoCardless timestamp (``2024-05-01T12:00:00.123Z``) as an aware datetime."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a zone: {value!r}")
    return parsed


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def canonical_status(resource_type: str, action: str) -> str | None:
    """The canonical status of a GoCardless event, None for actions that are no lifecycle move."""
    return ACTIONS.get((resource_type, action))


def linked_id(event: Mapping[str, Any]) -> str | None:
    """The id of the resource an event is about (``links.payment`` for a payment event...)."""
    link = _LINK.get(str(event.get("resource_type")))
    return _str(_dict(event.get("links")).get(link)) if link else None


def resource_status(aggregate_type: str, resource: Mapping[str, Any]) -> str:
    """Canonical status of a GoCardless payment, mandate or refund resource."""
    status = str(resource.get("status"))
    try:
        return STATUSES[aggregate_type][status]
    except KeyError:
        raise PermanentError(
            f"unknown gocardless {aggregate_type} status {status!r}", psp=PSP, code="unknown_status"
        ) from None


# --- GoCardless event -> canonical events -----------------------------------------------------


def _attributes(event: Mapping[str, Any]) -> dict[str, str]:
    details = _dict(event.get("details"))
    attrs = {"gocardless_event": f"{event.get('resource_type')}.{event.get('action')}"}
    for key in ("cause", "origin", "reason_code", "scheme"):
        if _str(details.get(key)):
            attrs[f"gocardless_{key}"] = str(details[key])
    for key in ("payment", "payout"):
        if _str(_dict(event.get("links")).get(key)):
            attrs[f"gocardless_{key}"] = str(event["links"][key])
    return attrs


def _foreign(event: Mapping[str, Any]) -> dict[str, str]:
    """The foreign marker of an event about a resource another system made: GoCardless
    copies a resource's metadata into each event about it, and every resource paybus makes
    carries its aggregate id there (see ``connectors.base``)."""
    return foreign_marker(event.get("resource_metadata"), META_AGGREGATE_ID)


def events_from_event(
    event: Mapping[str, Any],
    *,
    resource: Mapping[str, Any] | None = None,
    payout: Mapping[str, Any] | None = None,
    aggregate_id: str | None = None,
    payment_id: str | None = None,
) -> list[PaymentEvent]:
    """The canonical event of one GoCardless event (``[]`` for actions paybus ignores).

    ``aggregate_id`` comes from the event's ``resource_metadata`` (written by paybus at
    create time) unless given; without either it stays empty for the normaliser's lookup.
    ``resource`` (a command's answer) adds amount and currency, which events do not carry;
    ``payout`` (for ``payments.paid_out``) adds its ``arrival_date`` as the settlement date.
    ``payouts.paid`` is not handled here: it needs the payout's payments, see
    :func:`payout_events`.
    """
    rtype = str(event.get("resource_type"))
    status = canonical_status(rtype, str(event.get("action")))
    psp_object_id = linked_id(event)
    if status is None or psp_object_id is None or rtype not in AGGREGATE_TYPE:
        return []
    meta = _dict(event.get("resource_metadata"))
    details = _dict(event.get("details"))
    res = _dict(resource)
    settlement = None
    if status == "paid_out" and payout is not None:
        settlement = _str(payout.get("arrival_date"))
    currency = _str(res.get("currency"))
    return [
        PaymentEvent(
            event_id=str(event["id"]),
            aggregate_id=aggregate_id or _str(meta.get(META_AGGREGATE_ID)) or "",
            aggregate_type=AGGREGATE_TYPE[rtype],
            status=status,
            occurred_at=ts(str(event["created_at"])),
            source=PSP,
            method=METHOD if rtype == "payments" else None,
            psp=PSP,
            psp_object_id=psp_object_id,
            payment_id=(payment_id or _str(meta.get(META_PAYMENT_ID)))
            if rtype == "refunds"
            else None,
            amount_minor=_int(res.get("amount")),
            currency=currency.upper() if currency else None,
            settlement_date=settlement,
            reason=_str(details.get("cause")) if status in _REASONED else None,
            attributes={
                **_attributes(event),
                **({} if aggregate_id or payment_id else _foreign(event)),
            },
        )
    ]


def payout_events(
    event: Mapping[str, Any], payout: Mapping[str, Any], paid_out: Iterable[Mapping[str, Any]]
) -> list[PaymentEvent]:
    """``payouts.paid``: a ``paid_out`` event with the settlement date for each payment in it.

    ``paid_out`` are the payments' own ``paid_out`` events linking this payout (they carry the
    payment id and its ``resource_metadata``). Ids are ``<payout event id>:<payment id>``:
    stable across redelivery and backfill, and distinct from the payment's own event, so
    whichever of the two reaches the sequencer first carries the settlement date.
    """
    at = ts(str(event["created_at"]))
    settlement = _str(payout.get("arrival_date"))
    payout_id = str(payout.get("id") or linked_id(event) or "")
    out: list[PaymentEvent] = []
    seen: set[str] = set()
    for payment_event in paid_out:
        payment = linked_id(payment_event)
        if payment is None or payment in seen or payment_event.get("resource_type") != "payments":
            continue
        seen.add(payment)
        meta = _dict(payment_event.get("resource_metadata"))
        out.append(
            PaymentEvent(
                event_id=f"{event['id']}:{payment}",
                aggregate_id=_str(meta.get(META_AGGREGATE_ID)) or "",
                aggregate_type="payment",
                status="paid_out",
                occurred_at=at,
                source=PSP,
                method=METHOD,
                psp=PSP,
                psp_object_id=payment,
                settlement_date=settlement,
                attributes={
                    "gocardless_event": "payouts.paid",
                    "gocardless_payout": payout_id,
                    **_foreign(payment_event),
                },
            )
        )
    return out


def command_event(
    command: PaymentCommand,
    aggregate_type: str,
    resource: Mapping[str, Any],
    *,
    occurred_at: datetime,
) -> PaymentEvent:
    """A canonical event from a command's answer when GoCardless has no event for it (yet).

    Its id derives from the command id and status, so re-executing the command yields the
    same id. The connector prefers the GoCardless event itself (same id as its webhook).
    """
    status = resource_status(aggregate_type, resource)
    currency = _str(resource.get("currency"))
    return PaymentEvent(
        event_id=f"{command.command_id}:{status}",
        aggregate_id=command.aggregate_id,
        aggregate_type=aggregate_type,
        status=status,
        occurred_at=occurred_at,
        source=PSP,
        method=METHOD if aggregate_type == "payment" else None,
        psp=PSP,
        psp_object_id=str(resource["id"]),
        payment_id=command.payment_id if aggregate_type == "refund" else None,
        amount_minor=_int(resource.get("amount")),
        currency=currency.upper() if currency else None,
        attributes={"gocardless_event": "command_answer"},
    )
