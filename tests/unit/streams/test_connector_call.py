"""Connector calls made outside the command stage are measured like the command stage's.

DESIGN.md (Observability) promises connector call latency by PSP and operation; reconcile's and
the janitor's status look-ups go through :func:`streams.agents.common.connector_call`.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from connectors.errors import AuthenticationError, NotFoundError, PermanentError, TransientError
from streams.agents.common import connector_call, error_kind

PSP, OP = "unit-psp", "lookup_status"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, {"psp": PSP, "operation": OP, **labels}) or 0.0


def test_each_call_is_timed_and_counted_by_result() -> None:
    before_count = _sample("paybus_connector_call_seconds_count")
    before_ok = _sample("paybus_connector_calls_total", result="ok")
    before_err = _sample("paybus_connector_calls_total", result="error")
    before_kind = _sample("paybus_connector_errors_total", kind="transient")

    assert asyncio.run(connector_call(PSP, OP, lambda: "confirmed")) == "confirmed"

    def failing() -> str:
        raise TransientError("503 from the PSP", psp=PSP, http_status=503)

    with pytest.raises(TransientError):  # the caller names its own outcome
        asyncio.run(connector_call(PSP, OP, failing))

    assert _sample("paybus_connector_call_seconds_count") == before_count + 2
    assert _sample("paybus_connector_calls_total", result="ok") == before_ok + 1
    assert _sample("paybus_connector_calls_total", result="error") == before_err + 1
    assert _sample("paybus_connector_errors_total", kind="transient") == before_kind + 1


def test_error_kinds() -> None:
    assert error_kind(TransientError("x")) == "transient"
    assert error_kind(PermanentError("x")) == "permanent"
    assert error_kind(PermanentError("x", should_retry=True)) == "transient"
    assert error_kind(AuthenticationError("revoked key", http_status=401)) == "credentials"
    # a 404: an id the CRM mistyped, or a payment another account's key cannot see
    assert error_kind(NotFoundError("no such payment", http_status=404)) == "not_found"
    assert error_kind(NotImplementedError()) == "unsupported"
    assert error_kind(RuntimeError()) == "unexpected"
