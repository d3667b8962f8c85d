"""Canonical events from what a command's own Stripe call returned (pure, no I/O).

The webhook that follows says the same thing later; the ids derive from the command id and the
status, so re-executing a command (Stripe replays the answer for the same idempotency key)
yields the same events, which the sequencer drops as duplicates. Kept apart from the webhook
mapping in :mod:`connectors.stripe.transformers` for size; the building blocks live there.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from connectors.stripe.settings import META_METHOD
from connectors.stripe.transformers import (
    _failure_reason,
    _int,
    _payment_event,
    _refund_event,
    method_of,
    payment_status,
    refund_status,
    ts,
)
from streams.records import PaymentCommand, PaymentEvent

__all__ = ["command_events", "decline_events", "refunded_payment_events"]


def refunded_payment_events(
    command: PaymentCommand, pi: Mapping[str, Any], *, occurred_at: datetime
) -> list[PaymentEvent]:
    """The payment's own move after a refund command: ``partially_refunded`` or ``refunded``.

    Stripe reports it on the charge (``charge.refunded``); deriving it from the PaymentIntent
    right after the refund lets the CRM show the payment's new state without waiting for a
    webhook. The id derives from the command, so a re-executed refund repeats, never adds.
    """
    status = payment_status(pi)
    if status not in ("partially_refunded", "refunded") or not command.payment_id:
        return []
    return [
        _payment_event(
            event_id=f"{command.command_id}:payment:{status}",
            obj=pi,
            status=status,
            occurred_at=occurred_at,
            psp_object_id=str(pi["id"]),
            aggregate_id=command.payment_id,
        )
    ]


def command_events(
    command: PaymentCommand, obj: Mapping[str, Any], *, fallback_at: datetime
) -> list[PaymentEvent]:
    """Canonical events from the object a command's call returned (PaymentIntent or Refund).

    Ids derive from the command id and status, so re-executing the command (the PSP replays
    the same answer for the same idempotency key) yields the same events, which the sequencer
    drops as duplicates. ``occurred_at`` is the object's own time where Stripe gives one.
    """
    if obj.get("object") == "refund":
        return [
            _refund_event(
                event_id=f"{command.command_id}:{refund_status(obj)}",
                refund=obj,
                occurred_at=ts(obj["created"]) if _int(obj.get("created")) else fallback_at,
                aggregate_id=command.aggregate_id,
                payment_id=command.payment_id,
            )
        ]
    status = payment_status(obj)
    if status == "cancelled" and _int(obj.get("canceled_at")):
        at = ts(obj["canceled_at"])
    elif command.operation in ("create_payment", "request_payment") and _int(obj.get("created")):
        at = ts(obj["created"])
    else:
        at = fallback_at
    statuses = [status]
    if method_of(obj) == "direct_debit" and status in ("submitted", "confirmed"):
        # Stripe has no "queued for the bank" state for SEPA: an accepted debit has passed the
        # mandatory pending_submission (and, once succeeded, submitted) stages. Report them, in
        # stage order at one timestamp, rather than leave the sequencer a gap to reconcile.
        statuses = ["pending_submission", "submitted", status][: 2 if status == "submitted" else 3]
    return [
        _payment_event(
            event_id=f"{command.command_id}:{s}",
            obj=obj,
            status=s,
            occurred_at=at,
            psp_object_id=str(obj["id"]),
            aggregate_id=command.aggregate_id,
            reason=_failure_reason(obj) if s == "failed" else None,
        )
        for s in statuses
    ]


def decline_events(
    command: PaymentCommand,
    pi: Mapping[str, Any] | None,
    *,
    reason: str | None,
    fallback_at: datetime,
) -> list[PaymentEvent]:
    """The ``failed`` event of a synchronous decline (Stripe's CardError on confirm)."""
    obj: Mapping[str, Any] = pi or {
        "amount": command.amount_minor,
        "currency": command.currency,
        "metadata": {META_METHOD: command.method or "card"},
    }
    at = ts(obj["created"]) if _int(obj.get("created")) else fallback_at
    return [
        _payment_event(
            event_id=f"{command.command_id}:failed",
            obj=obj,
            status="failed",
            occurred_at=at,
            psp_object_id=str(obj.get("id") or ""),
            aggregate_id=command.aggregate_id,
            reason=reason or _failure_reason(obj),
        )
    ]
