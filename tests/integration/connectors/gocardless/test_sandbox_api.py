"""The GoCardless sandbox through the real ``gocardless_pro`` client: resources, paging,
errors and idempotency, as a connector will meet them."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import gocardless_pro
import pytest
import requests
from gocardless_pro import errors

from connectors.gocardless.sandbox import RunningSandbox, start_sandbox

from .conftest import TOKEN, make_mandate, make_payment

ACCOUNT_NUMBER = "55779911"
IBAN = "GB60BARC20000055779911"


def test_customer_bank_account_mandate_payment(client: gocardless_pro.Client) -> None:
    mandate = make_mandate(client, metadata={"crm_id": "a0X1"})
    assert mandate.id.startswith("MD")
    assert mandate.status == "pending_submission"
    assert mandate.scheme == "bacs"
    assert mandate.links.customer.startswith("CU")
    assert mandate.links.customer_bank_account.startswith("BA")
    assert mandate.next_possible_charge_date

    account = client.customer_bank_accounts.get(mandate.links.customer_bank_account)
    assert account.account_number_ending == "11"
    assert account.bank_name == "BARCLAYS BANK PLC"
    assert (account.currency, account.country_code) == ("GBP", "GB")

    payment = make_payment(client, mandate.id, reference="INV-1", metadata={"order": "o-1"})
    assert payment.id.startswith("PM")
    assert (payment.amount, payment.currency, payment.status) == (1500, "GBP", "pending_submission")
    assert payment.links.mandate == mandate.id
    assert payment.amount_refunded == 0
    assert payment.charge_date == mandate.next_possible_charge_date
    assert client.payments.get(payment.id).metadata == {"order": "o-1"}

    updated = client.payments.update(payment.id, {"metadata": {"order": "o-2"}})
    assert updated.metadata == {"order": "o-2"}


def test_account_number_and_iban_are_never_echoed_nor_stored(tmp_path: Path) -> None:
    db = tmp_path / "gc.db"
    with start_sandbox(db_path=str(db), token=TOKEN) as sandbox:
        client = gocardless_pro.Client(access_token=TOKEN, base_url=sandbox.base_url)
        customer = client.customers.create({"company_name": "Acme Ltd"})
        gb = client.customer_bank_accounts.create(
            {"account_number": ACCOUNT_NUMBER, "branch_code": "20-00-00", "country_code": "GB",
             "account_holder_name": "ACME", "links": {"customer": customer.id}}
        )  # fmt: skip
        iban = client.customer_bank_accounts.create(
            {"iban": IBAN, "account_holder_name": "ACME", "links": {"customer": customer.id}}
        )
        listed = requests.get(
            f"{sandbox.base_url}/customer_bank_accounts",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        ).text
        events = requests.get(
            f"{sandbox.base_url}/events", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        ).text
    assert gb.account_number_ending == "11" and iban.account_number_ending == "11"
    for text in (json.dumps(gb.attributes), json.dumps(iban.attributes), listed, events):
        assert ACCOUNT_NUMBER not in text and IBAN not in text
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert ACCOUNT_NUMBER.encode() not in raw and IBAN.encode() not in raw


def test_list_paging_over_fifty_items(client: gocardless_pro.Client) -> None:
    created = [client.customers.create({"company_name": f"Co {i}"}).id for i in range(120)]

    first = client.customers.list()
    assert len(first.records) == 50
    assert first.api_response.body["meta"]["limit"] == 50
    assert first.before is None and first.after == first.records[-1].id
    assert [c.id for c in first.records] == created[::-1][:50]  # newest first, like GoCardless

    everything = [c.id for c in client.customers.all(params={"limit": 30})]
    assert everything == created[::-1]

    second = client.customers.list(params={"after": first.after, "limit": 50})
    assert second.before == second.records[0].id
    back = client.customers.list(params={"before": second.before, "limit": 50})
    assert [c.id for c in back.records] == [c.id for c in first.records]
    last = client.customers.list(params={"after": created[1], "limit": 50})
    assert [c.id for c in last.records] == [created[0]] and last.after is None


def test_list_filters(client: gocardless_pro.Client) -> None:
    mandate = make_mandate(client)
    other = make_mandate(client)
    mine = {make_payment(client, mandate.id).id for _ in range(3)}
    make_payment(client, other.id)
    listed = client.payments.list(params={"mandate": mandate.id}).records
    assert {p.id for p in listed} == mine
    by_customer = client.payments.list(params={"customer": mandate.links.customer}).records
    assert {p.id for p in by_customer} == mine
    by_status = client.mandates.list(params={"status": "pending_submission,active"}).records
    assert {m.id for m in by_status} == {mandate.id, other.id}
    with pytest.raises(errors.InvalidApiUsageError):
        client.payments.list(params={"colour": "blue"})


def test_cancel_pending_payment(client: gocardless_pro.Client) -> None:
    payment = make_payment(client, make_mandate(client).id)
    cancelled = client.payments.cancel(payment.id, {"metadata": {"why": "customer asked"}})
    assert cancelled.status == "cancelled"
    events = client.events.list(params={"payment": payment.id}).records
    assert [e.action for e in events] == ["cancelled", "created"]
    assert events[0].metadata == {"why": "customer asked"}
    assert events[0].details.origin == "api"
    with pytest.raises(errors.InvalidStateError) as exc:
        client.payments.cancel(payment.id)
    assert exc.value.errors[0]["reason"] == "cancellation_failed"


def test_cancelling_a_paid_out_payment_is_invalid_state(
    client: gocardless_pro.Client, sandbox: RunningSandbox
) -> None:
    payment = make_payment(client, make_mandate(client).id)
    sandbox.advance(steps=3)
    assert client.payments.get(payment.id).status == "paid_out"
    with pytest.raises(errors.InvalidStateError) as exc:
        client.payments.cancel(payment.id)
    assert exc.value.code == 422
    assert exc.value.type == "invalid_state"
    assert exc.value.errors == [
        {"reason": "cancellation_failed", "message": exc.value.errors[0]["message"]}
    ]
    assert exc.value.request_id and exc.value.documentation_url


def test_mandate_cancel_cascades_to_pending_payments(client: gocardless_pro.Client) -> None:
    mandate = make_mandate(client)
    payment = make_payment(client, mandate.id)
    assert client.mandates.cancel(mandate.id).status == "cancelled"
    assert client.payments.get(payment.id).status == "cancelled"
    with pytest.raises(errors.InvalidStateError) as exc:
        make_payment(client, mandate.id)
    assert exc.value.errors[0]["reason"] == "mandate_is_inactive"


def test_validation_failed_names_the_field(client: gocardless_pro.Client) -> None:
    mandate = make_mandate(client)
    with pytest.raises(errors.ValidationFailedError) as exc:
        client.payments.create({"amount": -5, "links": {"mandate": mandate.id}})
    assert exc.value.code == 422
    fields = {e["field"]: e for e in exc.value.errors}
    assert set(fields) == {"amount", "currency"}
    assert fields["currency"]["request_pointer"] == "/payments/currency"
    assert "amount" in str(exc.value)
    with pytest.raises(errors.ValidationFailedError) as exc:
        client.customer_bank_accounts.create(
            {"account_number": "123", "branch_code": "20000", "account_holder_name": "X",
             "links": {"customer": mandate.links.customer}}
        )  # fmt: skip
    assert {e["field"] for e in exc.value.errors} == {"account_number", "branch_code"}
    with pytest.raises(errors.ValidationFailedError) as exc:
        client.payments.create({"amount": 1, "currency": "GBP", "links": {"mandate": "MD404"}})
    assert exc.value.errors[0]["field"] == "links.mandate"


def test_repeated_idempotency_key_returns_the_original(
    client: gocardless_pro.Client, sandbox: RunningSandbox
) -> None:
    mandate = make_mandate(client)
    key = {"Idempotency-Key": "cmd-event-42"}
    first = make_payment(client, mandate.id)
    original = client.payments.create(
        {"amount": 700, "currency": "GBP", "links": {"mandate": mandate.id}}, headers=dict(key)
    )
    again = client.payments.create(
        {"amount": 700, "currency": "GBP", "links": {"mandate": mandate.id}}, headers=dict(key)
    )
    assert again.id == original.id != first.id
    assert len(client.payments.list().records) == 2

    strict = gocardless_pro.Client(
        access_token=TOKEN, base_url=sandbox.base_url, raise_on_idempotency_conflict=True
    )
    with pytest.raises(errors.IdempotentCreationConflictError) as exc:
        strict.payments.create(
            {"amount": 700, "currency": "GBP", "links": {"mandate": mandate.id}}, headers=key
        )
    assert exc.value.conflicting_resource_id == original.id
    raw = requests.post(
        f"{sandbox.base_url}/payments",
        json={"payments": {"amount": 700, "currency": "GBP", "links": {"mandate": mandate.id}}},
        headers={"Authorization": f"Bearer {TOKEN}", **key},
        timeout=5,
    )
    assert raw.status_code == 409
    assert raw.json()["error"]["errors"][0]["reason"] == "idempotent_creation_conflict"
    assert len(client.payments.list().records) == 2


def test_authentication_and_unknown_paths(sandbox: RunningSandbox) -> None:
    wrong = gocardless_pro.Client(access_token="nope", base_url=sandbox.base_url)
    with pytest.raises(errors.AuthenticationError):
        wrong.payments.list()
    right = gocardless_pro.Client(access_token=TOKEN, base_url=sandbox.base_url)
    with pytest.raises(errors.InvalidApiUsageError) as exc:
        right.payments.get("PM0NOPE")
    assert exc.value.code == 404
    started = time.monotonic()
    with pytest.raises(errors.InvalidApiUsageError):
        right.subscriptions.list()  # not served: a JSON 404, not a retried non-JSON answer
    assert time.monotonic() - started < 1


def test_bank_details_lookup(client: gocardless_pro.Client) -> None:
    gb = client.bank_details_lookups.create(
        {"account_number": ACCOUNT_NUMBER, "branch_code": "200000", "country_code": "GB"}
    )
    assert gb.available_debit_schemes == ["bacs"] and gb.bank_name == "BARCLAYS BANK PLC"
    eur = client.bank_details_lookups.create({"iban": "DE89370400440532013000"})
    assert eur.available_debit_schemes == ["sepa_core"] and eur.bic
    with pytest.raises(errors.ValidationFailedError) as exc:
        client.bank_details_lookups.create({"iban": "DE00370400440532013000"})
    assert exc.value.errors[0]["field"] == "iban"


def test_restart_with_the_same_file_keeps_data(tmp_path: Path) -> None:
    db = str(tmp_path / "sandbox.db")
    with start_sandbox(db_path=db, token=TOKEN) as first:
        client = gocardless_pro.Client(access_token=TOKEN, base_url=first.base_url)
        mandate = make_mandate(client)
        payment = make_payment(client, mandate.id)
        first.advance(days=2)
        clock = first.admin("GET", "/_sandbox/clock")["now"]
        status = client.payments.get(payment.id).status
    with start_sandbox(db_path=db, token=TOKEN) as second:
        client = gocardless_pro.Client(access_token=TOKEN, base_url=second.base_url)
        assert client.payments.get(payment.id).status == status == "confirmed"
        assert second.admin("GET", "/_sandbox/clock")["now"] >= clock
        assert len(list(client.events.all())) == 6
        newer = make_payment(client, mandate.id)
        assert newer.id != payment.id
        second.advance(steps=1)
        assert client.payments.get(payment.id).status == "paid_out"
    with sqlite3.connect(db) as conn:
        count = conn.execute("SELECT COUNT(*) FROM resources WHERE type = 'payments'").fetchone()
    assert count == (2,)


def test_injected_faults_fail_the_next_requests_under_a_path_then_it_recovers(
    sandbox: RunningSandbox, client: gocardless_pro.Client
) -> None:
    from connectors.gocardless.client import map_error
    from connectors.gocardless.sandbox.server import SandboxAdminError

    mandate = make_mandate(client)
    payment = make_payment(client, mandate.id)
    armed = sandbox.inject_faults("/payments/", count=2)
    assert armed == {"id": 1, "path_prefix": "/payments/", "remaining": 2, "status": 503,
                     "method": None}  # fmt: skip
    with pytest.raises(errors.GoCardlessInternalError) as failed:
        client.payments.get(payment.id)
    assert map_error(failed.value).should_retry  # what the connector raises: TransientError
    assert client.mandates.get(mandate.id).id == mandate.id  # another path is served
    with pytest.raises(errors.GoCardlessInternalError):
        client.payments.get(payment.id)
    assert client.payments.get(payment.id).id == payment.id  # used up: served again
    assert sandbox.faults() == {"faults": [], "injected": 2}

    sandbox.inject_faults("/payouts", count=5, status=429, method="get")
    with pytest.raises(errors.RateLimitError):
        list(client.payouts.all())
    assert sandbox.faults()["faults"][0]["remaining"] == 4
    assert sandbox.clear_faults()["faults"] == []
    assert list(client.payouts.all()) == []
    for bad in ({"path_prefix": "payments"}, {"path_prefix": "/_sandbox/"},
                {"path_prefix": "/payments", "status": 404}, {"count": 1}):  # fmt: skip
        with pytest.raises(SandboxAdminError) as refused:
            sandbox.admin("POST", "/_sandbox/faults", bad)
        assert refused.value.status == 400, bad
