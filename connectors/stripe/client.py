"""Stripe HTTP calls through stripe-python's ``StripeClient``, and Stripe errors -> paybus errors.

One ``StripeClient`` per connector instance (never the module globals ``stripe.api_key`` etc.),
so two connectors with different keys or base URLs can live in one process. stripe-python's own
network retries are switched off: :mod:`connectors.retry` retries in process and the bus parks
what still fails, and two stacked retry layers would multiply the attempts.

Results are plain dicts (``StripeObject.to_dict()``) so the pure transformers never see
stripe-python types.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, cast

import stripe

from connectors.errors import (
    AuthenticationError,
    ConnectorError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from connectors.stripe.settings import PSP, StripeSettings, api_base

__all__ = ["CardDeclined", "StripeApi", "map_error"]


class CardDeclined(PermanentError):
    """Stripe refused the charge (HTTP 402): a business outcome the connector turns into a
    ``failed`` event. Carries the PaymentIntent Stripe attaches to the error, when it does."""

    def __init__(
        self,
        message: str,
        *,
        payment_intent: dict[str, Any] | None,
        decline_code: str | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(message, **kwargs)
        self.payment_intent = payment_intent
        self.decline_code = decline_code


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    value = _header(headers, "Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP-date; Stripe sends seconds, so ignore the rare other form
    return seconds if seconds >= 0 else None


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return cast(dict[str, Any], body["error"])
    return {}


def map_error(exc: stripe.StripeError) -> ConnectorError:
    """The paybus error for a stripe-python error.

    Retryability follows ``stripe/_http_client.py``: Stripe's ``Stripe-Should-Retry`` header
    decides when present; otherwise network errors, 409 (lock / concurrent idempotent request),
    429 and 5xx retry, everything else does not.
    """
    headers = exc.headers
    kwargs: dict[str, Any] = {
        "psp": PSP,
        "http_status": exc.http_status,
        "request_id": exc.request_id or _header(headers, "Request-Id"),
        "code": exc.code or _error_body(exc).get("type"),
        "retry_after_s": _retry_after(headers),
    }
    error = _classify(exc, message=exc.user_message or type(exc).__name__, kwargs=kwargs)
    hint = _header(headers, "Stripe-Should-Retry")
    if hint in ("true", "false") and not isinstance(error, CardDeclined):
        # Stripe knows best (e.g. a 500 whose request it already rolled back or replayed).
        cls = TransientError if hint == "true" else PermanentError
        if type(error) is not cls and type(error) in (TransientError, PermanentError):
            error = cls(error.message, **kwargs)
        error.should_retry = hint == "true"
    return error


def _classify(exc: stripe.StripeError, *, message: str, kwargs: dict[str, Any]) -> ConnectorError:
    status = exc.http_status or 0
    if isinstance(exc, stripe.CardError):
        error = _error_body(exc)
        pi = error.get("payment_intent")
        decline = error.get("decline_code") or exc.code
        return CardDeclined(
            message,
            payment_intent=pi if isinstance(pi, dict) else None,
            decline_code=str(decline) if decline else None,
            **kwargs,
        )
    if isinstance(exc, stripe.APIConnectionError):
        return TransientError(f"stripe unreachable: {message}", **kwargs)
    if isinstance(exc, stripe.RateLimitError) or status == 429:
        return TransientError(message, **kwargs)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return AuthenticationError(message, **kwargs)
    if isinstance(exc, stripe.IdempotencyError):
        return PermanentError(message, **kwargs)
    if status == 404 or exc.code == "resource_missing":
        # An object in the URL is a 404; one named by a parameter (the PaymentIntent a
        # refund is for) is a 400 with this code. Either way the account has no such object.
        return NotFoundError(message, **kwargs)
    if status == 409 or status >= 500:
        return TransientError(message, **kwargs)
    return PermanentError(message, **kwargs)


class StripeApi:
    """The handful of Stripe endpoints the connector uses, errors already mapped."""

    def __init__(self, settings: StripeSettings, *, timeout_s: float = 20.0) -> None:
        base = api_base(settings)
        self._client = stripe.StripeClient(
            settings.api_key.get_secret_value(),
            base_addresses={"api": base} if base else None,
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=timeout_s),
        )

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            obj = fn(*args, **kwargs)
        except stripe.StripeError as exc:
            raise map_error(exc) from exc
        return cast(dict[str, Any], obj.to_dict())

    def create_payment_intent(self, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        return self._call(
            self._client.v1.payment_intents.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )

    def cancel_payment_intent(self, pi_id: str, idempotency_key: str) -> dict[str, Any]:
        return self._call(
            self._client.v1.payment_intents.cancel,
            pi_id,
            options={"idempotency_key": idempotency_key},
        )

    def retrieve_payment_intent(self, pi_id: str) -> dict[str, Any]:
        """With ``latest_charge`` expanded: refunds and disputes live on the charge."""
        return self._call(
            self._client.v1.payment_intents.retrieve,
            pi_id,
            params={"expand": ["latest_charge"]},
        )

    def create_refund(self, params: dict[str, Any], idempotency_key: str) -> dict[str, Any]:
        return self._call(
            self._client.v1.refunds.create,
            params=params,
            options={"idempotency_key": idempotency_key},
        )

    def retrieve_refund(self, refund_id: str) -> dict[str, Any]:
        return self._call(self._client.v1.refunds.retrieve, refund_id)

    def retrieve_payout(self, payout_id: str) -> dict[str, Any]:
        return self._call(self._client.v1.payouts.retrieve, payout_id)

    def payout_transactions(self, payout_id: str) -> Iterator[dict[str, Any]]:
        """The payout's balance transactions, charges expanded (auto-paginated)."""
        try:
            page = self._client.v1.balance_transactions.list(
                params={"payout": payout_id, "expand": ["data.source"], "limit": 100}
            )
            for txn in page.auto_paging_iter():
                yield txn.to_dict()
        except stripe.StripeError as exc:
            raise map_error(exc) from exc

    def events_since(self, created_gte: int) -> Iterator[dict[str, Any]]:
        """Stripe's event log from ``created_gte`` on (newest first, as Stripe lists it)."""
        try:
            page = self._client.v1.events.list(
                params={"created": {"gte": created_gte}, "limit": 100}
            )
            for event in page.auto_paging_iter():
                yield event.to_dict()
        except stripe.StripeError as exc:
            raise map_error(exc) from exc
