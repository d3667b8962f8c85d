"""Verification of GoCardless webhook requests, and splitting a batch into one unit per event.

GoCardless POSTs ``{"events": [...], "meta": {"webhook_id": ...}}`` with header
``Webhook-Signature`` = hex HMAC-SHA256 of the raw body under the endpoint's secret, and no
timestamp (so there is no replay window to enforce: a replayed batch only repeats event ids,
which the sequencer drops). The signature is checked by ``gocardless_pro.webhooks.parse``
itself, after a size limit that keeps an unauthenticated sender from making us hash megabytes.

A verified batch is split into one :class:`~connectors.base.VerifiedWebhook` per event: its
``webhook_id`` is the event id (stable across GoCardless's redeliveries, unlike the batch's
id), its ``psp_object_id`` the resource the event is about -- for a refund event the payment
when the event links it, so a payment and its refunds share a partition -- and its body the
event alone, re-serialised canonically so the same event always yields the same bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from gocardless_pro import webhooks as gc_webhooks
from gocardless_pro.errors import InvalidSignatureError

from connectors.base import VerifiedWebhook, header_value
from connectors.errors import WebhookVerificationError
from connectors.gocardless.settings import SIGNATURE_HEADER
from connectors.gocardless.transformers import linked_id

__all__ = [
    "MAX_WEBHOOK_BYTES",
    "event_body",
    "header_value",
    "parse_events",
    "psp_object_id_of",
    "split",
    "verify_request",
]

#: Default size limit: a full GoCardless batch (up to 250 events) is well under this.
MAX_WEBHOOK_BYTES = 256 * 1024

#: A hex HMAC-SHA256. Checked before the SDK compares it: ``hmac.compare_digest`` raises
#: TypeError on non-ASCII text, which must never be mistaken for anything but a bad signature.
_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")


def _valid_event(event: Any) -> bool:
    return (
        isinstance(event, dict)
        and isinstance(event.get("id"), str)
        and bool(event["id"])
        and isinstance(event.get("resource_type"), str)
        and isinstance(event.get("action"), str)
        and isinstance(event.get("created_at"), str)
        and isinstance(event.get("links"), dict)
    )


def parse_events(body: bytes) -> list[dict[str, Any]]:
    """The events of a GoCardless webhook body; raises if it is not a well-formed batch."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookVerificationError(f"webhook body is not JSON: {exc}") from None
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list) or not all(_valid_event(e) for e in events):
        raise WebhookVerificationError("webhook body is not a GoCardless event batch")
    return events


def psp_object_id_of(event: Mapping[str, Any]) -> str:
    """The Kafka key of an event: its resource, or the payment a refund event links."""
    links = event.get("links")
    payment = links.get("payment") if isinstance(links, dict) else None
    if event.get("resource_type") == "refunds" and isinstance(payment, str) and payment:
        return payment
    return linked_id(event) or str(event["id"])


def event_body(event: Mapping[str, Any]) -> bytes:
    """One event as a one-event batch, canonically serialised (the unit's body)."""
    return json.dumps({"events": [event]}, sort_keys=True, separators=(",", ":")).encode()


def split(events: list[dict[str, Any]]) -> list[VerifiedWebhook]:
    """One unit per event, in batch order; an event repeated within the batch is kept once."""
    units: list[VerifiedWebhook] = []
    seen: set[str] = set()
    for event in events:
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        units.append(
            VerifiedWebhook(
                webhook_id=event["id"],
                psp_object_id=psp_object_id_of(event),
                body=event_body(event),
                altered="one event of the signed batch",
            )
        )
    return units


def verify_request(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    max_bytes: int = MAX_WEBHOOK_BYTES,
) -> list[VerifiedWebhook]:
    """Verify one GoCardless webhook request and split it into per-event units.

    Raises :class:`WebhookVerificationError` for an oversized body, a missing signature, a
    signature that does not match (forged, wrong secret, truncated or altered body) or a body
    that is not an event batch.
    """
    if len(body) > max_bytes:
        raise WebhookVerificationError(f"webhook body of {len(body)} bytes exceeds {max_bytes}")
    signature = header_value(headers, SIGNATURE_HEADER)
    if not signature:
        raise WebhookVerificationError(f"missing {SIGNATURE_HEADER} header")
    if not _SIGNATURE.fullmatch(signature.strip()):
        raise WebhookVerificationError(f"{SIGNATURE_HEADER} is not a hex HMAC-SHA256")
    if not secret:
        raise WebhookVerificationError("no webhook secret configured")
    try:
        gc_webhooks.parse(body, secret, signature.strip().lower())
    except InvalidSignatureError:
        raise WebhookVerificationError(f"{SIGNATURE_HEADER} does not match the body") from None
    except (ValueError, KeyError, TypeError):
        # Only reachable after the signature matched (the SDK verifies before decoding): a
        # signed body that is not an event batch. parse_events below refuses it.
        pass
    return split(parse_events(body))
