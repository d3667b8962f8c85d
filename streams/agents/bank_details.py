"""``POST /bank-details``: bank details straight to the PSP, only a token and a mask back.

The SmarterPay seed's rule, and DESIGN.md's: bank account numbers never travel on Kafka nor
reach the CRM. An upstream system (a sign-up form, a call-centre tool, the SDK in
:mod:`streams.bank_details_client`) posts the details here; the worker validates them
(:mod:`streams.bank_details`), hands them to the PSP's connector in a thread (the PSP client is
synchronous) and answers ``201 {"token", "masked"}``. The token is what a ``create_mandate``
change names as its ``payment_method_ref``; the masked form (``****1234``) is what the CRM may
show. Nothing is published: a record of "a token was issued" would tell a subscriber nothing
the mandate's own status updates do not, and a topic that never sees a bank detail cannot leak
one.

The request body is never logged, and nor are error messages that could quote it: a
validation error names the field; an unexpected failure is logged by exception type only.
Callers authenticate with ``Authorization: Bearer <ops.api_token>``; the comparison is
constant-time.

Answers: 201 registered; 400 a field is wrong (``{"error", "field"}``) or the PSP refused the
details; 401 no or wrong token; 413 body too large; 502 the PSP refused paybus's own
credentials; 503 the PSP is unreachable (retry, with the same ``reference`` to stay
idempotent); 500 anything else. Every outcome is counted in ``paybus_bank_details_total``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any, Protocol, cast, runtime_checkable

from faust.web import Request, Response, View

from connectors.errors import (
    AuthenticationError,
    ConnectorError,
    NotFoundError,
    PermanentError,
    UnknownConnectorError,
)
from streams import metrics
from streams.agents.common import Connectors
from streams.agents.http_body import read_body
from streams.app import PaybusApp
from streams.bank_details import BankDetailsRequest, FieldError, parse_request

log = logging.getLogger(__name__)

#: A bank details request is a few hundred bytes; anything much larger is not one.
MAX_BODY_BYTES = 16 * 1024
#: Fields a PSP's refusal message may start with (the connector names fields, not values).
_FIELDS = ("account_holder_name", "iban", "sort_code", "account_number", "customer_id")


class _Token(Protocol):
    token: str
    masked: str


@runtime_checkable
class BankAccountRegistrar(Protocol):
    """A connector that can turn bank details into a token (GoCardless's does)."""

    def register_bank_account(self, **details: Any) -> _Token: ...


def _field_of(message: str) -> str:
    head = message.split(" ", 1)[0]
    return head if head in _FIELDS else "bank_details"


class BankDetailsStage:
    """Attaches the ``/bank-details`` view to the worker's web server."""

    def __init__(self, app: PaybusApp, *args: Any) -> None:
        self.app = app
        self.connectors = Connectors(app)
        self._attach_view()

    def _attach_view(self) -> None:
        stage = self

        @self.app.page("/bank-details")
        class BankDetails(View):
            """POST /bank-details: validate, register at the PSP, answer token and mask."""

            async def post(self, request: Request) -> Response:
                return await stage.receive(self, request)

    def _authorised(self, headers: Any) -> bool:
        given = str(headers.get("Authorization") or "")
        scheme, _, token = given.partition(" ")
        expected = self.app.settings.ops.api_token.get_secret_value()
        return (
            scheme.lower() == "bearer"
            and bool(expected)
            # surrogatepass: header bytes arrive surrogate-escaped, and a plain encode()
            # of an odd byte raised (a 500 instead of a 401).
            and hmac.compare_digest(
                token.strip().encode("utf-8", "surrogatepass"), expected.encode()
            )
        )

    async def receive(self, view: View, request: Request) -> Response:
        raw = cast(Any, request)
        if not self._authorised(raw.headers):
            metrics.BANK_DETAILS.labels("", "unauthorized").inc()
            return view.json(
                {"error": "a valid bearer token is required"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="paybus"'},
            )
        if raw.content_length is not None and raw.content_length > MAX_BODY_BYTES:
            metrics.BANK_DETAILS.labels("", "too_large").inc()
            return view.json({"error": f"body over {MAX_BODY_BYTES} bytes"}, status=413)
        body = await read_body(raw.content, MAX_BODY_BYTES)
        if body is None:
            metrics.BANK_DETAILS.labels("", "too_large").inc()
            return view.json({"error": f"body over {MAX_BODY_BYTES} bytes"}, status=413)
        try:
            details = parse_request(body)
        except FieldError as exc:
            metrics.BANK_DETAILS.labels("", "invalid").inc()
            return view.json({"error": exc.message, "field": exc.field}, status=400)
        status, answer = await self.register(details)
        return view.json(answer, status=status)

    async def register(self, details: BankDetailsRequest) -> tuple[int, dict[str, Any]]:
        """Register ``details`` at its PSP; the HTTP status and JSON answer (no bank detail)."""
        psp = details.psp
        try:
            connector = self.connectors.get(psp)
        except UnknownConnectorError:
            metrics.BANK_DETAILS.labels("", "invalid").inc()
            return 400, {"error": f"psp {psp!r} is not installed", "field": "psp"}
        if not isinstance(connector, BankAccountRegistrar):
            metrics.BANK_DETAILS.labels(psp, "invalid").inc()
            return 400, {"error": f"psp {psp!r} does not take bank details", "field": "psp"}
        try:
            token = await asyncio.to_thread(
                connector.register_bank_account, **details.connector_kwargs()
            )
        except ConnectorError as exc:
            return self._refusal(psp, details, exc)
        except Exception as exc:  # never log the message: it might quote the request
            log.error("bank details for %s failed: %s", psp, type(exc).__name__)
            metrics.BANK_DETAILS.labels(psp, "error").inc()
            return 500, {"error": "bank details could not be registered"}
        metrics.BANK_DETAILS.labels(psp, "registered").inc()
        return 201, {"token": token.token, "masked": token.masked}

    @staticmethod
    def _refusal(
        psp: str, details: BankDetailsRequest, exc: ConnectorError
    ) -> tuple[int, dict[str, Any]]:
        """The answer to a connector error: the caller's fault (400), paybus's (502) or the
        PSP's availability (503). Connector messages name fields, never their values."""
        if exc.should_retry:
            metrics.BANK_DETAILS.labels(psp, "unavailable").inc()
            return 503, {"error": f"{psp} is unavailable; retry with the same reference"}
        if isinstance(exc, AuthenticationError):
            log.error("%s refused paybus's credentials (request id %s)", psp, exc.request_id)
            metrics.BANK_DETAILS.labels(psp, "error").inc()
            return 502, {"error": f"{psp} refused paybus's credentials"}
        if isinstance(exc, NotFoundError) and details.customer_id:
            metrics.BANK_DETAILS.labels(psp, "refused").inc()
            return 400, {"error": "customer_id was not found", "field": "customer_id"}
        if isinstance(exc, PermanentError):
            metrics.BANK_DETAILS.labels(psp, "refused").inc()
            field = _field_of(exc.message)
            return 400, {"error": f"{psp} refused the bank details: {exc.message}", "field": field}
        metrics.BANK_DETAILS.labels(psp, "error").inc()
        return 500, {"error": "bank details could not be registered"}
