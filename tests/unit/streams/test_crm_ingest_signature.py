"""``X-Paybus-Signature`` checks of ``POST /events/crm`` (pure: no broker)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from streams.agents.crm_ingest import sign, signature_ok

BODY = b'{"change_id": "chg-1"}'


def test_a_signature_under_the_secret_is_accepted() -> None:
    assert signature_ok("s3cret", BODY, sign("s3cret", BODY))
    assert not signature_ok("s3cret", BODY, sign("other", BODY))
    assert not signature_ok("s3cret", BODY, None)


def test_an_empty_secret_accepts_nothing() -> None:
    """An HMAC under an empty key is one anyone can compute: with the secret unset (or set
    empty to "turn the endpoint off"), every forged change would be published."""
    forged = "sha256=" + hmac.new(b"", BODY, hashlib.sha256).hexdigest()
    assert forged == sign("", BODY)
    assert not signature_ok("", BODY, forged)


@pytest.mark.parametrize("header", ["sha256=" + "é" * 64, "sha256=\udcff", "sha256=ü"])
def test_a_non_ascii_signature_is_refused_not_a_crash(header: str) -> None:
    # hmac.compare_digest raises TypeError on non-ASCII str: the endpoint answered 500.
    assert not signature_ok("s3cret", BODY, header)
