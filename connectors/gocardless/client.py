"""GoCardless HTTP calls through ``gocardless_pro``, and its errors -> paybus errors.

One ``gocardless_pro.Client`` per connector instance, built from the connector's settings
(``base_url`` is a bare origin such as the sandbox's ``http://127.0.0.1:PORT``; without it the
SDK picks GoCardless's own URL for ``environment``). The SDK's own network retries (three
attempts, half a second apart) are switched off: :mod:`connectors.retry` retries in process
and the bus parks what still fails, and two stacked retry layers would multiply the attempts
and the time a worker spends on one message.

Every create carries the caller's idempotency key. When GoCardless answers a repeated key with
``409 idempotent_creation_conflict``, the SDK fetches the resource the first request created
and returns it, which is what makes a re-delivered command harmless.

Results are plain dicts (the resources' ``attributes``), so the pure transformers never see
SDK types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import gocardless_pro
import requests
from gocardless_pro import errors as gc_errors
from gocardless_pro import services as gc_services

from connectors.errors import (
    AuthenticationError,
    ConnectorError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from connectors.gocardless.settings import PSP, GoCardlessSettings, api_base

__all__ = ["GoCardlessApi", "map_error"]

Json = dict[str, Any]

_STATUS_BY_CLASS: tuple[tuple[type[Exception], int], ...] = (
    (gc_errors.AuthenticationError, 401),
    (gc_errors.PermissionsError, 403),
    (gc_errors.RateLimitError, 429),
    (gc_errors.GoCardlessInternalError, 500),
)


def _http_status(exc: gc_errors.ApiError) -> int | None:
    """GoCardless repeats the HTTP status as the error's ``code``; the SDK keeps no response."""
    code = exc.error.get("code") if isinstance(exc.error, dict) else None
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    if isinstance(code, str) and code.isdigit():
        return int(code)
    for cls, status in _STATUS_BY_CLASS:
        if isinstance(exc, cls):
            return status
    return None


def _reason(exc: gc_errors.ApiError) -> str | None:
    """The first error's ``reason`` (``mandate_is_inactive``...), else the error ``type``."""
    for entry in exc.errors or []:
        if isinstance(entry, dict) and isinstance(entry.get("reason"), str):
            return str(entry["reason"])
    return str(exc.type) if exc.type else None


def map_error(exc: Exception) -> ConnectorError:
    """The paybus error for a ``gocardless_pro`` (or ``requests``) failure.

    Retry follows what can get better by itself: the network, 429 and 5xx (GoCardless's
    ``gocardless`` error type) retry; validation failures, invalid states (a cancelled
    mandate stays cancelled), bad API usage and authentication do not. Messages are the
    SDK's, which name fields, never their values, so no bank detail can leak into a log.
    """
    if isinstance(exc, gc_errors.ApiError):
        status = _http_status(exc)
        kwargs: dict[str, Any] = {
            "psp": PSP,
            "http_status": status,
            "request_id": exc.request_id,
            "code": _reason(exc),
        }
        message = str(exc) or type(exc).__name__
        if isinstance(exc, gc_errors.AuthenticationError | gc_errors.PermissionsError):
            return AuthenticationError(message, **kwargs)
        if status == 404:
            return NotFoundError(message, **kwargs)
        if (
            isinstance(exc, gc_errors.RateLimitError | gc_errors.GoCardlessInternalError)
            or status == 429
            or (status or 0) >= 500
        ):
            return TransientError(message, **kwargs)
        return PermanentError(message, **kwargs)
    if isinstance(exc, gc_errors.MalformedResponseError):
        # A non-JSON answer: a proxy or load balancer in the way, usually a 5xx page.
        status = exc.status_code
        cls = TransientError if status is None or status >= 500 or status == 429 else PermanentError
        return cls("malformed response from gocardless", psp=PSP, http_status=status)
    if isinstance(exc, requests.RequestException):
        return TransientError(f"gocardless unreachable: {type(exc).__name__}", psp=PSP)
    return PermanentError(f"gocardless client error: {exc}", psp=PSP)


