"""SDK for upstream systems: register bank details with paybus, get a token and a mask back.

An upstream system (a sign-up form's backend, a call-centre tool, a CRM flow) holds the raw
account number for exactly one call, this one, and stores only what comes back: the token
(a mandate's ``payment_method_ref``) and the masked form (``****1234``) for display. Standard
library only (``urllib``), so any Python service can vendor it.

    from streams.bank_details_client import BankDetailsClient
    client = BankDetailsClient("http://paybus-web:6066", api_token)
    token, masked = client.register(
        account_holder_name="Ada Lovelace", sort_code="200000", account_number="55779911",
        customer={"email": "ada@example.com"}, reference="signup-42",
    )

Pass a ``reference`` (the form submission id): retrying a call that timed out then returns
the same bank account instead of registering a second one. Errors never carry the details:
:class:`BankDetailsRejected` names the field that was wrong.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any, NamedTuple

__all__ = [
    "BankDetailsClient",
    "BankDetailsError",
    "BankDetailsRejected",
    "BankDetailsUnavailable",
    "RegisteredBankAccount",
]


class RegisteredBankAccount(NamedTuple):
    """What registering returns; unpacks as ``token, masked = ...``."""

    token: str
    masked: str


class BankDetailsError(Exception):
    """Registering failed; ``status`` is the HTTP status (``None``: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class BankDetailsRejected(BankDetailsError):
    """The details (or the token) were refused; do not retry unchanged. ``field`` names what."""

    def __init__(self, message: str, status: int, field: str | None) -> None:
        super().__init__(message, status)
        self.field = field


class BankDetailsUnavailable(BankDetailsError):
    """paybus or the PSP could not take the details now; retry with the same ``reference``."""


class BankDetailsClient:
    """Calls ``POST /bank-details`` on a paybus worker's web port."""

    def __init__(self, base_url: str, api_token: str, *, timeout_s: float = 30.0) -> None:
        self.url = base_url.rstrip("/") + "/bank-details"
        self.api_token = api_token
        self.timeout_s = timeout_s

    def register(
        self,
        *,
        account_holder_name: str,
        iban: str | None = None,
        sort_code: str | None = None,
        account_number: str | None = None,
        customer_id: str | None = None,
        customer: Mapping[str, str] | None = None,
        reference: str | None = None,
        psp: str | None = None,
    ) -> RegisteredBankAccount:
        """Send the details to paybus (and so to the PSP); return token and masked form."""
        fields: dict[str, Any] = {
            "account_holder_name": account_holder_name,
            "iban": iban,
            "sort_code": sort_code,
            "account_number": account_number,
            "customer_id": customer_id,
            "customer": dict(customer) if customer else None,
            "reference": reference,
            "psp": psp,
        }
        body = json.dumps({k: v for k, v in fields.items() if v is not None}).encode()
        request = urllib.request.Request(self.url, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {self.api_token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                answer = _json(response.read())
        except urllib.error.HTTPError as exc:
            raise _error(exc.code, _json(exc.read())) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise BankDetailsUnavailable(f"paybus unreachable: {reason}") from None
        token, masked = answer.get("token"), answer.get("masked")
        if not isinstance(token, str) or not isinstance(masked, str):
            raise BankDetailsError("paybus answered without a token", 201)
        return RegisteredBankAccount(token, masked)


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _error(status: int, answer: Mapping[str, Any]) -> BankDetailsError:
    message = str(answer.get("error") or f"HTTP {status}")
    if status >= 500 or status == 429:
        return BankDetailsUnavailable(message, status)
    field = answer.get("field")
    return BankDetailsRejected(message, status, field if isinstance(field, str) else None)
