"""Stripe-Signature verification, cross-checked against stripe-python's own implementation."""

from __future__ import annotations

import json

import pytest
import stripe

from connectors.errors import WebhookVerificationError
from connectors.stripe.webhooks import (
    MAX_WEBHOOK_BYTES,
    parse_event,
    sign,
    verify_request,
    verify_signature,
)

SECRET = "whsec_unit"
NOW = 1_700_000_000
BODY = json.dumps(
    {
        "id": "evt_1",
        "type": "charge.refunded",
        "created": NOW,
        "data": {"object": {"id": "ch_1", "object": "charge", "payment_intent": "pi_1"}},
    }
).encode()


def test_our_signature_verifies_with_stripe_python_and_vice_versa() -> None:
    header = sign(BODY, SECRET, NOW)
    assert stripe.WebhookSignature.verify_header(BODY, header, SECRET, tolerance=None)
    theirs = stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET, NOW)
    assert verify_signature(BODY, theirs, SECRET, tolerance_s=300, now=NOW) == NOW


def test_accepts_any_matching_v1_among_several() -> None:
    good = sign(BODY, SECRET, NOW).split(",")[1]
    header = f"t={NOW},v1={'0' * 64},{good},v0=legacy"
    assert verify_signature(BODY, header, SECRET, tolerance_s=300, now=NOW) == NOW


@pytest.mark.parametrize(
    ("body", "header", "match"),
    [
        (BODY, None, "missing"),
        (BODY, "", "missing"),
        (BODY, f"v1={'a' * 64}", "timestamp"),
        (BODY, f"t={NOW}", "signature"),
        (BODY, f"t=abc,v1={'a' * 64}", "timestamp"),
        (BODY, sign(BODY, "whsec_other", NOW), "matches"),
        (BODY[:-1], sign(BODY, SECRET, NOW), "matches"),
        (BODY + b" ", sign(BODY, SECRET, NOW), "matches"),
        (BODY, sign(BODY, SECRET, NOW - 301), "tolerance"),
        (BODY, sign(BODY, SECRET, NOW + 301), "tolerance"),
    ],
    ids=[
        "no-header",
        "empty-header",
        "no-t",
        "no-v1",
        "bad-t",
        "wrong-secret",
        "truncated",
        "appended",
        "stale",
        "future",
    ],
)
def test_refusals(body: bytes, header: str | None, match: str) -> None:
    with pytest.raises(WebhookVerificationError, match=match):
        verify_signature(body, header, SECRET, tolerance_s=300, now=NOW)


def test_within_tolerance_edge_is_accepted() -> None:
    assert verify_signature(BODY, sign(BODY, SECRET, NOW - 300), SECRET, tolerance_s=300, now=NOW)


def test_oversized_body_refused_before_hashing() -> None:
    big = b"x" * (MAX_WEBHOOK_BYTES + 1)
    with pytest.raises(WebhookVerificationError, match="exceeds"):
        verify_signature(big, sign(big, SECRET, NOW), SECRET, tolerance_s=300, now=NOW)


def test_empty_secret_refused() -> None:
    with pytest.raises(WebhookVerificationError, match="secret"):
        verify_signature(BODY, sign(BODY, "", NOW), "", tolerance_s=300, now=NOW)


def test_verify_request_keys_by_payment_intent_and_reads_header_case_insensitively() -> None:
    unit = verify_request(
        BODY, {"stripe-signature": sign(BODY, SECRET, NOW)}, SECRET, tolerance_s=300, now=NOW
    )
    assert (unit.webhook_id, unit.psp_object_id, unit.body) == ("evt_1", "pi_1", BODY)


@pytest.mark.parametrize(
    "body", [b"not json", b"[]", b'{"id": "evt_1"}', b'{"id":"e","type":"t","created":1,"data":{}}']
)
def test_malformed_events_are_refused(body: bytes) -> None:
    with pytest.raises(WebhookVerificationError):
        parse_event(body)


@pytest.mark.parametrize("candidate", ["é" * 64, "\udcff" * 64, "ü"])
def test_a_non_ascii_signature_is_a_bad_signature_not_a_crash(candidate: str) -> None:
    """``hmac.compare_digest`` raises TypeError on non-ASCII text; the receiver would answer
    500 with a traceback in the log instead of 400 (aiohttp decodes header bytes with
    surrogateescape, so any byte can arrive)."""
    with pytest.raises(WebhookVerificationError, match="no Stripe-Signature matches"):
        verify_signature(BODY, f"t={NOW},v1={candidate}", SECRET, tolerance_s=300, now=NOW)


def test_a_payment_intents_client_secret_is_never_stored() -> None:
    """Stripe asks that a client secret never be stored or logged: the body published to
    Kafka drops it (anywhere in the event), and keeps everything else."""
    pi = {
        "id": "pi_1", "object": "payment_intent", "client_secret": "pi_1_secret_abc",
        "metadata": {"paybus_aggregate_id": "pay-1"},
        "latest_charge": {"id": "ch_1", "nested": [{"client_secret": "seti_1_secret_x"}]},
    }  # fmt: skip
    event = {"id": "evt_2", "type": "payment_intent.created", "created": NOW,
             "data": {"object": pi}}  # fmt: skip
    body = json.dumps(event).encode()
    stored = verify_request(body, {"stripe-signature": sign(body, SECRET, NOW)}, SECRET,
                            tolerance_s=300, now=NOW)  # fmt: skip
    assert b"secret_" not in stored.body and b"client_secret" not in stored.body
    assert stored.altered == "client_secret values removed"
    kept = json.loads(stored.body)
    del pi["client_secret"], pi["latest_charge"]["nested"][0]["client_secret"]  # type: ignore[attr-defined]
    assert kept == event


def test_a_body_without_secrets_is_stored_byte_for_byte() -> None:
    stored = verify_request(BODY, {"stripe-signature": sign(BODY, SECRET, NOW)}, SECRET,
                            tolerance_s=300, now=NOW)  # fmt: skip
    assert stored.body is BODY and stored.altered is None
