"""Verification and splitting of GoCardless webhook batches (no I/O)."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from typing import Any

import pytest

from connectors.errors import WebhookVerificationError
from connectors.gocardless.webhooks import event_body, parse_events, split, verify_request

SECRET = "whsec-test"


def sign(body: bytes, secret: str = SECRET) -> dict[str, str]:
    return {"Webhook-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def gc(i: int, rtype: str = "payments", **links: str) -> dict[str, Any]:
    link = {"payments": "payment", "mandates": "mandate", "refunds": "refund", "payouts": "payout"}
    return {
        "id": f"EV{i:04d}",
        "created_at": f"2024-05-01T12:00:{i % 60:02d}.000Z",
        "resource_type": rtype,
        "action": "created",
        "links": {link[rtype]: f"{rtype[:2].upper()}{i}", **links},
        "details": {},
        "metadata": {},
        "resource_metadata": {},
    }


def batch(events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"events": events, "meta": {"webhook_id": "WB1"}}).encode()


def test_batch_splits_into_one_unit_per_event_in_order() -> None:
    events = [gc(i) for i in range(50)]
    random.Random(4).shuffle(events)
    body = batch(events)
    units = verify_request(body, sign(body), SECRET)
    assert [u.webhook_id for u in units] == [e["id"] for e in events]
    assert [u.psp_object_id for u in units] == [e["links"]["payment"] for e in events]
    assert [parse_events(u.body) for u in units] == [[e] for e in events]
    # the signature stored beside each unit is the batch's: the unit says its body is not
    assert {u.altered for u in units} == {"one event of the signed batch"}


def test_keys_refund_events_by_their_payment_when_linked() -> None:
    units = split([gc(1, "refunds", payment="PM9"), gc(2, "refunds"), gc(3, "payouts")])
    assert [u.psp_object_id for u in units] == ["PM9", "RE2", "PA3"]


def test_event_repeated_within_a_batch_is_kept_once() -> None:
    units = split([gc(1), gc(2), gc(1)])
    assert [u.webhook_id for u in units] == ["EV0001", "EV0002"]


def test_unit_body_is_canonical() -> None:
    event = gc(1)
    reordered = dict(reversed(list(event.items())))
    assert event_body(event) == event_body(reordered)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        sign(b"other body"),
        sign(batch([gc(1)]), secret="forged"),
        {"Webhook-Signature": "zz" * 32},
        {"Webhook-Signature": "é" * 64},
    ],
    ids=["missing", "other-body", "forged", "not-hex", "non-ascii"],
)
def test_refuses_bad_signatures(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_request(batch([gc(1)]), headers, SECRET)


def test_header_name_is_case_insensitive() -> None:
    body = batch([gc(1)])
    assert verify_request(body, {"webhook-signature": sign(body)["Webhook-Signature"]}, SECRET)


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"events": {}}', b'{"events": [{"id": "EV1"}]}', b"\xff\xfe"],
)
def test_signed_but_malformed_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_request(body, sign(body), SECRET)


def test_oversized_body_is_refused_before_hashing() -> None:
    body = batch([gc(1)]) + b" " * 100
    with pytest.raises(WebhookVerificationError, match="exceeds"):
        verify_request(body, sign(body), SECRET, max_bytes=50)


def test_no_secret_configured_refuses_everything() -> None:
    body = batch([gc(1)])
    with pytest.raises(WebhookVerificationError):
        verify_request(body, sign(body, secret=""), "")
