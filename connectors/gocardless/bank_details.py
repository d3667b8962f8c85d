"""Bank details to a GoCardless token, without the CRM ever holding an account number.

DESIGN.md: bank account numbers never travel on Kafka nor reach the CRM. So an upstream
system that collects bank details (a sign-up form, a call-centre tool) calls
:func:`register_bank_account` directly: the details are validated (an IBAN's checksum with
schwifty, GB sort code and account number by shape, then GoCardless's own
``bank_details_lookups``), sent straight to GoCardless to create the customer (when none is
given) and the customer bank account, and only two things come back: the token (the customer
bank account id, which a ``create_mandate`` command names as its ``payment_method_ref``) and a
masked form (``****1234``) fit for a CRM field or a log line.

Nothing here logs, stores or returns the full number, and errors name fields, never values:
our own validation errors are raised ``from None`` so not even a chained exception (schwifty's
messages quote the IBAN) carries them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schwifty import IBAN
from schwifty.exceptions import SchwiftyException

from connectors.errors import PermanentError
from connectors.gocardless.client import GoCardlessApi
from connectors.gocardless.settings import PSP

__all__ = ["BankAccountToken", "BankDetailsError", "mask", "register_bank_account"]

#: Bacs account holder names are cut to 18 characters by GoCardless; we cut them first, so the
#: request is valid everywhere (the sandbox refuses longer ones).
_BACS_HOLDER_MAX = 18
_SEPARATORS = re.compile(r"[\s-]")


class BankDetailsError(PermanentError):
    """Bank details that cannot be used; the message names the field, never its value."""


@dataclass(frozen=True)
class BankAccountToken:
    """What registering bank details returns: a token and a masked form, nothing else."""

    #: The GoCardless customer bank account id (``BA...``): a mandate's ``payment_method_ref``.
    token: str
    #: ``****`` and the last four characters of the account number or IBAN.
    masked: str


def mask(number: str) -> str:
    """``****`` plus the last four characters of a compacted number."""
    compact = _SEPARATORS.sub("", number)
    return "****" + compact[-4:]


def _invalid(field: str, why: str) -> BankDetailsError:
    return BankDetailsError(f"{field} {why}", psp=PSP, code="invalid_bank_details")


def _details(
    iban: str | None, sort_code: str | None, account_number: str | None
) -> tuple[dict[str, str], str]:
    """The GoCardless bank-detail params and the account's country, validated locally."""
    if iban and (sort_code or account_number):
        raise _invalid(
            "bank details", "must be an IBAN or a sort code and account number, not both"
        )
    if iban:
        try:
            parsed = IBAN(iban)
        except SchwiftyException as exc:
            raise _invalid("iban", f"is invalid ({type(exc).__name__})") from None
        return {"iban": parsed.compact}, parsed.country_code
    if not (sort_code and account_number):
        raise _invalid("bank details", "need an IBAN, or a sort code and an account number")
    branch = _SEPARATORS.sub("", sort_code)
    number = _SEPARATORS.sub("", account_number)
    if not re.fullmatch(r"\d{6}", branch):
        raise _invalid("sort_code", "must be 6 digits")
    if not re.fullmatch(r"\d{8}", number):
        raise _invalid("account_number", "must be 8 digits")
    return {"account_number": number, "branch_code": branch, "country_code": "GB"}, "GB"


def _customer_params(
    holder: str, country: str, customer: Mapping[str, str] | None
) -> dict[str, Any]:
    """A customer named after the account holder unless the caller says more."""
    params: dict[str, Any] = {"country_code": country, **(customer or {})}
    if not (params.get("company_name") or params.get("family_name")):
        given, _, family = holder.strip().partition(" ")
        if family:
            params.update(given_name=given, family_name=family.strip())
        else:
            params["company_name"] = holder.strip()
    return params


def register_bank_account(
    api: GoCardlessApi,
    *,
    account_holder_name: str,
    iban: str | None = None,
    sort_code: str | None = None,
    account_number: str | None = None,
    customer_id: str | None = None,
    customer: Mapping[str, str] | None = None,
    idempotency_key: str | None = None,
) -> BankAccountToken:
    """Validate bank details, send them to GoCardless, and return only token and mask.

    Pass ``customer_id`` to attach the account to an existing GoCardless customer; otherwise
    one is created from ``customer`` (``email``, ``given_name``... as GoCardless names them)
    or, failing that, from the holder's name. ``idempotency_key`` (e.g. the form submission
    id) makes a retried registration return the same account instead of a second one.

    Raises :class:`BankDetailsError` for details that fail validation here or at GoCardless
    (``bank_details_lookups``), and the usual connector errors for transport failures.
    """
    holder = account_holder_name.strip()
    if not holder:
        raise _invalid("account_holder_name", "is required")
    params, country = _details(iban, sort_code, account_number)
    try:
        lookup = api.bank_details_lookup(params)
    except PermanentError as exc:
        if exc.http_status in (400, 422):  # GoCardless refused the details themselves
            raise BankDetailsError(
                exc.message,
                psp=PSP,
                http_status=exc.http_status,
                request_id=exc.request_id,
                code="invalid_bank_details",
            ) from None
        raise
    if not lookup.get("available_debit_schemes"):
        raise _invalid("bank account", "cannot be debited by any scheme GoCardless offers")
    if customer_id is None:
        key = f"{idempotency_key}:customer" if idempotency_key else None
        created = api.create_customer(_customer_params(holder, country, customer), key)
        customer_id = str(created["id"])
    name = holder[:_BACS_HOLDER_MAX] if country == "GB" else holder
    account = api.create_customer_bank_account(
        {**params, "account_holder_name": name, "links": {"customer": customer_id}},
        f"{idempotency_key}:account" if idempotency_key else None,
    )
    number = params.get("iban") or params["account_number"]
    return BankAccountToken(token=str(account["id"]), masked=mask(number))
