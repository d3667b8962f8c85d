"""CRM intents -> PSP commands: validation and the command's shape. Pure, no I/O.

A change that cannot become a command is not dropped: the router turns the reason into a
``failed`` event for the aggregate, so the CRM record shows why.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streams.redaction import screen
from streams.routing import (
    METHODS,
    GatewayConfig,
    RoutingError,
    RoutingRule,
    choose_gateway,
    is_currency,
)

INTENTS = {
    "create_payment": "payment",
    "request_payment": "payment",  # the customer pays on a payment page (streams/pages.py)
    "create_mandate": "mandate",
    "cancel": None,
    "refund": "refund",
}
MAX_AMOUNT_MINOR = 10**12


class IntentError(ValueError):
    """Why a CRM change cannot become a command (shown on the CRM record)."""


@dataclass(frozen=True)
class Routed:
    """A valid intent: the command fields and the gateway that takes it."""

    gateway: GatewayConfig
    command: dict[str, Any]


def command_id(change_id: str, operation: str) -> str:
    """Derived from the change id, so a re-published change yields the same command id, the
    same PSP idempotency key, and so never a second charge."""
    return "cmd-" + hashlib.sha256(f"{change_id}:{operation}".encode()).hexdigest()[:32]


def _amount(change: Mapping[str, Any], *, required: bool) -> int | None:
    amount = change.get("amount_minor")
    if amount is None:
        if required:
            raise IntentError("amount_minor is required")
        return None
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise IntentError(f"amount_minor must be a whole number of minor units, got {amount!r}")
    if amount <= 0:
        raise IntentError(f"amount_minor must be positive, got {amount}")
    if amount > MAX_AMOUNT_MINOR:
        raise IntentError(f"amount_minor {amount} is above the limit {MAX_AMOUNT_MINOR}")
    return amount


def _currency(change: Mapping[str, Any]) -> str:
    currency = change.get("currency")
    if not isinstance(currency, str) or not is_currency(currency):
        raise IntentError(f"currency must be an ISO 4217 code such as EUR, got {currency!r}")
    return currency


def check_intent(change: Mapping[str, Any]) -> None:
    """Raise IntentError if ``change`` (a CrmChange as a dict) can never become a command,
    whatever the bus's gateways and rules: an unknown intent, a wrong aggregate type, a bad
    amount or currency, a missing reference the PSP needs.

    A record holding a card number or IBAN anywhere is refused first (DESIGN.md: those never
    travel on Kafka; the CRM poller masks them before publishing, which is refused here too).
    Publishers run this before sending (a record that could only fail is refused at the
    source, with its reason); the router runs it again, then the checks that depend on the
    bus's configuration (which gateway takes it), which a publisher cannot know.
    """
    found, masked = screen(change)
    if found:
        # Never quote the value: this message is shown, logged and written to the CRM.
        raise IntentError(
            f"{', '.join(found)} holds a card or bank account number; send a token instead"
        )
    if masked:  # metadata entries too: they reach the PSP
        raise IntentError(
            f"{', '.join(masked)} held a card or bank account number (masked before it was "
            "published); send a token instead"
        )
    intent = change.get("intent")
    if intent not in INTENTS:
        raise IntentError(f"unknown intent {intent!r}; expected one of {', '.join(INTENTS)}")
    expected_type = INTENTS[intent]
    agg_type = change.get("aggregate_type")
    if expected_type is not None and agg_type != expected_type:
        raise IntentError(f"intent {intent} needs aggregate_type {expected_type}, got {agg_type!r}")
    if intent == "create_payment":
        method = change.get("method") or "card"
        if method not in METHODS:
            raise IntentError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        _amount(change, required=True)
        _currency(change)
        if method == "direct_debit" and not change.get("mandate_ref"):
            raise IntentError("a direct debit needs mandate_ref (the PSP mandate id)")
        if method == "card" and not change.get("payment_method_ref"):
            raise IntentError("a card payment needs payment_method_ref (a saved card token)")
    elif intent == "request_payment":
        if (change.get("method") or "card") != "card":
            raise IntentError("a payment page takes cards; a direct debit needs a mandate")
        _amount(change, required=True)
        _currency(change)
    elif intent == "create_mandate":
        if not change.get("payment_method_ref"):
            raise IntentError("a mandate needs payment_method_ref (the bank account token)")
    elif intent == "refund":
        if not change.get("payment_id"):
            raise IntentError("a refund needs payment_id (the payment to refund)")
        if _amount(change, required=False) is not None:
            _currency(change)


def route(
    change: Mapping[str, Any],
    *,
    known_gateway: str | None,
    gateways: Sequence[GatewayConfig],
    rules: Sequence[RoutingRule],
    now: datetime,
    pages: bool = True,
) -> Routed:
    """Validate ``change`` (a CrmChange as a dict) and build its command, or raise IntentError.

    ``known_gateway`` is the gateway the aggregate (or, for a refund, its payment) was routed to
    before; cancellations and refunds must go where the payment went. ``pages``: whether
    payment pages are served (``request_payment`` needs them).
    """
    check_intent(change)
    intent = str(change["intent"])
    if intent == "request_payment" and not pages:
        raise IntentError(
            "payment pages are off: set PAYBUS_PAGES__PUBLIC_URL to where customers reach the "
            "web role"
        )
    by_name = {g.name: g for g in gateways}
    command: dict[str, Any] = {
        "command_id": command_id(str(change["change_id"]), intent),
        "aggregate_id": change["aggregate_id"],
        "aggregate_type": change.get("aggregate_type"),
        "operation": intent,
        "issued_at": now,
        "change_id": change["change_id"],
        "crm_record_id": change.get("crm_record_id"),
        "customer_ref": change.get("customer_ref"),
        "payment_method_ref": change.get("payment_method_ref"),
        "mandate_ref": change.get("mandate_ref"),
        "payment_id": change.get("payment_id"),
        "charge_date": change.get("charge_date"),
        "description": change.get("description"),
        "reason": change.get("reason"),
        "metadata": dict(change.get("metadata") or {}),
    }
    if intent in ("create_payment", "request_payment"):
        method = change.get("method") or "card"
        amount = _amount(change, required=True)
        currency = _currency(change)
        assert amount is not None
        try:
            gateway = choose_gateway(
                method=method, currency=currency, amount_minor=amount,
                country=change.get("country"), explicit=change.get("gateway"),
                gateways=gateways, rules=rules,
            )  # fmt: skip
        except RoutingError as exc:
            raise IntentError(str(exc)) from None
        command.update(amount_minor=amount, currency=currency, method=method)
        return Routed(gateway, {**command, "psp": gateway.connector})
    if intent == "create_mandate":
        name = change.get("gateway") or known_gateway or "gocardless"
    else:
        if intent == "refund":
            amount = _amount(change, required=False)
            command.update(amount_minor=amount)
            if amount is not None:
                command.update(currency=_currency(change))
        name = change.get("gateway") or known_gateway
        if not name:
            raise IntentError(f"{intent}: the payment's gateway is unknown; name it on the record")
    chosen = by_name.get(name)
    if chosen is None:
        raise IntentError(f"gateway {name!r} is not configured")
    return Routed(chosen, {**command, "psp": chosen.connector})
