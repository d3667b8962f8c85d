"""Connector errors: what went wrong at a PSP or CRM, and whether trying again can help.

Modelled on ``stripe/_error.py``: every error carries the HTTP status, the PSP's request id (for
support tickets) and ``should_retry``, so the retry machinery never has to parse messages.
"""

from __future__ import annotations

from streams.errors import PaybusError


class ConnectorError(PaybusError):
    """An external system refused or failed a call."""

    #: Default for the class; instances may override (e.g. a 409 lock conflict is retryable).
    default_should_retry: bool = False

    def __init__(
        self,
        message: str,
        *,
        psp: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        code: str | None = None,
        should_retry: bool | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.psp = psp
        self.http_status = http_status
        self.request_id = request_id
        self.code = code
        self.should_retry = self.default_should_retry if should_retry is None else should_retry
        #: The PSP's own hint (``Retry-After``), honoured by the backoff.
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        parts = [self.message]
        if self.http_status is not None:
            parts.append(f"http_status={self.http_status}")
        if self.code:
            parts.append(f"code={self.code}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class TransientError(ConnectorError):
    """Network trouble, 5xx, 429, timeouts: retry with backoff."""

    default_should_retry = True


class PermanentError(ConnectorError):
    """The request itself is wrong (validation, state, auth): retrying cannot help."""


class AuthenticationError(PermanentError):
    """Credentials refused (401), or not allowed to do this (403): paybus's configuration, not
    the request. Not retried in the call (the same key is refused again at once), but the very
    same request succeeds once an operator has fixed the key: see :func:`worth_asking_later`."""


class NotFoundError(PermanentError):
    """The PSP object does not exist."""


def worth_asking_later(exc: BaseException | None) -> bool:
    """Whether the same request, made again later, can succeed: a transient failure left after
    the in-call retries, or credentials the PSP refused. Either way nothing is wrong with the
    payment, so it must wait (parked, or its webhook scheduled for replay) instead of being
    marked failed: a revoked or mistyped key would otherwise fail every payment of the outage
    in the CRM, for someone to re-create by hand. A refusal of the request itself will not get
    better and is answered at once."""
    if not isinstance(exc, ConnectorError):
        return False
    return exc.should_retry or isinstance(exc, AuthenticationError)


class WebhookVerificationError(PaybusError):
    """A webhook whose signature, timestamp or body cannot be trusted (answered 4xx)."""


class UnknownConnectorError(PaybusError):
    """A connector name that no installed package provides."""
