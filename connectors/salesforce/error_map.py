"""What Salesforce's failures become: :mod:`connectors.errors` with ``should_retry``, the HTTP
status, the request id and ``Retry-After``.

simple-salesforce raises its own exceptions and drops response headers; a Composite subrequest
fails inside a 200 answer. Both are mapped here, the same way, so a failure reads alike however
the call was made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import requests
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceError

from connectors.errors import (
    AuthenticationError,
    ConnectorError,
    NotFoundError,
    PermanentError,
    TransientError,
)

NAME = "salesforce"
#: Error codes that say "busy, try again" although Salesforce sends them with 4xx statuses.
RETRYABLE_CODES = frozenset(
    {
        "REQUEST_LIMIT_EXCEEDED",
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
        "REQUEST_RUNNING_TOO_LONG",
    }
)
#: Codes that say the org as a whole takes no calls now (not that one record is busy).
ORG_UNAVAILABLE_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE"})
_ERROR_ID_RE = re.compile(r"ErrorId if you contact support: (\S+)")
_REQUEST_ID_HEADERS = ("X-Request-Id", "X-SFDC-Request-Id", "Sforce-Request-Id")


def subrequest_error(status: int, body: Any, resource: str) -> ConnectorError:
    """The paybus error for a failed Composite subrequest: what :func:`map_error` makes of the
    same status and error body returned by the call made alone."""
    return map_error(SalesforceError(f"composite:{resource}", status, resource, body))


def map_error(err: BaseException, response: requests.Response | None = None) -> ConnectorError:
    """The paybus error for a simple-salesforce or requests exception.

    ``response`` (the failed HTTP response, when there was one) supplies what the exception
    drops: ``Retry-After`` and any request id header.
    """
    headers: Mapping[str, str] = response.headers if response is not None else {}
    retry_after = _retry_after(headers.get("Retry-After"))
    request_id = next((headers[h] for h in _REQUEST_ID_HEADERS if h in headers), None)
    if isinstance(err, SalesforceAuthenticationFailed):
        return AuthenticationError(str(err), psp=NAME, http_status=401, code=str(err.code))
    if isinstance(err, requests.RequestException):
        status = err.response.status_code if err.response is not None else None
        return TransientError(
            f"{type(err).__name__}: {err}", psp=NAME, http_status=status, retry_after_s=retry_after
        )
    if not isinstance(err, SalesforceError):
        return PermanentError(f"{type(err).__name__}: {err}", psp=NAME)
    code, message = _first_error(err.content)
    request_id = request_id or error_id(message)
    status = err.status
    kwargs: dict[str, Any] = {
        "psp": NAME,
        "http_status": status,
        "code": code,
        "request_id": request_id,
        "retry_after_s": retry_after,
    }
    text = f"Salesforce {err.resource_name or 'call'} failed: {message}"
    if status == 401:
        return AuthenticationError(text, **kwargs)
    if status == 429 or status >= 500 or code in RETRYABLE_CODES:
        return TransientError(text, **kwargs)
    if status == 404:
        return NotFoundError(text, **kwargs)
    return PermanentError(text, **kwargs)


def is_unavailable(err: ConnectorError | None) -> bool:
    """Whether ``err`` says Salesforce itself is unavailable (unreachable, a 5xx or 429, the
    org out of API calls), not that one record failed (a row lock, a refusal): an outage is
    waited out however long it lasts, a record's failure is retried a few times.

    A 5xx inside a Composite answer counts: the org answered the call but not the work.
    """
    if err is None or not err.should_retry:
        return False
    if err.code in ORG_UNAVAILABLE_CODES:
        return True
    if err.code is not None:  # a record-level code (UNABLE_TO_LOCK_ROW, ...)
        return False
    status = err.http_status
    return status is None or status == 429 or status >= 500


def _first_error(content: Any) -> tuple[str | None, str]:
    if isinstance(content, Mapping) and isinstance(content.get("compositeResponse"), list):
        # A Composite refused as a whole (over its limits): the error is its lone result.
        first = next(iter(content["compositeResponse"]), None)
        content = first.get("body") if isinstance(first, Mapping) else content
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        first = content[0]
        return first.get("errorCode"), str(first.get("message", ""))
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    return None, str(content)[:500]


def error_id(message: str) -> str | None:
    """The ErrorId Salesforce puts in a 5xx message (what its support asks for)."""
    match = _ERROR_ID_RE.search(message)
    return match[1] if match else None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare from Salesforce, and the backoff has its own default
