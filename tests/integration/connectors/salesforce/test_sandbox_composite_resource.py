"""The REST Composite resource (``POST composite``): many subrequests, one API call.

The CRM writer batches its SOQL reads and sObject Collections writes through it, so the sandbox
must count the whole composite once, enforce the subrequest limits, and treat each subrequest
like the standalone call it stands for (fault injection included).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from connectors.salesforce.sandbox import Sandbox, start_sandbox

BASE = "/services/data/v59.0"


def _seed(sandbox: Sandbox, count: int) -> list[str]:
    rows = [{"External_Id__c": f"cmp-{n}", "Status__c": "created"} for n in range(count)]
    return sandbox.admin.seed("Payment__c", rows)


def _query(soql: str, ref: str, endpoint: str = "query") -> dict[str, Any]:
    return {"method": "GET", "url": f"{BASE}/{endpoint}/?q={quote(soql)}", "referenceId": ref}


def _patch(ids: list[str], status: str, ref: str) -> dict[str, Any]:
    records = [{"attributes": {"type": "Payment__c"}, "Id": i, "Status__c": status} for i in ids]
    return {
        "method": "PATCH",
        "url": f"{BASE}/composite/sobjects",
        "referenceId": ref,
        "body": {"allOrNone": False, "records": records},
    }


def _composite(sf: Salesforce, subs: list[dict[str, Any]], all_or_none: bool = False) -> Any:
    body = {"allOrNone": all_or_none, "compositeRequest": subs}
    answer = sf.restful("composite", method="POST", json=body)
    assert isinstance(answer, dict)
    return answer["compositeResponse"]


def test_queries_writes_and_reads_in_one_call(sf: Salesforce, sandbox: Sandbox) -> None:
    ids = _seed(sandbox, 3)
    sandbox.admin.reset_usage()
    answer = _composite(
        sf,
        [
            _patch(ids[:2], "confirmed", "write"),
            _query("SELECT Id, Status__c FROM Payment__c ORDER BY External_Id__c", "read"),
            _query("SELECT COUNT() FROM Payment__c", "all", endpoint="queryAll"),
            {"method": "GET", "url": f"{BASE}/sobjects/Payment__c/{ids[0]}", "referenceId": "one"},
        ],
    )
    assert sandbox.admin.usage()["used"] == 1  # the whole composite is one API call
    assert [a["referenceId"] for a in answer] == ["write", "read", "all", "one"]
    assert [a["httpStatusCode"] for a in answer] == [200, 200, 200, 200]
    assert [r["success"] for r in answer[0]["body"]] == [True, True]
    read = answer[1]["body"]
    assert read["done"] and [r["Status__c"] for r in read["records"]] == [
        "confirmed",
        "confirmed",
        "created",
    ]  # later subrequests see what earlier ones wrote
    assert answer[2]["body"]["totalSize"] == 3
    assert answer[3]["body"]["Id"] == ids[0] and answer[3]["body"]["Status__c"] == "confirmed"


def test_more_than_25_subrequests_or_5_queries_is_refused(sf: Salesforce, sandbox: Sandbox) -> None:
    (rid,) = _seed(sandbox, 1)
    reads = [
        {"method": "GET", "url": f"{BASE}/sobjects/Payment__c/{rid}", "referenceId": f"g{n}"}
        for n in range(26)
    ]
    with pytest.raises(SalesforceMalformedRequest) as too_many:
        _composite(sf, reads)
    assert too_many.value.status == 400
    (error,) = too_many.value.content["compositeResponse"]
    assert error["httpStatusCode"] == 400
    assert error["body"][0]["errorCode"] == "LIMIT_EXCEEDED"
    assert "25" in error["body"][0]["message"]
    _composite(sf, reads[:25])  # 25 is fine
    queries = [_query("SELECT Id FROM Payment__c", f"q{n}") for n in range(4)]
    writes = [_patch([rid], "x", f"w{n}") for n in range(2)]
    with pytest.raises(SalesforceMalformedRequest) as too_heavy:
        _composite(sf, queries + writes)
    body = too_heavy.value.content["compositeResponse"][0]["body"]
    assert body[0]["errorCode"] == "LIMIT_EXCEEDED" and "5 query" in body[0]["message"]
    assert sandbox.admin.record("Payment__c", rid)["Status__c"] == "created"  # nothing ran
    assert len(_composite(sf, queries + writes[:1] + reads[:20])) == 25


def test_injected_outages_hit_the_subrequests_on_their_own_path(
    sf: Salesforce, sandbox: Sandbox
) -> None:
    ids = _seed(sandbox, 4)
    sandbox.admin.fail_next(count=2, status=503, path="composite/sobjects", method="PATCH")
    sandbox.admin.reset_usage()
    answer = _composite(
        sf,
        [
            _patch(ids[:1], "a", "w0"),
            _query("SELECT Id FROM Payment__c", "q0"),
            _patch(ids[1:2], "b", "w1"),
            _patch(ids[2:3], "c", "w2"),
        ],
    )
    assert sandbox.admin.usage()["used"] == 1
    assert [a["httpStatusCode"] for a in answer] == [503, 200, 503, 200]
    assert answer[0]["body"] == [
        {
            "message": "Server unavailable (sandbox fault injection)",
            "errorCode": "SERVER_UNAVAILABLE",
        }
    ]
    stored = {r["Id"]: r["Status__c"] for r in sandbox.admin.records("Payment__c")}
    assert [stored[i] for i in ids] == ["created", "created", "c", "created"]
    # A fault on the query path hits a query subrequest, not the composite itself.
    sandbox.admin.fail_next(count=1, status=500, path="/query")
    answer = _composite(sf, [_query("SELECT Id FROM Payment__c", "q0"), _patch(ids, "d", "w")])
    assert [a["httpStatusCode"] for a in answer] == [500, 200]


def test_failed_subrequests_do_not_stop_the_others(sf: Salesforce, sandbox: Sandbox) -> None:
    ids = _seed(sandbox, 2)
    sandbox.admin.add_rule(obj="Payment__c", record_id=ids[1], message="Locked")
    answer = _composite(
        sf,
        [
            _query("SELECT Nope__c FROM Payment__c", "bad"),
            _patch(ids, "settled", "write"),
            {
                "method": "GET",
                "url": f"{BASE}/sobjects/Payment__c/a015g0000009999AAA",
                "referenceId": "gone",
            },
            {"method": "GET", "url": f"{BASE}/nowhere", "referenceId": "nowhere"},
        ],
    )
    assert [a["httpStatusCode"] for a in answer] == [400, 200, 404, 400]
    assert answer[0]["body"][0]["errorCode"] == "INVALID_FIELD"
    assert [r["success"] for r in answer[1]["body"]] == [True, False]
    assert answer[1]["body"][1]["errors"][0]["message"] == "Locked"
    assert answer[2]["body"][0]["errorCode"] == "NOT_FOUND"
    assert sandbox.admin.record("Payment__c", ids[0])["Status__c"] == "settled"


def test_all_or_none_rolls_every_subrequest_back(sf: Salesforce, sandbox: Sandbox) -> None:
    ids = _seed(sandbox, 2)
    answer = _composite(
        sf,
        [
            _patch(ids, "settled", "write"),
            {
                "method": "PATCH",
                "url": f"{BASE}/sobjects/Payment__c/a015g0000009999AAA",
                "referenceId": "gone",
                "body": {"Status__c": "x"},
            },
        ],
        all_or_none=True,
    )
    assert [a["httpStatusCode"] for a in answer] == [400, 404]
    assert answer[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert {r["Status__c"] for r in sandbox.admin.records("Payment__c")} == {"created"}


def test_query_pages_continue_with_query_more() -> None:
    with start_sandbox(page_size=2) as sandbox:
        _seed(sandbox, 5)
        sf = sandbox.client(user="integration")
        (first,) = _composite(sf, [_query("SELECT Id FROM Payment__c", "q")])
        page = first["body"]
        assert not page["done"] and len(page["records"]) == 2
        follow = {"method": "GET", "url": page["nextRecordsUrl"], "referenceId": "more"}
        (second,) = _composite(sf, [follow])
        assert second["httpStatusCode"] == 200 and len(second["body"]["records"]) == 2


def test_a_malformed_composite_is_a_bad_request(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest):
        sf.restful("composite", method="POST", json={"compositeRequest": "nope"})
    with pytest.raises(SalesforceMalformedRequest):
        sub = {"method": "GET", "url": f"{BASE}/limits"}
        sf.restful("composite", method="POST", json={"compositeRequest": [sub, sub]})
