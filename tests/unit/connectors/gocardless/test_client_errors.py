"""gocardless_pro errors -> paybus errors: status, request id, reason, retryability."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from gocardless_pro import errors as gc

from connectors.errors import (
    AuthenticationError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from connectors.gocardless.client import map_error


def api_error(cls: type[gc.ApiError], code: int, kind: str, reason: str) -> gc.ApiError:
    body: dict[str, Any] = {
        "message": "boom",
        "type": kind,
        "code": code,
        "request_id": "req-1",
        "errors": [{"reason": reason, "message": "boom"}],
    }
    return cls(body)


@pytest.mark.parametrize(
    ("exc", "cls", "status", "retry"),
    [
        (api_error(gc.ValidationFailedError, 422, "validation_failed", "invalid"),
         PermanentError, 422, False),
        (api_error(gc.InvalidStateError, 422, "invalid_state", "mandate_is_inactive"),
         PermanentError, 422, False),
        (api_error(gc.InvalidApiUsageError, 404, "invalid_api_usage", "resource_not_found"),
         NotFoundError, 404, False),
        (api_error(gc.InvalidApiUsageError, 400, "invalid_api_usage", "invalid_filters"),
         PermanentError, 400, False),
        (api_error(gc.AuthenticationError, 401, "invalid_api_usage", "unauthorized"),
         AuthenticationError, 401, False),
        (api_error(gc.RateLimitError, 429, "invalid_api_usage", "rate_limit_exceeded"),
         TransientError, 429, True),
        (api_error(gc.GoCardlessInternalError, 500, "gocardless", "internal_server_error"),
         TransientError, 500, True),
        (api_error(gc.GoCardlessInternalError, 503, "gocardless", "service_unavailable"),
         TransientError, 503, True),
    ],
)  # fmt: skip
def test_api_errors(exc: gc.ApiError, cls: type[Exception], status: int, retry: bool) -> None:
    err = map_error(exc)
    assert type(err) is cls
    assert (err.http_status, err.should_retry, err.request_id) == (status, retry, "req-1")
    assert err.code == exc.errors[0]["reason"] and err.psp == "gocardless"


def test_network_and_malformed_answers() -> None:
    assert map_error(requests.ConnectionError("refused")).should_retry is True
    assert map_error(requests.Timeout("slow")).should_retry is True
    bad_gateway = map_error(gc.MalformedResponseError("bad", "<html>", 502))
    assert (bad_gateway.should_retry, bad_gateway.http_status) == (True, 502)
    assert map_error(gc.MalformedResponseError("bad", "<html>", 400)).should_retry is False
    assert map_error(gc.GoCardlessProError("bad url param")).should_retry is False
