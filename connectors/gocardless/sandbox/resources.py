"""Validation and creation of the resources a connector creates through the API.

Each ``create_*`` checks its params the way GoCardless does (422 ``validation_failed`` naming
the field, 422 ``invalid_state`` for a linked object in the wrong state), then writes the
resource and its ``created`` event. Bank details are checked and then thrown away: only the
last two digits of an account number or IBAN are ever stored or returned, as GoCardless does,
and as paybus promises for anything that could reach Kafka or a CRM.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .clock import DAY_MS, format_date, format_ms
from .errors import invalid_state, validation_failed
from .lifecycle import CREDITOR_ID, Engine
from .store import Json

SCHEME_CURRENCY = {
    "bacs": "GBP", "sepa_core": "EUR", "autogiro": "SEK", "betalingsservice": "DKK",
    "becs": "AUD", "becs_nz": "NZD", "pad": "CAD", "ach": "USD",
}  # fmt: skip
CURRENCY_SCHEME = {v: k for k, v in SCHEME_CURRENCY.items()}
COUNTRY_CURRENCY = {"GB": "GBP", "SE": "SEK", "DK": "DKK", "AU": "AUD", "NZ": "NZD",
                    "CA": "CAD", "US": "USD"}  # fmt: skip
SORT_CODE_BANKS = {"20": ("BARCLAYS BANK PLC", "BARCGB22"), "40": ("HSBC UK BANK PLC", "HBUKGB4B"),
                   "60": ("NATIONAL WESTMINSTER BANK PLC", "NWBKGB2L"),
                   "30": ("LLOYDS BANK PLC", "LOYDGB2L"), "77": ("LLOYDS BANK PLC", "LOYDGB2L"),
                   "09": ("SANTANDER UK PLC", "ABBYGB2L")}  # fmt: skip
CUSTOMER_FIELDS = ("email", "given_name", "family_name", "company_name", "address_line1",
                   "address_line2", "address_line3", "city", "region", "postal_code",
                   "country_code", "language", "phone_number")  # fmt: skip


class Checker:
    """Collects field problems so one 422 names every bad field, like GoCardless."""

    def __init__(self, envelope: str, params: Json) -> None:
        self.envelope = envelope
        self.params = params
        self.problems: list[tuple[str, str, str]] = []

    def fail(self, field: str, message: str, reason: str = "invalid") -> None:
        self.problems.append((field, message, reason))

    def text(self, field: str, required: bool = False, max_len: int = 255) -> str | None:
        value = self.params.get(field)
        if value is None or value == "":
            if required:
                self.fail(field, "is required", "required")
            return None
        if not isinstance(value, str) or len(value) > max_len:
            self.fail(field, f"must be a string of at most {max_len} characters")
            return None
        return value

    def link(self, name: str) -> str | None:
        links = self.params.get("links")
        value = links.get(name) if isinstance(links, dict) else None
        if not isinstance(value, str) or not value:
            self.fail(f"links.{name}", "is required", "required")
            return None
        return value

    def metadata(self) -> Json:
        value = self.params.get("metadata", {})
        ok = isinstance(value, dict) and len(value) <= 3
        ok = ok and all(
            isinstance(k, str) and len(k) <= 50 and isinstance(v, str) and len(v) <= 500
            for k, v in value.items()
        )
        if not ok:
            self.fail(
                "metadata", "must be up to 3 string keys (50 chars) with string values (500 chars)"
            )
            return {}
        return dict(value)

    def amount(self, field: str = "amount") -> int:
        value = self.params.get(field)
        if value is None:
            self.fail(field, "is required", "required")
        elif not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            self.fail(field, "must be a positive integer (in the currency's minor unit)")
        else:
            return value
        return 0

    def done(self) -> None:
        if self.problems:
            raise validation_failed(self.envelope, self.problems)


def _linked(engine: Engine, rtype: str, rid: str | None, check: Checker, name: str) -> Json:
    record = engine.store.get(rtype, rid) if rid else None
    if rid and record is None:
        check.fail(f"links.{name}", "was not found", "not_found")
    check.done()
    assert record is not None
    return record.data


def _created(engine: Engine, rtype: str, data: Json, outcome: str | None = None) -> Json:
    """Stamp, store and (for lifecycle objects) announce a new resource."""
    with engine.store.transaction():
        now = engine.clock.stamp()
        data["created_at"] = format_ms(now)
        status = data.get("status")
        due = engine.due_after(rtype, status, outcome, now) if status else None
        engine.store.insert(rtype, data, outcome, due)
        if rtype in {"payments", "mandates", "refunds"}:
            engine.record_event(rtype, data, "created")
        engine.save_clock()
    return data


def create_customer(engine: Engine, params: Json) -> Json:
    check = Checker("customers", params)
    fields = {f: check.text(f) for f in CUSTOMER_FIELDS}
    if not fields["company_name"] and not (fields["given_name"] and fields["family_name"]):
        check.fail("given_name", "is required unless company_name is given", "required")
    email = fields["email"]
    if email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
        check.fail("email", "is invalid")
    metadata = check.metadata()
    check.done()
    data: Json = {"id": engine.store.new_id("CU"), **fields, "metadata": metadata}
    data["language"] = data["language"] or "en"
    return _created(engine, "customers", data)


def check_bank_details(check: Checker) -> tuple[str, str, str, tuple[str, str]]:
    """Validate GB account number + sort code, or an IBAN (mod-97), keeping nothing of them
    but (country, currency, last two digits, (bank name, BIC))."""
    iban = check.params.get("iban")
    if isinstance(iban, str) and iban:
        compact = iban.replace(" ", "").upper()
        if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", compact) or not _iban_ok(compact):
            check.fail("iban", "is invalid")
            return "", "", "", ("", "")
        country = compact[:2]
        currency = COUNTRY_CURRENCY.get(country, "EUR")
        default = ("SANDBOX BANK", f"SNDB{country}2X")
        bank = SORT_CODE_BANKS.get(compact[8:10], default) if country == "GB" else default
        return country, currency, compact[-2:], bank
    number = str(check.params.get("account_number") or "").replace(" ", "").replace("-", "")
    sort_code = str(check.params.get("branch_code") or "").replace(" ", "").replace("-", "")
    country = str(check.params.get("country_code") or "GB").upper()
    if not number:
        check.fail("account_number", "is required unless iban is given", "required")
    elif country == "GB" and not re.fullmatch(r"\d{8}", number):
        check.fail("account_number", "is the wrong length (should be 8 characters)")
    if country == "GB" and not re.fullmatch(r"\d{6}", sort_code):
        check.fail("branch_code", "is the wrong length (should be 6 characters)")
    bank = SORT_CODE_BANKS.get(sort_code[:2], ("SANDBOX BANK", "SNDBGB2X"))
    return country, COUNTRY_CURRENCY.get(country, "EUR"), number[-2:], bank


def _iban_ok(iban: str) -> bool:
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    return int(digits) % 97 == 1


def create_customer_bank_account(engine: Engine, params: Json) -> Json:
    check = Checker("customer_bank_accounts", params)
    holder = check.text("account_holder_name", required=True, max_len=18)
    country, currency, ending, (bank_name, _bic) = check_bank_details(check)
    wanted = check.text("currency")
    metadata = check.metadata()
    customer = _linked(engine, "customers", check.link("customer"), check, "customer")
    data: Json = {
        "id": engine.store.new_id("BA"),
        "account_holder_name": holder,
        "account_number_ending": ending,
        "account_type": None,
        "bank_name": bank_name,
        "country_code": country,
        "currency": wanted or currency,
        "enabled": True,
        "metadata": metadata,
        "links": {"customer": customer["id"]},
    }
    return _created(engine, "customer_bank_accounts", data)


def lookup_bank_details(params: Json) -> Json:
    check = Checker("bank_details_lookups", params)
    _country, currency, _ending, (bank_name, bic) = check_bank_details(check)
    check.done()
    scheme = CURRENCY_SCHEME.get(currency, "sepa_core")
    return {"available_debit_schemes": [scheme], "bank_name": bank_name, "bic": bic}


def create_mandate(engine: Engine, params: Json) -> Json:
    check = Checker("mandates", params)
    scheme = check.text("scheme")
    reference = check.text("reference")
    metadata = check.metadata()
    account = _linked(
        engine, "customer_bank_accounts", check.link("customer_bank_account"), check,
        "customer_bank_account",
    )  # fmt: skip
    scheme = scheme or CURRENCY_SCHEME.get(account["currency"], "sepa_core")
    if SCHEME_CURRENCY.get(scheme) != account["currency"]:
        check.fail("scheme", f"is not available for a {account['currency']} bank account")
    check.done()
    if not account["enabled"]:
        raise invalid_state("bank_account_disabled", "The customer bank account is disabled")
    outcome = engine.outcome_from("mandates", metadata)
    rid = engine.store.new_id("MD")
    data: Json = {
        "id": rid,
        "reference": reference or f"SANDBOX-{rid[-7:]}",
        "status": "pending_submission",
        "scheme": scheme,
        "next_possible_charge_date": format_date(engine.clock.now_ms() + 3 * DAY_MS),
        "payments_require_approval": False,
        "metadata": metadata,
        "links": {
            "customer_bank_account": account["id"],
            "creditor": CREDITOR_ID,
            "customer": account["links"]["customer"],
        },
    }
    return _created(engine, "mandates", data, outcome)


def create_payment(engine: Engine, params: Json) -> Json:
    check = Checker("payments", params)
    amount = check.amount()
    currency = check.text("currency", required=True)
    charge_date = check.text("charge_date")
    reference = check.text("reference", max_len=140)
    description = check.text("description")
    metadata = check.metadata()
    if charge_date and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", charge_date):
        check.fail("charge_date", "must be a date (YYYY-MM-DD)")
    mandate = _linked(engine, "mandates", check.link("mandate"), check, "mandate")
    if currency and currency != SCHEME_CURRENCY.get(mandate["scheme"]):
        check.fail("currency", f"must be {SCHEME_CURRENCY.get(mandate['scheme'])} for this mandate")
    earliest = mandate["next_possible_charge_date"]
    if charge_date and charge_date < earliest:
        check.fail(
            "charge_date",
            f"must be on or after the mandate's next_possible_charge_date ({earliest})",
        )
    check.done()
    if mandate["status"] in {"failed", "cancelled", "expired", "consumed", "blocked"}:
        raise invalid_state("mandate_is_inactive", f"The mandate is {mandate['status']}")
    outcome = engine.outcome_from("payments", metadata)
    data: Json = {
        "id": engine.store.new_id("PM"),
        "charge_date": charge_date or earliest,
        "amount": amount,
        "amount_refunded": 0,
        "currency": currency,
        "description": description,
        "reference": reference,
        "status": "pending_submission",
        "scheme": mandate["scheme"],
        "retry_if_possible": bool(params.get("retry_if_possible", False)),
        "metadata": metadata,
        "links": {"mandate": mandate["id"], "creditor": CREDITOR_ID},
    }
    return _created(engine, "payments", data, outcome)


def create_refund(engine: Engine, params: Json) -> Json:
    check = Checker("refunds", params)
    amount = check.amount()
    confirmation = params.get("total_amount_confirmation")
    reference = check.text("reference")
    metadata = check.metadata()
    record = engine.store.get("payments", check.link("payment") or "")
    if check.problems == [] and record is None:
        check.fail("links.payment", "was not found", "not_found")
    check.done()
    assert record is not None
    payment = record.data
    if payment["status"] not in {"confirmed", "paid_out"}:
        raise invalid_state("refund_payment_invalid_state", f"The payment is {payment['status']}")
    if amount > payment["amount"] - payment["amount_refunded"]:
        raise invalid_state(
            "available_refund_amount_insufficient", "The refund exceeds what is left of the payment"
        )
    if confirmation is not None and confirmation != payment["amount_refunded"] + amount:
        raise invalid_state(
            "total_amount_confirmation_invalid",
            "total_amount_confirmation does not match the refunded total",
        )
    outcome = engine.outcome_from("refunds", metadata)
    data: Json = {
        "id": engine.store.new_id("RF"),
        "amount": amount,
        "currency": payment["currency"],
        "reference": reference,
        "status": "created",
        "metadata": metadata,
        "links": {"payment": payment["id"], "mandate": payment["links"]["mandate"]},
    }
    with engine.store.transaction():
        payment["amount_refunded"] += amount
        engine.store.save(record)
        return _created(engine, "refunds", data, outcome)


def update(engine: Engine, rtype: str, rid: str, params: Json) -> Json | None:
    """PUT: metadata everywhere, plus the contact fields of a customer."""
    record = engine.store.get(rtype, rid)
    if record is None:
        return None
    check = Checker(rtype, params)
    changes: Json = {}
    if "metadata" in params:
        changes["metadata"] = check.metadata()
    if rtype == "customers":
        changes.update({f: check.text(f) for f in CUSTOMER_FIELDS if f in params})
    unknown = sorted(set(params) - set(changes))
    for field in unknown:
        check.fail(field, "cannot be updated", "not_updatable")
    check.done()
    record.data.update(changes)
    engine.store.save(record)
    return record.data


CREATORS: dict[str, Callable[[Engine, Json], Json]] = {
    "customers": create_customer,
    "customer_bank_accounts": create_customer_bank_account,
    "mandates": create_mandate,
    "payments": create_payment,
    "refunds": create_refund,
}
