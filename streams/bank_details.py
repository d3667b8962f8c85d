"""The ``POST /bank-details`` request: parsed and validated before any PSP call. Pure, no I/O.

DESIGN.md promises that bank account numbers never travel on Kafka nor reach the CRM (the
SmarterPay seed: bank details go to the payment platform first, the CRM only keeps what is
left without the sensitive parts). So the one place a number exists inside paybus is this
request, on its way to the PSP. Every check here names the *field* that is wrong and never
quotes its value: an error message is answered to the caller, counted and maybe logged, and
a value in it would be the leak this module exists to prevent. For the same reason the
request's ``repr`` leaves the bank details out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schwifty import IBAN
from schwifty.exceptions import (
    InvalidChecksumDigits,
    InvalidCountryCode,
    InvalidLength,
    SchwiftyException,
)

__all__ = ["CUSTOMER_FIELDS", "BankDetailsRequest", "FieldError", "parse_request"]

#: What a caller may say about a new PSP customer (GoCardless's names for them).
CUSTOMER_FIELDS = frozenset(
    {
        "email", "given_name", "family_name", "company_name", "address_line1", "address_line2",
        "address_line3", "city", "region", "postal_code", "country_code", "language",
        "phone_number",
    }
)  # fmt: skip
_KNOWN = frozenset(
    {
        "account_holder_name", "iban", "sort_code", "account_number", "customer_id",
        "customer", "reference", "psp",
    }
)  # fmt: skip
_SEPARATORS = re.compile(r"[\s-]")
#: A reference becomes part of the PSP idempotency key: keep it to safe characters.
_REFERENCE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
_PSP = re.compile(r"[a-z][a-z0-9_]{0,39}")
_MAX_TEXT = 255


class FieldError(ValueError):
    """A request field that cannot be used: ``field`` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field} {message}")
        self.field = field
        self.message = f"{field} {message}"


@dataclass(frozen=True)
class BankDetailsRequest:
    """Validated bank details and who they belong to (``repr`` shows no bank detail)."""

    account_holder_name: str
    psp: str = "gocardless"
    iban: str | None = field(default=None, repr=False)
    sort_code: str | None = field(default=None, repr=False)
    account_number: str | None = field(default=None, repr=False)
    customer_id: str | None = None
    customer: Mapping[str, str] | None = field(default=None, repr=False)
    #: The caller's id for this submission (a form id): a retried call registers nothing twice.
    reference: str | None = None

    def connector_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the connector's ``register_bank_account``."""
        return {
            "account_holder_name": self.account_holder_name,
            "iban": self.iban,
            "sort_code": self.sort_code,
            "account_number": self.account_number,
            "customer_id": self.customer_id,
            "customer": dict(self.customer) if self.customer else None,
            "idempotency_key": f"paybus-bank-details:{self.reference}" if self.reference else None,
        }


def _text(body: Mapping[str, Any], name: str, *, max_len: int = _MAX_TEXT) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise FieldError(name, "must be a string")
    value = value.strip()
    if not value:
        return None
    if len(value) > max_len:
        raise FieldError(name, f"must be at most {max_len} characters")
    return value


def _iban(value: str) -> str:
    """The compact IBAN, or a FieldError saying which check failed (never the value)."""
    try:
        return IBAN(value).compact
    except InvalidChecksumDigits:
        raise FieldError("iban", "has wrong check digits (not a valid IBAN)") from None
    except InvalidLength:
        raise FieldError("iban", "has the wrong length for its country") from None
    except InvalidCountryCode:
        raise FieldError("iban", "starts with an unknown country code") from None
    except SchwiftyException:
        raise FieldError("iban", "is not a valid IBAN") from None


def _local(sort_code: str | None, account_number: str | None) -> tuple[str, str]:
    if not sort_code:
        raise FieldError("sort_code", "is required with account_number (or give an iban)")
    if not account_number:
        raise FieldError("account_number", "is required with sort_code (or give an iban)")
    branch = _SEPARATORS.sub("", sort_code)
    number = _SEPARATORS.sub("", account_number)
    if not re.fullmatch(r"\d{6}", branch):
        raise FieldError("sort_code", "must be 6 digits")
    if not re.fullmatch(r"\d{8}", number):
        raise FieldError("account_number", "must be 8 digits")
    return branch, number


def _customer(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise FieldError("customer", "must be an object")
    out: dict[str, str] = {}
    for key, item in value.items():
        if key not in CUSTOMER_FIELDS:
            raise FieldError(f"customer.{key}", "is not a customer field")
        if not isinstance(item, str) or len(item) > _MAX_TEXT:
            raise FieldError(f"customer.{key}", f"must be a string of at most {_MAX_TEXT} chars")
        if item.strip():
            out[key] = item.strip()
    return out or None


def parse_request(body: bytes) -> BankDetailsRequest:
    """Parse and validate a request body; raise :class:`FieldError` naming the bad field."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FieldError("body", "is not JSON") from None
    if not isinstance(data, dict):
        raise FieldError("body", "must be a JSON object")
    unknown = sorted(set(data) - _KNOWN)
    if unknown:
        raise FieldError(unknown[0], "is not a field of a bank details request")
    holder = _text(data, "account_holder_name")
    if holder is None:
        raise FieldError("account_holder_name", "is required")
    iban = _text(data, "iban", max_len=64)
    sort_code = _text(data, "sort_code", max_len=16)
    account_number = _text(data, "account_number", max_len=32)
    if iban and (sort_code or account_number):
        raise FieldError("iban", "cannot be given together with sort_code/account_number")
    if iban:
        iban = _iban(iban)
    elif sort_code or account_number:
        sort_code, account_number = _local(sort_code, account_number)
    else:
        raise FieldError("iban", "is required (or sort_code and account_number)")
    customer_id = _text(data, "customer_id", max_len=64)
    customer = _customer(data.get("customer"))
    if customer_id and customer:
        raise FieldError("customer", "cannot be given together with customer_id")
    reference = _text(data, "reference", max_len=100)
    if reference is not None and not _REFERENCE.fullmatch(reference):
        raise FieldError("reference", "may hold only letters, digits and _ . : -")
    psp = _text(data, "psp", max_len=40) or "gocardless"
    if not _PSP.fullmatch(psp):
        raise FieldError("psp", "is not a connector name")
    return BankDetailsRequest(
        account_holder_name=holder,
        psp=psp,
        iban=iban,
        sort_code=sort_code,
        account_number=account_number,
        customer_id=customer_id,
        customer=customer,
        reference=reference,
    )
