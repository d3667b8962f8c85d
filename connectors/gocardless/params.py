"""Pure mapping of paybus commands onto GoCardless create requests (no I/O).

Kept apart from the event mapping in :mod:`connectors.gocardless.transformers` (which
re-exports these functions) only for size. The metadata written here is what comes back in
every event's ``resource_metadata``, so the normaliser can name the aggregate without its
lookup table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base import require_fields
from connectors.errors import PermanentError
from connectors.gocardless.settings import (
    META_AGGREGATE_ID,
    META_AGGREGATE_TYPE,
    META_MAX_KEY_LEN,
    META_MAX_KEYS,
    META_MAX_VALUE_LEN,
    META_PAYMENT_ID,
    PSP,
)
from streams.records import PaymentCommand

__all__ = ["METHOD", "build_metadata", "mandate_params", "payment_params", "refund_params"]

#: The only method GoCardless collects.
METHOD = "direct_debit"


def build_metadata(
    ours: Mapping[str, str], extra: Mapping[str, str] | None
) -> tuple[dict[str, str], list[str]]:
    """paybus's keys plus as many of the command's own as GoCardless's limits allow.

    GoCardless takes at most 3 keys (50 characters) with values of 500 characters; paybus's
    keys win, then the command's in key order. Returns the metadata and the names of the keys
    left out (names only: values may be personal data).
    """
    metadata = dict(ours)
    dropped: list[str] = []
    for key in sorted(extra or {}):
        value = (extra or {})[key]
        if key in metadata:
            continue
        fits = len(key) <= META_MAX_KEY_LEN and len(value) <= META_MAX_VALUE_LEN
        if fits and len(metadata) < META_MAX_KEYS:
            metadata[key] = value
        else:
            dropped.append(key)
    return metadata, dropped


def _ours(command: PaymentCommand) -> dict[str, str]:
    return {META_AGGREGATE_ID: command.aggregate_id, META_AGGREGATE_TYPE: command.aggregate_type}


def mandate_params(command: PaymentCommand) -> tuple[dict[str, Any], list[str]]:
    """Mandate create params: the command's ``payment_method_ref`` is the bank account token."""
    require_fields(command, PSP, "payment_method_ref")
    metadata, dropped = build_metadata(_ours(command), command.metadata)
    params = {"links": {"customer_bank_account": command.payment_method_ref}, "metadata": metadata}
    return params, dropped


def payment_params(command: PaymentCommand) -> tuple[dict[str, Any], list[str]]:
    """Payment create params: amount in minor units against ``mandate_ref`` on ``charge_date``."""
    require_fields(command, PSP, "amount_minor", "currency", "mandate_ref")
    if command.method not in (None, METHOD):
        raise PermanentError(
            f"gocardless cannot collect method {command.method!r}", psp=PSP, code="invalid_command"
        )
    metadata, dropped = build_metadata(_ours(command), command.metadata)
    params: dict[str, Any] = {
        "amount": command.amount_minor,
        "currency": str(command.currency).upper(),
        "links": {"mandate": command.mandate_ref},
        "metadata": metadata,
    }
    if command.charge_date:
        params["charge_date"] = command.charge_date
    if command.description:
        params["description"] = command.description
    return params, dropped


def refund_params(
    command: PaymentCommand, *, amount: int, refunded_before: int
) -> tuple[dict[str, Any], list[str]]:
    """Refund create params. ``total_amount_confirmation`` (what will have been refunded in
    all) makes GoCardless refuse a second refund even if an idempotency key were lost."""
    require_fields(command, PSP, "psp_object_id")
    ours = {META_AGGREGATE_ID: command.aggregate_id, META_AGGREGATE_TYPE: "refund"}
    if command.payment_id:
        ours[META_PAYMENT_ID] = command.payment_id
    metadata, dropped = build_metadata(ours, command.metadata)
    params = {
        "amount": amount,
        "total_amount_confirmation": refunded_before + amount,
        "links": {"payment": command.psp_object_id},
        "metadata": metadata,
    }
    return params, dropped
