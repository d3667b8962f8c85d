"""Pure mapping of paybus commands onto Stripe create requests (no I/O).

Kept apart from the event and status mapping in :mod:`connectors.stripe.transformers` (which
re-exports these functions) only for size, as the GoCardless connector does. The metadata
written here comes back on every PaymentIntent and Refund event, so the normaliser can name
the aggregate without its lookup table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base import require_fields
from connectors.errors import PermanentError
from connectors.stripe.settings import (
    META_AGGREGATE_ID,
    META_AGGREGATE_TYPE,
    META_METHOD,
    META_PAGE,
    META_PAYMENT_ID,
    META_REFUND_ID,
    PSP,
)
from streams.records import PaymentCommand

__all__ = ["STRIPE_PM_TYPE", "payment_intent_params", "payment_page_params", "refund_params"]

#: Stripe PaymentMethod type per canonical method.
STRIPE_PM_TYPE: Mapping[str, str] = {"card": "card", "direct_debit": "sepa_debit"}


def payment_intent_params(command: PaymentCommand) -> dict[str, Any]:
    """PaymentIntent create params: an off-session charge of a saved card or SEPA mandate."""
    require_fields(command, PSP, "amount_minor", "currency", "payment_method_ref")
    method = command.method or "card"
    if method not in STRIPE_PM_TYPE:
        raise PermanentError(
            f"stripe cannot collect method {method!r}", psp=PSP, code="invalid_command"
        )
    metadata = {
        # the page marker is the bus's to set (a page's declines are no failures): not the CRM's
        **{k: v for k, v in (command.metadata or {}).items() if k != META_PAGE},
        META_AGGREGATE_ID: command.aggregate_id,
        META_AGGREGATE_TYPE: command.aggregate_type,
        META_METHOD: method,
    }
    params: dict[str, Any] = {
        "amount": command.amount_minor,
        "currency": str(command.currency).lower(),
        "payment_method": command.payment_method_ref,
        "payment_method_types": [STRIPE_PM_TYPE[method]],
        "confirm": True,
        "off_session": True,
        "metadata": metadata,
    }
    if command.customer_ref:
        params["customer"] = command.customer_ref
    if command.description:
        params["description"] = command.description
    if method == "direct_debit" and command.mandate_ref:
        params["mandate"] = command.mandate_ref
    return params


def payment_page_params(command: PaymentCommand) -> dict[str, Any]:
    """PaymentIntent create params for a payment page: not confirmed, no payment method; the
    customer's browser confirms it with their card (Stripe.js), so no card reaches the bus."""
    require_fields(command, PSP, "amount_minor", "currency")
    if (command.method or "card") != "card":
        raise PermanentError(
            "a payment page takes cards; ask direct debits for a mandate instead",
            psp=PSP,
            code="invalid_command",
        )
    params: dict[str, Any] = {
        "amount": command.amount_minor,
        "currency": str(command.currency).lower(),
        "payment_method_types": ["card"],
        "metadata": {
            **(command.metadata or {}),
            META_AGGREGATE_ID: command.aggregate_id,
            META_AGGREGATE_TYPE: command.aggregate_type,
            META_METHOD: "card",
            META_PAGE: "1",
        },
    }
    if command.customer_ref:
        params["customer"] = command.customer_ref
    if command.description:
        params["description"] = command.description
    return params


def refund_params(command: PaymentCommand) -> dict[str, Any]:
    """Refund create params: full when the command has no amount, partial otherwise."""
    require_fields(command, PSP, "psp_object_id")
    payment_id = command.payment_id or ""
    params: dict[str, Any] = {
        "payment_intent": command.psp_object_id,
        "metadata": {
            **(command.metadata or {}),
            META_AGGREGATE_ID: command.aggregate_id,
            META_AGGREGATE_TYPE: "refund",
            META_REFUND_ID: command.aggregate_id,
            META_PAYMENT_ID: payment_id,
        },
    }
    if command.amount_minor is not None:
        params["amount"] = command.amount_minor
    return params
