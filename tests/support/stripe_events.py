"""Build and sign Stripe events that localstripe never emits, in Stripe's documented shape.

localstripe sends ``payment_intent.succeeded`` / ``payment_intent.payment_failed`` and payout
events; refunds, disputes, cancellations and ``payment_intent.processing`` never produce one.
These helpers build those events (shapes from https://docs.stripe.com/api/events/types and the
object references) around real objects fetched from localstripe where the test has them, and
sign them with the same ``t=...,v1=...`` scheme Stripe and localstripe use.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from connectors.stripe.webhooks import sign


def event(
    kind: str, obj: dict[str, Any], *, event_id: str | None = None, created: int | None = None
) -> dict[str, Any]:
    """A Stripe ``event`` object wrapping ``obj``."""
    return {
        "id": event_id or f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": kind,
    }


def signed(
    evt: dict[str, Any], secret: str, *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The raw body and headers of a webhook request carrying ``evt``."""
    body = json.dumps(evt, indent=2, sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign(body, secret, timestamp),
    }
    return body, headers


def payment_intent(
    pi_id: str,
    *,
    status: str,
    aggregate_id: str = "",
    method: str = "card",
    amount: int = 1500,
    currency: str = "eur",
    last_payment_error: dict[str, Any] | None = None,
    latest_charge: Any = None,
) -> dict[str, Any]:
    """A PaymentIntent object (the fields paybus reads, as Stripe documents them)."""
    metadata = {"paybus_aggregate_id": aggregate_id} if aggregate_id else {}
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "currency": currency,
        "created": int(time.time()),
        "status": status,
        "payment_method_types": ["sepa_debit" if method == "direct_debit" else "card"],
        "metadata": metadata,
        "last_payment_error": last_payment_error,
        "latest_charge": latest_charge,
        "canceled_at": int(time.time()) if status == "canceled" else None,
    }


def charge(
    charge_id: str,
    *,
    payment_intent: str,
    amount: int = 1500,
    amount_refunded: int = 0,
    currency: str = "eur",
    disputed: bool = False,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Charge object."""
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_refunded": amount_refunded,
        "refunded": amount_refunded >= amount,
        "captured": True,
        "currency": currency,
        "disputed": disputed,
        "metadata": metadata or {},
        "paid": True,
        "payment_intent": payment_intent,
        "payment_method_details": {"type": "card"},
        "status": "succeeded",
    }


def refund(
    refund_id: str,
    *,
    payment_intent: str,
    charge_id: str,
    amount: int,
    status: str = "succeeded",
    aggregate_id: str = "",
    payment_id: str = "",
    currency: str = "eur",
    failure_reason: str | None = None,
) -> dict[str, Any]:
    """A Refund object carrying paybus's metadata."""
    metadata = {}
    if aggregate_id:
        metadata = {
            "paybus_aggregate_id": aggregate_id,
            "paybus_aggregate_type": "refund",
            "paybus_refund_id": aggregate_id,
            "paybus_payment_id": payment_id,
        }
    return {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "charge": charge_id,
        "created": int(time.time()),
        "currency": currency,
        "failure_reason": failure_reason,
        "metadata": metadata,
        "payment_intent": payment_intent,
        "status": status,
    }


def dispute(
    dispute_id: str,
    *,
    charge_id: str,
    payment_intent: str,
    amount: int = 1500,
    reason: str = "fraudulent",
) -> dict[str, Any]:
    """A Dispute object (``charge.dispute.created``)."""
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "charge": charge_id,
        "created": int(time.time()),
        "currency": "eur",
        "metadata": {},
        "payment_intent": payment_intent,
        "reason": reason,
        "status": "needs_response",
    }


def payout(
    payout_id: str, *, amount: int, arrival_date: int, status: str = "paid"
) -> dict[str, Any]:
    """A Payout object."""
    return {
        "id": payout_id,
        "object": "payout",
        "amount": amount,
        "arrival_date": arrival_date,
        "automatic": True,
        "currency": "eur",
        "status": status,
    }


def balance_transaction(
    txn_id: str, *, source: Any, amount: int, kind: str = "charge"
) -> dict[str, Any]:
    """A BalanceTransaction (``source`` an id or the expanded charge)."""
    return {
        "id": txn_id,
        "object": "balance_transaction",
        "amount": amount,
        "currency": "eur",
        "net": amount,
        "source": source,
        "type": kind,
    }
