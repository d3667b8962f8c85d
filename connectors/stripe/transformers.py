"""Pure mapping between Stripe and paybus: no I/O, no clock, no client.

Stripe objects arrive as plain dicts (webhook JSON, or ``StripeObject.to_dict()``), so the
same functions serve webhooks, command results and status lookups, and the unit tests feed
them documented Stripe shapes directly.

Payment lifecycle (DESIGN.md) from a PaymentIntent's ``status``:

================================  ==============================================
``requires_payment_method``       ``created`` (``failed`` when an attempt failed)
``requires_confirmation``         ``created``
``requires_action``               ``pending_customer_approval`` (3-D Secure etc.)
``requires_capture``              ``pending_submission`` (authorised, not captured)
``processing``                    ``submitted`` (SEPA: with the bank)
``succeeded``                     ``confirmed`` -- or, from its latest charge,
                                  ``charged_back`` / ``refunded`` /
                                  ``partially_refunded``
``canceled``                      ``cancelled``
================================  ==============================================

A SEPA debit that Stripe accepted is already past ``pending_submission`` (a mandatory stage of
direct debits), so a create answer in ``processing`` reports ``pending_submission`` and
``submitted``, and one already ``succeeded`` all three stages, in order.

A payment page's PaymentIntent (``request_payment``) waits for its customer: while open (a
declined card included) it is ``pending_customer_approval``, and its ``payment_intent.created``
yields nothing, left to the command's own event, which carries the page link.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from connectors.base import foreign_marker
from connectors.errors import PermanentError
from connectors.stripe.params import (
    STRIPE_PM_TYPE,
    payment_intent_params,
    payment_page_params,
    refund_params,
)
from connectors.stripe.settings import (
    META_AGGREGATE_ID,
    META_METHOD,
    META_PAGE,
    META_PAYMENT_ID,
    PSP,
)
from streams.records import PaymentEvent
from streams.redaction import redact

__all__ = [
    "PAYMENT_EVENT_STATUS",
    "PAYMENT_INTENT_STATUS",
    "REFUND_EVENT_TYPES",
    "REFUND_STATUS",
    "STRIPE_PM_TYPE",
    "charge_status",
    "events_from_event",
    "is_page",
    "method_of",
    "payment_intent_params",
    "payment_page_params",
    "payment_status",
    "payout_events",
    "refund_params",
    "refund_status",
    "ts",
]


PAYMENT_INTENT_STATUS: Mapping[str, str] = {
    "requires_payment_method": "created",
    "requires_confirmation": "created",
    "requires_action": "pending_customer_approval",
    "requires_capture": "pending_submission",
    "processing": "submitted",
    "succeeded": "confirmed",
    "canceled": "cancelled",
}

#: Webhook event types that state a payment status by themselves.
PAYMENT_EVENT_STATUS: Mapping[str, str] = {
    "payment_intent.created": "created",
    "payment_intent.requires_action": "pending_customer_approval",
    "payment_intent.amount_capturable_updated": "pending_submission",
    "payment_intent.processing": "submitted",
    "payment_intent.succeeded": "confirmed",
    "payment_intent.canceled": "cancelled",
    "payment_intent.payment_failed": "failed",
    "charge.dispute.created": "charged_back",
}

#: Stripe Refund ``status`` -> canonical refund status. A cancelled refund never moved money.
REFUND_STATUS: Mapping[str, str] = {
    "pending": "pending",
    "requires_action": "pending",
    "succeeded": "refunded",
    "failed": "failed",
    "canceled": "failed",
}

REFUND_EVENT_TYPES = frozenset(
    {"refund.created", "refund.updated", "refund.failed", "charge.refund.updated"}
)


def ts(unix: int | float) -> datetime:
    """A Stripe timestamp (unix seconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(int(unix), tz=UTC)


def _ref(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _metadata(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


#: Objects whose metadata says whose they are: Stripe copies a PaymentIntent's metadata to
#: the charge it creates, and paybus writes its own on refunds; a dispute's is never set.
_OWNED_OBJECTS = frozenset({"payment_intent", "charge", "refund"})


def _foreign(obj: Mapping[str, Any]) -> dict[str, str]:
    """The foreign marker of an object another system made (see ``connectors.base``)."""
    if obj.get("object") not in _OWNED_OBJECTS:
        return {}
    return foreign_marker(obj.get("metadata"), META_AGGREGATE_ID)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _currency(obj: Mapping[str, Any]) -> str | None:
    cur = obj.get("currency")
    return cur.upper() if isinstance(cur, str) and cur else None


def method_of(obj: Mapping[str, Any]) -> str | None:
    """Canonical method of a PaymentIntent or Charge: our metadata first, then Stripe's."""
    meta = _metadata(obj).get(META_METHOD)
    if meta in STRIPE_PM_TYPE:
        return str(meta)
    types = obj.get("payment_method_types")
    if isinstance(types, list) and types:
        return "direct_debit" if "sepa_debit" in types else "card"
    details = obj.get("payment_method_details")
    if isinstance(details, Mapping):
        kind = details.get("type")
        if kind == "sepa_debit":
            return "direct_debit"
        if kind == "card":
            return "card"
    return None


# --- Stripe object -> canonical status ---------------------------------------------------------


def charge_status(charge: Mapping[str, Any]) -> str | None:
    """The after-confirmation status a charge implies, or None when it implies nothing more."""
    if charge.get("disputed"):
        return "charged_back"
    amount = _int(charge.get("amount")) or 0
    refunded = _int(charge.get("amount_refunded")) or 0
    if charge.get("refunded") or (amount and refunded >= amount):
        return "refunded"
    if refunded > 0:
        return "partially_refunded"
    return None


def is_page(pi: Mapping[str, Any]) -> bool:
    """Whether a PaymentIntent waits for its customer on a payment page."""
    return _metadata(pi).get(META_PAGE) == "1"


#: PaymentIntent statuses in which a payment page still waits for its customer (a declined
#: card leaves the intent at ``requires_payment_method``: the customer may try another).
PAGE_OPEN = frozenset({"requires_payment_method", "requires_confirmation", "requires_action"})


def payment_status(pi: Mapping[str, Any]) -> str:
    """Canonical payment status of a PaymentIntent (see the module table)."""
    status = str(pi.get("status"))
    if status in PAGE_OPEN and is_page(pi):
        return "pending_customer_approval"
    if status == "requires_payment_method" and pi.get("last_payment_error"):
        return "failed"
    if status == "succeeded":
        charge = pi.get("latest_charge")
        if isinstance(charge, Mapping):
            return charge_status(charge) or "confirmed"
        return "confirmed"
    try:
        return PAYMENT_INTENT_STATUS[status]
    except KeyError:
        raise PermanentError(f"unknown PaymentIntent status {status!r}", psp=PSP) from None


def refund_status(refund: Mapping[str, Any]) -> str:
    """Canonical refund status of a Stripe Refund."""
    status = str(refund.get("status"))
    try:
        return REFUND_STATUS[status]
    except KeyError:
        raise PermanentError(f"unknown Refund status {status!r}", psp=PSP) from None


def _failure_reason(pi: Mapping[str, Any]) -> str | None:
    err = pi.get("last_payment_error")
    if not isinstance(err, Mapping):
        return None
    for key in ("decline_code", "code", "message"):
        if isinstance(err.get(key), str) and err[key]:
            return str(err[key])
    return None


# --- canonical events --------------------------------------------------------------------------


def _payment_event(
    *,
    event_id: str,
    obj: Mapping[str, Any],
    status: str,
    occurred_at: datetime,
    psp_object_id: str,
    aggregate_id: str | None = None,
    amount_minor: int | None = None,
    reason: str | None = None,
    settlement_date: str | None = None,
    attributes: dict[str, str] | None = None,
) -> PaymentEvent:
    return PaymentEvent(
        event_id=event_id,
        aggregate_id=aggregate_id or str(_metadata(obj).get(META_AGGREGATE_ID, "")),
        aggregate_type="payment",
        status=status,
        occurred_at=occurred_at,
        source=PSP,
        method=method_of(obj),
        psp=PSP,
        psp_object_id=psp_object_id,
        amount_minor=amount_minor if amount_minor is not None else _int(obj.get("amount")),
        currency=_currency(obj),
        settlement_date=settlement_date,
        # A decline's or last_payment_error's message is Stripe's free text: redacted, since
        # the event goes onto Kafka (a card number must never).
        reason=redact(reason) if reason else reason,
        attributes={**(attributes or {}), **_foreign(obj)},
    )


def _refund_event(
    *,
    event_id: str,
    refund: Mapping[str, Any],
    occurred_at: datetime,
    aggregate_id: str | None = None,
    payment_id: str | None = None,
) -> PaymentEvent:
    meta = _metadata(refund)
    reason = refund.get("failure_reason")
    return PaymentEvent(
        event_id=event_id,
        aggregate_id=str(meta.get(META_AGGREGATE_ID) or aggregate_id or ""),
        aggregate_type="refund",
        status=refund_status(refund),
        occurred_at=occurred_at,
        source=PSP,
        psp=PSP,
        psp_object_id=str(refund["id"]),
        payment_id=str(meta.get(META_PAYMENT_ID) or payment_id or "") or None,
        amount_minor=_int(refund.get("amount")),
        currency=_currency(refund),
        reason=str(reason) if isinstance(reason, str) else None,
        attributes={
            "stripe_payment_intent": _ref(refund.get("payment_intent")) or "",
            **_foreign(refund),
        },
    )


def events_from_event(event: Mapping[str, Any]) -> list[PaymentEvent]:
    """Canonical events of one Stripe webhook event (``[]`` for types paybus ignores).

    ``payout.paid`` is not handled here: it needs the payout's balance transactions, see
    :func:`payout_events`.
    """
    kind = str(event["type"])
    obj: Mapping[str, Any] = event["data"]["object"]
    event_id = str(event["id"])
    at = ts(event["created"])
    attrs = {"stripe_event_type": kind}
    if kind in REFUND_EVENT_TYPES:
        return [_refund_event(event_id=event_id, refund=obj, occurred_at=at)]
    if kind == "charge.refunded":
        status = charge_status(obj) or "partially_refunded"
        return [
            _payment_event(
                event_id=event_id,
                obj=obj,
                status=status,
                occurred_at=at,
                psp_object_id=_ref(obj.get("payment_intent")) or str(obj["id"]),
                amount_minor=_int(obj.get("amount_refunded")),
                attributes=attrs,
            )
        ]
    if kind == "charge.dispute.created":
        return [
            _payment_event(
                event_id=event_id,
                obj=obj,
                status="charged_back",
                occurred_at=at,
                psp_object_id=_ref(obj.get("payment_intent")) or _ref(obj.get("charge")) or "",
                reason=str(obj["reason"]) if isinstance(obj.get("reason"), str) else None,
                attributes={**attrs, "stripe_dispute": str(obj["id"])},
            )
        ]
    pi_status = PAYMENT_EVENT_STATUS.get(kind)
    if pi_status is None or obj.get("object") != "payment_intent":
        return []
    if is_page(obj) and kind == "payment_intent.created":
        # The request_payment command's own event reports this, carrying the page link for
        # the CRM record; sequenced first, this one would make that event a duplicate and
        # the link would never reach the record (the webhook can beat the command's event).
        return []
    if is_page(obj) and pi_status == "failed":
        pi_status = "pending_customer_approval"  # a declined card: the page offers another try
    return [
        _payment_event(
            event_id=event_id,
            obj=obj,
            status=pi_status,
            occurred_at=at,
            psp_object_id=str(obj["id"]),
            reason=_failure_reason(obj) if pi_status == "failed" else None,
            attributes=attrs,
        )
    ]


def payout_events(
    event: Mapping[str, Any],
    payout: Mapping[str, Any],
    balance_transactions: Iterable[Mapping[str, Any]],
) -> list[PaymentEvent]:
    """``paid_out`` events for every payment settled by a ``payout.paid``.

    ``balance_transactions`` are the payout's transactions (``GET /v1/balance_transactions?
    payout=...``), ideally with ``source`` expanded to the charge so its PaymentIntent and
    metadata are known; an unexpanded source leaves the charge id for the normaliser to
    resolve. The settlement date is the payout's ``arrival_date``. One Stripe event settles
    many payments, so each event id is the Stripe event id plus the payment's PSP id.
    """
    arrival = _int(payout.get("arrival_date"))
    settlement = None if arrival is None else ts(arrival).date().isoformat()
    at = ts(event["created"])
    out: list[PaymentEvent] = []
    for txn in balance_transactions:
        if txn.get("type") not in ("charge", "payment"):
            continue
        source = txn.get("source")
        charge: Mapping[str, Any] = source if isinstance(source, Mapping) else {}
        psp_id = _ref(charge.get("payment_intent")) or _ref(source)
        if psp_id is None:
            continue
        out.append(
            _payment_event(
                event_id=f"{event['id']}:{psp_id}",
                obj={**charge, "currency": txn.get("currency") or charge.get("currency")},
                status="paid_out",
                occurred_at=at,
                psp_object_id=psp_id,
                amount_minor=_int(txn.get("amount")),
                settlement_date=settlement,
                attributes={"stripe_event_type": "payout.paid", "stripe_payout": str(payout["id"])},
            )
        )
    return out
