"""Mapping simple-salesforce and requests failures onto paybus connector errors."""

from __future__ import annotations

import requests
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors.errors import AuthenticationError, NotFoundError, PermanentError, TransientError
from connectors.salesforce.client import id18, soql_quote
from connectors.salesforce.error_map import is_unavailable, map_error, subrequest_error


def _body(code: str, message: str = "boom") -> list[dict[str, str]]:
    return [{"errorCode": code, "message": message}]


def _response(**headers: str) -> requests.Response:
    response = requests.Response()
    response.headers.update(headers)
    return response


def test_server_errors_are_transient_with_retry_after() -> None:
    err = SalesforceGeneralError("u", 503, "query", _body("SERVER_UNAVAILABLE"))  # type: ignore[arg-type]
    mapped = map_error(err, _response(**{"Retry-After": "7"}))
    assert isinstance(mapped, TransientError) and mapped.should_retry
    assert (mapped.http_status, mapped.code, mapped.retry_after_s) == (
        503,
        "SERVER_UNAVAILABLE",
        7.0,
    )


def test_request_limit_is_transient_even_though_it_is_a_403() -> None:
    err = SalesforceRefusedRequest("u", 403, "query", _body("REQUEST_LIMIT_EXCEEDED"))  # type: ignore[arg-type]
    assert isinstance(map_error(err), TransientError)
    other = SalesforceRefusedRequest("u", 403, "query", _body("INSUFFICIENT_ACCESS"))  # type: ignore[arg-type]
    mapped = map_error(other)
    assert isinstance(mapped, PermanentError) and not mapped.should_retry


def test_validation_auth_and_missing_resources_are_permanent() -> None:
    bad = SalesforceMalformedRequest("u", 400, "query", _body("MALFORMED_QUERY"))  # type: ignore[arg-type]
    assert type(map_error(bad)) is PermanentError
    expired = SalesforceExpiredSession("u", 401, "query", _body("INVALID_SESSION_ID"))  # type: ignore[arg-type]
    assert isinstance(map_error(expired), AuthenticationError)
    missing = SalesforceResourceNotFound("u", 404, "x", _body("NOT_FOUND"))  # type: ignore[arg-type]
    assert isinstance(map_error(missing), NotFoundError)


def test_request_ids_come_from_headers_or_the_support_error_id() -> None:
    err = SalesforceGeneralError(
        "u",
        500,
        "query",
        _body(
            "UNKNOWN_EXCEPTION", "Please include this ErrorId if you contact support: 123-456 (789)"
        ),  # type: ignore[arg-type]
    )
    assert map_error(err).request_id == "123-456"
    assert map_error(err, _response(**{"X-Request-Id": "req-1"})).request_id == "req-1"


def test_network_failures_are_transient() -> None:
    assert isinstance(map_error(requests.ConnectTimeout("slow")), TransientError)
    assert isinstance(map_error(requests.ConnectionError("refused")), TransientError)


def test_soql_quote_escapes() -> None:
    assert soql_quote("O'Brien\\") == "'O\\'Brien\\\\'"


def test_id18_adds_the_case_safe_suffix() -> None:
    assert id18("a015g0000000001") == "a015g0000000001AAA"
    assert id18("001A0000006Vm9r") == "001A0000006Vm9rIAC"  # Salesforce's documented example
    assert id18("a015g0000000001AAA") == "a015g0000000001AAA"


def test_composite_subrequest_errors_map_like_the_call_made_alone() -> None:
    down = subrequest_error(503, _body("SERVER_UNAVAILABLE"), "composite/sobjects")
    assert isinstance(down, TransientError) and down.should_retry
    assert (down.http_status, down.code) == (503, "SERVER_UNAVAILABLE")
    locked = subrequest_error(400, _body("UNABLE_TO_LOCK_ROW"), "composite/sobjects")
    assert isinstance(locked, TransientError)
    bad = subrequest_error(400, _body("MALFORMED_QUERY", "unexpected token"), "query")
    assert isinstance(bad, PermanentError) and not bad.should_retry
    assert bad.code == "MALFORMED_QUERY" and "unexpected token" in bad.message
    assert isinstance(subrequest_error(404, _body("NOT_FOUND"), "sobjects"), NotFoundError)


def test_a_composite_refused_as_a_whole_names_its_error_code() -> None:
    content = {
        "compositeResponse": [
            {
                "body": _body("LIMIT_EXCEEDED", "The request cannot contain more than 25 ops"),
                "httpHeaders": {},
                "httpStatusCode": 400,
                "referenceId": None,
            }
        ]
    }
    err = SalesforceMalformedRequest("u", 400, "composite", content)  # type: ignore[arg-type]
    mapped = map_error(err)
    assert isinstance(mapped, PermanentError) and mapped.code == "LIMIT_EXCEEDED"
    assert "25 ops" in mapped.message


def test_unavailable_is_salesforce_not_answering_not_a_record_failing() -> None:
    down = [
        map_error(requests.ConnectionError("refused")),  # unreachable
        map_error(requests.Timeout("read timed out")),
        subrequest_error(503, _body("SERVER_UNAVAILABLE"), "sobjects"),
        subrequest_error(500, "<html>oops</html>", "sobjects"),  # no error code at all
        subrequest_error(429, "slow down", "composite"),
        subrequest_error(403, _body("REQUEST_LIMIT_EXCEEDED"), "composite"),  # out of API calls
    ]
    assert [is_unavailable(e) for e in down] == [True] * len(down)
    record_level = [
        subrequest_error(400, _body("UNABLE_TO_LOCK_ROW"), "sobjects"),  # retryable, one record
        subrequest_error(400, _body("FIELD_CUSTOM_VALIDATION_EXCEPTION"), "sobjects"),
        subrequest_error(404, _body("NOT_FOUND"), "sobjects"),
        TransientError("the writer raised", psp="salesforce", code="UNEXPECTED"),  # a bug
        None,
    ]
    assert [is_unavailable(e) for e in record_level] == [False] * len(record_level)
