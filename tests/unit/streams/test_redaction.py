"""Card and bank account numbers are masked wherever free text enters a record."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from streams.agents.common import failed_event
from streams.agents.crm_ingest import parse_changes
from streams.agents.crm_source import mask_sensitive
from streams.codec import AvroCodec
from streams.deadletters import make_dead_letter
from streams.errors import ValidationError
from streams.intents import IntentError, check_intent
from streams.redaction import MASK, redact, sensitive_fields


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("card 4242 4242 4242 4242 declined", "4242 4242 4242 4242"),
        ("pan=4242-4242-4242-4242", "4242-4242-4242-4242"),
        ("card_4242424242424242 refused", "4242424242424242"),  # \b missed it after "_"
        ("No such PaymentMethod: '4000056655665556'", "4000056655665556"),
        ("iban GB82 WEST 1234 5698 7654 32 closed", "WEST 1234"),
        ("iban gb82west12345698765432 is invalid", "gb82west12345698765432"),  # lower case
        ("NO93 8601 1117 947", "8601 1117 947"),  # the shortest IBAN
        ("sort code 20-00-00 account number 55779911 closed", "55779911"),
        ("sort code 20-00-00 account number 55779911 closed", "20-00-00"),
        ("bank account: 5577 9911 cannot be debited", "5577 9911"),
    ],
)
def test_numbers_are_masked(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked and MASK in masked


@pytest.mark.parametrize(
    "text",
    [
        "insufficient_funds (code 51)",
        "record a01000000000042AAA is locked",  # a Salesforce id keeps its digit run
        "mandate MD0000XH9A3T4C cancelled",
        "occurred at 2026-11-22T10:00:00Z, amount 1250 EUR",
        "ab12cdefghij",
    ],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert redact(text) == text


def test_a_failed_events_reason_is_redacted_before_it_reaches_kafka() -> None:
    event = failed_event(
        event_id="cmd-1:failed", aggregate_id="pay-1", aggregate_type="payment",
        reason="stripe refused create_payment: No such PaymentMethod: '4242424242424242'",
        source="stripe",
    )  # fmt: skip
    assert event.reason is not None and "4242424242424242" not in event.reason


def test_a_dead_letters_reason_and_error_log_are_redacted() -> None:
    letter = make_dead_letter(
        topic="paybus.commands.gocardless", partition=0, offset=7, key=b"k", value=b"v",
        stage="connector:gocardless", reason="iban GB82WEST12345698765432 refused",
        error_log=["attempt 1: card 4242 4242 4242 4242", "attempt 2: account 55779911"],
    )  # fmt: skip
    text = letter.reason + "\n".join(letter.error_log)
    for secret in ("GB82WEST12345698765432", "4242 4242 4242 4242", "55779911"):
        assert secret not in text
    assert letter.value == b"v"  # the original record stays untouched for replay


# --- CRM changes: tokens only, never numbers ------------------------------------------------

CHANGE = {
    "change_id": "chg-1", "aggregate_id": "pay-1", "aggregate_type": "payment",
    "intent": "create_payment", "occurred_at": "2026-11-22T10:00:00Z", "source": "crm",
    "amount_minor": 1250, "currency": "EUR", "method": "card",
    "payment_method_ref": "pm_card_visa", "description": "order 1234567890123456",
    "metadata": {},
}  # fmt: skip


def test_only_checksummed_numbers_make_a_field_sensitive() -> None:
    assert sensitive_fields(CHANGE) == []  # a 16-digit order number failing Luhn's check
    card = {**CHANGE, "payment_method_ref": "4242 4242 4242 4242"}
    iban = {**CHANGE, "metadata": {"note": "gb82 west 1234 5698 7654 32"}}
    assert sensitive_fields(card) == ["payment_method_ref"]
    assert sensitive_fields(iban) == ["metadata.note"]


@pytest.mark.parametrize(
    "generated",
    [
        "sf-4503061425706138c45c3ee8",  # the poller's change id: a Luhn-valid run of 16
        "sf-dd401a50c50253a895d13828",  # ... or a mod-97-valid IBAN shape
        "53033190-7660-45b1-99e1-7b552e94525c",  # a UUID: 5303 3190 7660 4 passes Luhn
    ],
)
def test_a_generated_id_is_not_taken_for_a_card_number(generated: str) -> None:
    # about 1 in 1,000 hashes and UUIDs hold a checksum-valid run by chance: refusing (or
    # masking) one failed a genuine payment as "holds a card or bank account number"
    ids = {"change_id": generated, "aggregate_id": generated, "crm_record_id": generated,
           "payment_id": generated, "mandate_id": generated}  # fmt: skip
    assert sensitive_fields({**CHANGE, **ids}) == []
    check_intent({**CHANGE, **ids})
    assert mask_sensitive({**CHANGE, **ids}) == {**CHANGE, **ids}


def test_an_id_that_is_a_card_number_or_iban_is_still_refused() -> None:
    card = {**CHANGE, "aggregate_id": "4242 4242 4242 4242"}
    iban = {**CHANGE, "crm_record_id": "GB82WEST12345698765432"}
    assert sensitive_fields(card) == ["aggregate_id"]
    assert sensitive_fields(iban) == ["crm_record_id"]


def test_an_intent_carrying_a_card_number_is_refused_without_quoting_it() -> None:
    with pytest.raises(IntentError) as caught:
        check_intent({**CHANGE, "payment_method_ref": "4242424242424242"})
    assert "payment_method_ref" in str(caught.value) and "4242" not in str(caught.value)


def test_the_poller_masks_a_card_number_and_the_router_refuses_the_change() -> None:
    change = {**CHANGE, "payment_method_ref": "4242-4242-4242-4242", "crm_record_id": "a01"}
    masked = mask_sensitive(change)
    assert "4242" not in str(masked) and masked["description"] == CHANGE["description"]
    with pytest.raises(IntentError, match="payment_method_ref held a card"):
        check_intent(masked)
    assert mask_sensitive(CHANGE) is CHANGE


def test_a_card_number_masked_in_metadata_is_refused_too() -> None:
    # metadata goes to the PSP's metadata: the router must fail the change, not create a
    # payment at the PSP while the CRM record never learns what to fix
    change = {**CHANGE, "metadata": {"note": "card 4242 4242 4242 4242"}, "crm_record_id": "a1"}
    masked = mask_sensitive(change)
    assert "4242" not in str(masked)
    with pytest.raises(IntentError, match=r"metadata\.note held a card"):
        check_intent(masked)


def test_the_ingest_endpoint_refuses_a_card_number_before_publishing() -> None:
    app = SimpleNamespace(avro=AvroCodec())
    body = json.dumps([CHANGE, {**CHANGE, "payment_method_ref": "4242424242424242"}]).encode()
    with pytest.raises(ValidationError, match="record 1: payment_method_ref holds a card") as e:
        parse_changes(app, body)  # type: ignore[arg-type]
    assert "4242" not in str(e.value)
    assert len(parse_changes(app, json.dumps(CHANGE).encode())) == 1  # type: ignore[arg-type]
