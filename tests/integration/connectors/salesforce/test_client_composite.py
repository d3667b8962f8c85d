"""SalesforceClient over the Composite resource: five reads or 1,000 record updates per call,
and each failure mapped as the same call made alone would be."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.errors import PermanentError, TransientError
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.sandbox import Sandbox, start_sandbox


@pytest.fixture
def client(sandbox: Sandbox) -> SalesforceClient:
    return SalesforceClient(sandbox.client(user="integration"))


def _seed(sandbox: Sandbox, count: int) -> list[str]:
    rows = [{"External_Id__c": f"cl-{n:04d}", "Status__c": "created"} for n in range(count)]
    return sandbox.admin.seed("Payment__c", rows)


def _by_ext(n: int) -> str:
    return f"SELECT Id, External_Id__c FROM Payment__c WHERE External_Id__c = 'cl-{n:04d}'"


def _chunks(ids: list[str], size: int, status: str) -> list[list[dict[str, Any]]]:
    records = [{"Id": rid, "Status__c": status} for rid in ids]
    return [records[i : i + size] for i in range(0, len(records), size)]


def test_five_queries_per_call_in_order(sandbox: Sandbox, client: SalesforceClient) -> None:
    ids = _seed(sandbox, 7)
    sandbox.admin.reset_usage()
    rows = client.query_many([_by_ext(n) for n in (6, 5, 4, 3, 2, 1, 0)] + [_by_ext(99)])
    assert [r[0]["Id"] if r else None for r in rows] == [*ids[::-1], None]
    assert "attributes" not in rows[0][0]
    assert client.api_calls == sandbox.admin.usage()["used"] == 2  # 8 queries: 5 + 3
    assert client.query_many([]) == [] and client.api_calls == 2


def test_a_query_with_more_pages_follows_them() -> None:
    with start_sandbox(page_size=2) as sandbox:
        ids = _seed(sandbox, 5)
        client = SalesforceClient(sandbox.client(user="integration"))
        (rows,) = client.query_many(["SELECT Id FROM Payment__c"])
        assert sorted(r["Id"] for r in rows) == sorted(ids)
        assert client.api_calls == 3  # the composite, then two query_more pages


def test_a_failed_query_subrequest_is_mapped_like_a_failed_query(
    sandbox: Sandbox, client: SalesforceClient
) -> None:
    _seed(sandbox, 2)
    sandbox.admin.fail_next(count=1, status=503, path="/query")
    outcomes = client.query_many_outcomes(
        [_by_ext(0), _by_ext(1), "SELECT Nope__c FROM Payment__c"]
    )
    down, ok, bad = outcomes
    assert isinstance(down, TransientError) and down.should_retry
    assert down.http_status == 503 and down.code == "SERVER_UNAVAILABLE"
    assert isinstance(ok, list) and len(ok) == 1
    assert isinstance(bad, PermanentError) and not bad.should_retry
    assert bad.code == "INVALID_FIELD" and bad.http_status == 400
    assert client.api_calls == 1
    sandbox.admin.fail_next(count=1, status=503, path="/query")
    with pytest.raises(TransientError):
        client.query_many([_by_ext(0)])


def test_a_failed_composite_call_fails_each_query_it_carried(
    sandbox: Sandbox, client: SalesforceClient
) -> None:
    _seed(sandbox, 1)
    sandbox.admin.fail_next(count=1, status=503, path="/composite", method="POST")
    with pytest.raises(TransientError) as down:
        client.query_many([_by_ext(0)])
    assert down.value.http_status == 503
    sandbox.admin.set_usage(used=10, limit=10)
    outcomes = client.query_many_outcomes([_by_ext(0), _by_ext(0)])
    assert all(isinstance(o, TransientError) for o in outcomes)
    assert {o.code for o in outcomes if isinstance(o, TransientError)} == {"REQUEST_LIMIT_EXCEEDED"}


def test_1000_records_per_update_call(sandbox: Sandbox, client: SalesforceClient) -> None:
    ids = _seed(sandbox, 1100)
    sandbox.admin.reset_usage()
    results = client.update_records_many("Payment__c", _chunks(ids, 200, "confirmed"))
    assert [len(r) for r in results] == [200, 200, 200, 200, 200, 100]
    assert all(r.success for chunk in results for r in chunk)
    assert [r.record_id for chunk in results for r in chunk] == ids
    assert client.api_calls == sandbox.admin.usage()["used"] == 2  # 1,000 + 100 records
    assert {r["Status__c"] for r in sandbox.admin.records("Payment__c")} == {"confirmed"}


def test_a_failed_collection_subrequest_fails_its_records_retryably(
    sandbox: Sandbox, client: SalesforceClient
) -> None:
    ids = _seed(sandbox, 6)
    sandbox.admin.add_rule(obj="Payment__c", record_id=ids[5], message="Locked")
    sandbox.admin.fail_next(count=1, status=503, path="composite/sobjects", method="PATCH")
    down, ok, mixed = client.update_records_many("Payment__c", _chunks(ids, 2, "settled"))
    assert [r.record_id for r in down] == ids[:2]
    for result in down:
        assert isinstance(result.error, TransientError) and result.error.http_status == 503
        assert result.error.code == "SERVER_UNAVAILABLE"
    assert all(r.success for r in ok)
    assert mixed[0].success and isinstance(mixed[1].error, PermanentError)
    assert mixed[1].error.code == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    stored = {r["Id"]: r["Status__c"] for r in sandbox.admin.records("Payment__c")}
    assert [stored[i] for i in ids] == [
        "created",
        "created",
        "settled",
        "settled",
        "settled",
        "created",
    ]
    assert client.api_calls == 1


def test_a_failed_composite_call_fails_only_the_records_it_carried(
    sandbox: Sandbox, client: SalesforceClient
) -> None:
    ids = _seed(sandbox, 12)
    # The first composite (5 chunks of 2) goes through, the second one is refused.
    sandbox.admin.set_usage(used=0, limit=1)
    results = client.update_records_many("Payment__c", _chunks(ids, 2, "settled"))
    assert all(r.success for chunk in results[:5] for r in chunk)
    assert [r.record_id for r in results[5]] == ids[10:]
    for result in results[5]:
        assert isinstance(result.error, TransientError)
        assert result.error.code == "REQUEST_LIMIT_EXCEEDED" and result.error.should_retry


def test_composite_limits_are_checked_before_calling(client: SalesforceClient) -> None:
    with pytest.raises(ValueError, match="at most 5"):
        client.composite([("GET", "query/?q=SELECT+Id+FROM+User", None)] * 6)
    with pytest.raises(ValueError):
        client.composite([("GET", "limits", None)] * 26)
    with pytest.raises(ValueError):
        client.update_records_many("Payment__c", [[{"Id": "x"}] * 201])
    assert client.api_calls == 0
