"""``X-Paybus-Signature`` checks of ``POST /events/crm`` (pure: no broker)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from streams.agents.crm_ingest import sign, sign_untimed, signature_ok, signature_problem

BODY = b'{"change_id": "chg-1"}'
NOW = 1_800_000_000


def test_a_signature_under_the_secret_is_accepted() -> None:
    header = sign("s3cret", BODY, NOW)
    mac = hmac.new(b"s3cret", f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert header == f"t={NOW},sha256={mac}"
    assert signature_ok("s3cret", BODY, header, now=NOW)
    assert not signature_ok("s3cret", BODY, sign("other", BODY, NOW), now=NOW)
    assert not signature_ok("s3cret", BODY + b" ", header, now=NOW)
    assert not signature_ok("s3cret", BODY, None, now=NOW)


def test_a_replay_outside_the_tolerance_is_refused() -> None:
    header = sign("s3cret", BODY, NOW)
    assert signature_ok("s3cret", BODY, header, now=NOW + 300, tolerance_s=300)
    late = signature_problem("s3cret", BODY, header, now=NOW + 301, tolerance_s=300)
    assert late is not None and "more than 300 s from now" in late
    assert not signature_ok("s3cret", BODY, header, now=NOW - 301, tolerance_s=300)
    # the timestamp is signed: moving it forward breaks the signature
    moved = header.replace(f"t={NOW}", f"t={NOW + 600}")
    assert signature_problem("s3cret", BODY, moved, now=NOW + 600, tolerance_s=300) == (
        "bad X-Paybus-Signature"
    )


def test_the_untimed_form_only_where_allowed() -> None:
    untimed = sign_untimed("s3cret", BODY)
    assert untimed == "sha256=" + hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest()
    problem = signature_problem("s3cret", BODY, untimed, now=NOW, tolerance_s=300)
    assert problem is not None and "needs t=<unix time>" in problem
    assert signature_ok("s3cret", BODY, untimed, now=NOW, allow_untimed=True)


def test_an_empty_secret_accepts_nothing() -> None:
    """An HMAC under an empty key is one anyone can compute: with the secret unset (or set
    empty to "turn the endpoint off"), every forged change would be published."""
    assert not signature_ok("", BODY, sign("", BODY, NOW), now=NOW)
    assert not signature_ok("", BODY, sign_untimed("", BODY), now=NOW, allow_untimed=True)


@pytest.mark.parametrize(
    "header",
    [
        "t=1,sha256=" + "é" * 64,
        f"t={NOW},sha256=\udcff",
        "sha256=ü",
        "t=²,sha256=00",
        "t=,x",
        # signed, but a time int() refuses (over 4,300 digits): refused, not a 500
        "t="
        + "9" * 5000
        + ",sha256="
        + hmac.new(b"s3cret", b"9" * 5000 + b"." + BODY, hashlib.sha256).hexdigest(),
    ],
)
def test_an_odd_header_is_refused_not_a_crash(header: str) -> None:
    # hmac.compare_digest raises TypeError on non-ASCII str: the endpoint answered 500.
    assert not signature_ok("s3cret", BODY, header, now=NOW, allow_untimed=True)