class GoCardlessApi:
    """The handful of GoCardless endpoints paybus uses, errors already mapped."""

    def __init__(
        self, settings: GoCardlessSettings, *, timeout_s: float = 20.0, page_size: int = 500
    ) -> None:
        base = api_base(settings)
        #: List page size (GoCardless allows up to 500); small in tests to exercise cursors.
        self.page_size = page_size
        self._client = gocardless_pro.Client(
            access_token=settings.access_token.get_secret_value(),
            environment=None if base else settings.environment,
            base_url=base,
            timeout=timeout_s,
        )
        # The SDK has no public switch for its network retries; its services take the count as
        # a constructor argument, so build them ourselves over the client's transport.
        transport = self._client._api_client
        self._customers = gc_services.CustomersService(transport, 1, 0.0)
        self._accounts = gc_services.CustomerBankAccountsService(transport, 1, 0.0)
        self._lookups = gc_services.BankDetailsLookupsService(transport, 1, 0.0)
        self._mandates = gc_services.MandatesService(transport, 1, 0.0)
        self._payments = gc_services.PaymentsService(transport, 1, 0.0)
        self._refunds = gc_services.RefundsService(transport, 1, 0.0)
        self._payouts = gc_services.PayoutsService(transport, 1, 0.0)
        self._events = gc_services.EventsService(transport, 1, 0.0)

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (gc_errors.GoCardlessProError, requests.RequestException) as exc:
            raise map_error(exc) from exc

    def _one(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Json:
        return cast(Json, dict(self._call(fn, *args, **kwargs).attributes))

    @staticmethod
    def _key(idempotency_key: str | None) -> dict[str, str] | None:
        return {"Idempotency-Key": idempotency_key} if idempotency_key else None

    # --- customers and bank accounts -----------------------------------------------------------

    def create_customer(self, params: Json, idempotency_key: str | None = None) -> Json:
        return self._one(self._customers.create, params=params, headers=self._key(idempotency_key))

    def create_customer_bank_account(
        self, params: Json, idempotency_key: str | None = None
    ) -> Json:
        return self._one(self._accounts.create, params=params, headers=self._key(idempotency_key))

    def bank_details_lookup(self, params: Json) -> Json:
        return self._one(self._lookups.create, params=params)

    # --- mandates, payments, refunds, payouts ------------------------------------------------

    def create_mandate(self, params: Json, idempotency_key: str) -> Json:
        return self._one(self._mandates.create, params=params, headers=self._key(idempotency_key))

    def get_mandate(self, mandate_id: str) -> Json:
        return self._one(self._mandates.get, mandate_id)

    def cancel_mandate(self, mandate_id: str, metadata: dict[str, str]) -> Json:
        return self._one(self._mandates.cancel, mandate_id, params={"metadata": metadata})

    def create_payment(self, params: Json, idempotency_key: str) -> Json:
        return self._one(self._payments.create, params=params, headers=self._key(idempotency_key))

    def get_payment(self, payment_id: str) -> Json:
        return self._one(self._payments.get, payment_id)

    def cancel_payment(self, payment_id: str, metadata: dict[str, str]) -> Json:
        return self._one(self._payments.cancel, payment_id, params={"metadata": metadata})

    def create_refund(self, params: Json, idempotency_key: str) -> Json:
        return self._one(self._refunds.create, params=params, headers=self._key(idempotency_key))

    def get_refund(self, refund_id: str) -> Json:
        return self._one(self._refunds.get, refund_id)

    def refunds_of(self, payment_id: str) -> list[Json]:
        return list(self._pages(self._refunds, {"payment": payment_id}))

    def get_payout(self, payout_id: str) -> Json:
        return self._one(self._payouts.get, payout_id)

    # --- events --------------------------------------------------------------------------------

    def events(self, **filters: str) -> Iterator[Json]:
        """Every event matching ``filters`` (``created_at[gt]``, ``payment``, ``action``...),
        page by page with the ``after`` cursor until GoCardless returns none (newest first)."""
        return self._pages(self._events, dict(filters))

    def _pages(self, service: Any, params: Json) -> Iterator[Json]:
        params = {**params, "limit": self.page_size}
        while True:
            page = self._call(service.list, params=params)
            for record in page.records:
                yield dict(record.attributes)
            if page.after is None:
                return
            params = {**params, "after": page.after}
