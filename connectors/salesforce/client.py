"""A thin wrapper over simple-salesforce: paged SOQL, sObject Collections, paybus errors.

simple-salesforce raises its own exceptions and drops response headers; the retry machinery
needs :mod:`connectors.errors` with ``should_retry`` and ``Retry-After``, and operators need the
API usage the org reports. A response hook on the client's session sees every HTTP call, so
the wrapper counts API calls exactly (paging included) and keeps the last ``Sforce-Limit-Info``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceError

from connectors.errors import (
    AuthenticationError,
    ConnectorError,
    NotFoundError,
    PermanentError,
    TransientError,
)

NAME = "salesforce"
#: sObject Collections take at most this many records per call.
MAX_COLLECTION = 200
#: Error codes that say "busy, try again" although Salesforce sends them with 4xx statuses.
RETRYABLE_CODES = frozenset(
    {
        "REQUEST_LIMIT_EXCEEDED",
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
        "REQUEST_RUNNING_TOO_LONG",
    }
)
_LIMIT_RE = re.compile(r"api-usage=(\d+)/(\d+)")
_ERROR_ID_RE = re.compile(r"ErrorId if you contact support: (\S+)")
_REQUEST_ID_HEADERS = ("X-Request-Id", "X-SFDC-Request-Id", "Sforce-Request-Id")


@dataclass(frozen=True)
class ApiUsage:
    """The org's daily API allowance as of the last response."""

    used: int
    limit: int


@dataclass(frozen=True)
class RecordResult:
    """Outcome of one record of a collection call: ``error`` is None on success."""

    record_id: str | None
    error: ConnectorError | None = None

    @property
    def success(self) -> bool:
        return self.error is None


class SalesforceClient:
    """SOQL and collection updates over one simple-salesforce client, with error mapping."""

    def __init__(self, sf: Salesforce, timeout_s: float = 30.0) -> None:
        self.sf = sf
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._calls = 0
        self._usage: ApiUsage | None = None
        self._last = threading.local()
        sf.session.hooks.setdefault("response", []).append(self._on_response)

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._last.response = response
        match = _LIMIT_RE.search(response.headers.get("Sforce-Limit-Info", ""))
        with self._lock:
            self._calls += 1
            if match:
                self._usage = ApiUsage(int(match[1]), int(match[2]))

    @property
    def api_calls(self) -> int:
        """HTTP calls made through this client so far (each one counts against the org)."""
        return self._calls

    @property
    def api_usage(self) -> ApiUsage | None:
        """The org's ``api-usage=N/LIMIT`` from the last response, if it sent one."""
        return self._usage

    def _call(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        self._last.response = None
        try:
            return getattr(self.sf, operation)(*args, timeout=self.timeout_s, **kwargs)
        except (SalesforceError, requests.RequestException) as err:
            raise map_error(err, getattr(self._last, "response", None)) from err

    def query(self, soql: str) -> list[dict[str, Any]]:
        """All records of a SOQL query, following ``nextRecordsUrl`` page by page."""
        return list(self.iter_query(soql))

    def iter_query(self, soql: str) -> Iterator[dict[str, Any]]:
        """Records of a query as they arrive, one API call per page."""
        page = self._call("query", soql)
        while True:
            for record in page["records"]:
                yield {k: v for k, v in record.items() if k != "attributes"}
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return
            page = self._call("query_more", page["nextRecordsUrl"], identifier_is_url=True)

    def update_records(
        self, object_name: str, records: Sequence[Mapping[str, Any]]
    ) -> list[RecordResult]:
        """Update records by ``Id`` with ``PATCH composite/sobjects`` (allOrNone false).

        One call per :data:`MAX_COLLECTION` records; results come back in input order. A
        record's own error fails that record only; an error of the whole call raises.
        """
        results: list[RecordResult] = []
        for start in range(0, len(records), MAX_COLLECTION):
            chunk = records[start : start + MAX_COLLECTION]
            body = {
                "allOrNone": False,
                "records": [{"attributes": {"type": object_name}, **r} for r in chunk],
            }
            answer = self._call("restful", "composite/sobjects", method="PATCH", json=body)
            if not isinstance(answer, list) or len(answer) != len(chunk):
                raise PermanentError(
                    f"unexpected composite/sobjects answer: {answer!r:.200}", psp=NAME
                )
            results.extend(_record_result(item) for item in answer)
        return results

    def user_id(self, username: str) -> str | None:
        """The User id of ``username`` (one query), or None when no such user exists."""
        rows = self.query(f"SELECT Id FROM User WHERE Username = {soql_quote(username)} LIMIT 1")
        return str(rows[0]["Id"]) if rows else None


def _record_result(item: Mapping[str, Any]) -> RecordResult:
    record_id = item.get("id")
    if item.get("success"):
        return RecordResult(record_id)
    errors = item.get("errors") or [{}]
    first = errors[0]
    code = str(first.get("statusCode") or "UNKNOWN")
    message = str(first.get("message") or "record not saved")
    if first.get("fields"):
        message += f" (fields: {', '.join(map(str, first['fields']))})"
    cls = TransientError if code in RETRYABLE_CODES else PermanentError
    return RecordResult(record_id, cls(message, psp=NAME, code=code, request_id=_error_id(message)))


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
    request_id = request_id or _error_id(message)
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


def _first_error(content: Any) -> tuple[str | None, str]:
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        first = content[0]
        return first.get("errorCode"), str(first.get("message", ""))
    if isinstance(content, bytes):
        content = content.decode("utf-8", "replace")
    return None, str(content)[:500]


def _error_id(message: str) -> str | None:
    match = _ERROR_ID_RE.search(message)
    return match[1] if match else None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None  # an HTTP date: rare from Salesforce, and the backoff has its own default


def id18(record_id: str) -> str:
    """The case-safe 18-character form of a 15-character record id (18 stays as is).

    Filters and results use the 18-character form, so ids given either way compare equal.
    """
    if len(record_id) != 15:
        return record_id
    suffix = ""
    for start in range(0, 15, 5):
        bits = sum(1 << i for i, char in enumerate(record_id[start : start + 5]) if char.isupper())
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return record_id + suffix


def soql_quote(value: str) -> str:
    """A SOQL string literal: backslashes and quotes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
