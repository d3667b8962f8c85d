"""Verification of Stripe webhook requests (``Stripe-Signature: t=<unix>,v1=<hex>``).

Stripe signs ``"<t>.<raw body>"`` with HMAC-SHA256 under the endpoint's signing secret. We check
the same scheme as ``stripe.WebhookSignature.verify_header`` (the unit tests cross-check against
it) but with an injectable clock, a size limit checked *before* hashing, and a refusal of
timestamps too far in the future as well as the past: a replay window only means something if
both edges are enforced. Everything here is pure; the connector passes its settings in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

from connectors.base import VerifiedWebhook, header_value
from connectors.errors import WebhookVerificationError
from connectors.stripe.settings import SIGNATURE_HEADER

__all__ = [
    "MAX_WEBHOOK_BYTES",
    "compute_signature",
    "header_value",
    "parse_event",
    "psp_object_id_of",
    "sign",
    "verify_request",
    "verify_signature",
    "without_secrets",
]

#: Bodies above this are refused unread: Stripe events are a few KiB, and HMAC-ing megabytes
#: from an unauthenticated sender is a cheap denial of service.
MAX_WEBHOOK_BYTES = 256 * 1024

_SCHEME = "v1"

#: Keys whose values let the holder act as the customer: a PaymentIntent's (or SetupIntent's,
#: a Checkout Session's) client secret, which Stripe asks never to be stored or logged. A
#: webhook's object carries it; nothing downstream needs it (a payment page reads the live
#: intent from Stripe), so it is dropped before the body is stored on Kafka.
SECRET_KEYS = frozenset({"client_secret"})


def compute_signature(body: bytes, secret: str, timestamp: int) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value for ``body`` (for tests and local stand-ins)."""
    ts = int(time.time()) if timestamp is None else timestamp
    return f"t={ts},{_SCHEME}={compute_signature(body, secret, ts)}"


def _parse_header(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise WebhookVerificationError("unparseable Stripe-Signature timestamp") from None
        elif key == _SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise WebhookVerificationError("Stripe-Signature has no timestamp")
    if not signatures:
        raise WebhookVerificationError(f"Stripe-Signature has no {_SCHEME} signature")
    return timestamp, signatures


def verify_signature(
    body: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance_s: float,
    now: float | None = None,
    max_bytes: int = MAX_WEBHOOK_BYTES,
) -> int:
    """Check ``header`` signs ``body`` within ``tolerance_s`` of ``now``; return its timestamp.

    Raises :class:`WebhookVerificationError` for an oversized body, a missing or malformed
    header, no matching signature (forged, wrong secret, truncated or altered body) or a
    timestamp outside the tolerance (a replay of an old, validly signed request).
    """
    if len(body) > max_bytes:
        raise WebhookVerificationError(f"webhook body of {len(body)} bytes exceeds {max_bytes}")
    if not header:
        raise WebhookVerificationError(f"missing {SIGNATURE_HEADER} header")
    if not secret:
        raise WebhookVerificationError("no webhook signing secret configured")
    timestamp, signatures = _parse_header(header)
    expected = compute_signature(body, secret, timestamp).encode()
    # Bytes, not str: compare_digest raises TypeError on non-ASCII text (a 500 for any odd
    # byte in the header, which aiohttp hands over surrogate-escaped) instead of a refusal.
    given = [c.encode("utf-8", "surrogatepass") for c in signatures]
    if not any(hmac.compare_digest(expected, candidate) for candidate in given):
        raise WebhookVerificationError("no Stripe-Signature matches the body")
    clock = time.time() if now is None else now
    if abs(clock - timestamp) > tolerance_s:
        raise WebhookVerificationError(
            f"Stripe-Signature timestamp {timestamp} is outside the {tolerance_s:g}s tolerance"
        )
    return timestamp


def parse_event(body: bytes) -> dict[str, Any]:
    """The Stripe event in ``body``; raises if it is not a well-formed event object."""
    try:
        event = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookVerificationError(f"webhook body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("webhook body is not a JSON object")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    event_id = event.get("id")
    if (
        not isinstance(event_id, str)
        or not event_id
        or not isinstance(event.get("type"), str)
        or not isinstance(event.get("created"), int)
        or not isinstance(obj, dict)
        or not isinstance(obj.get("id"), str)
    ):
        raise WebhookVerificationError("webhook body is not a Stripe event")
    return event


def _ref(value: Any) -> str | None:
    """An object reference that Stripe may send as an id or an expanded object."""
    if isinstance(value, str) and value:
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def psp_object_id_of(event: Mapping[str, Any]) -> str:
    """The Kafka key of a Stripe event: the PaymentIntent where the object belongs to one.

    Charges, refunds and disputes carry ``payment_intent``; keying them by it puts everything
    about one payment on one partition, in order, and it is the id the create call linked.
    """
    obj = event["data"]["object"]
    return _ref(obj.get("payment_intent")) or str(obj["id"])


def verify_request(
    body: bytes,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_s: float,
    now: float | None = None,
    max_bytes: int = MAX_WEBHOOK_BYTES,
) -> VerifiedWebhook:
    """Verify one Stripe webhook request (Stripe sends one event per request)."""
    verify_signature(
        body,
        header_value(headers, SIGNATURE_HEADER),
        secret,
        tolerance_s=tolerance_s,
        now=now,
        max_bytes=max_bytes,
    )
    event = parse_event(body)
    stored = without_secrets(body, event)
    return VerifiedWebhook(
        webhook_id=str(event["id"]),
        psp_object_id=psp_object_id_of(event),
        body=stored,
        altered=None if stored is body else "client_secret values removed",
    )


def without_secrets(body: bytes, event: dict[str, Any]) -> bytes:
    """``body`` without the values of :data:`SECRET_KEYS`, at any depth of ``event`` (its
    parsed form). Untouched, byte for byte, when it holds none (the common case, checked on
    the bytes first); otherwise re-encoded from ``event``, minus those keys. The signature was
    checked on the body as sent: what is stored is what the bus needs of it."""
    if not any(f'"{key}"'.encode() in body for key in SECRET_KEYS):
        return body

    def scrub(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: scrub(v) for k, v in value.items() if k not in SECRET_KEYS}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return value

    return json.dumps(scrub(event), separators=(",", ":")).encode()
