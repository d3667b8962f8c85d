"""sObject Collections through ``sf.restful('composite/sobjects', ...)``.

simple-salesforce has no wrapper for sObject Collections (``sf.bulk`` is the asynchronous Bulk
API), so the connector's batched writer calls them through ``restful``; these tests pin that
path down.
"""

from __future__ import annotations

from typing import Any

import pytest
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from connectors.salesforce.sandbox import Sandbox


def _seed(sandbox: Sandbox, count: int) -> list[str]:
    rows = [
        {"External_Id__c": f"pay-{n}", "Status__c": "created", "Bus_Seq__c": 0}
        for n in range(count)
    ]
    return sandbox.admin.seed("Payment__c", rows)


def _updates(ids: list[str], status: str) -> list[dict[str, Any]]:
    return [
        {"attributes": {"type": "Payment__c"}, "Id": rid, "Status__c": status, "Bus_Seq__c": 1}
        for rid in ids
    ]


def test_update_200_records_in_one_call_with_one_validation_error(
    sf: Salesforce, sandbox: Sandbox
) -> None:
    ids = _seed(sandbox, 200)
    sandbox.admin.add_rule(obj="Payment__c", record_id=ids[57], message="Amount locked")
    sandbox.admin.reset_usage()
    records = _updates(ids, "confirmed")
    results = sf.restful(
        "composite/sobjects", method="PATCH", json={"allOrNone": False, "records": records}
    )
    assert results is not None and len(results) == 200
    assert sandbox.admin.usage()["used"] == 1  # one API call for 200 records
    failed = [r for r in results if not r["success"]]
    assert failed == [
        {
            "id": ids[57],
            "success": False,
            "errors": [
                {
                    "statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                    "message": "Amount locked",
                    "fields": [],
                }
            ],
        }
    ]
    assert [r["id"] for r in results] == ids
    stored = {r["Id"]: r for r in sandbox.admin.records("Payment__c")}
    assert stored[ids[57]]["Status__c"] == "created"
    assert sum(r["Status__c"] == "confirmed" for r in stored.values()) == 199
    assert all(
        r["LastModifiedById"] == sandbox.user_id("integration")
        for rid, r in stored.items()
        if rid != ids[57]
    )


def test_field_rule_fails_matching_records(sf: Salesforce, sandbox: Sandbox) -> None:
    ids = _seed(sandbox, 3)
    sandbox.admin.add_rule(obj="Payment__c", field="Status__c", equals="refunded")
    records = _updates(ids[:2], "refunded") + _updates(ids[2:], "paid_out")
    results = sf.restful("composite/sobjects", method="PATCH", json={"records": records})
    assert results is not None
    assert [r["success"] for r in results] == [False, False, True]
    assert results[0]["errors"][0]["statusCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert results[0]["errors"][0]["fields"] == ["Status__c"]


def test_201_records_are_refused(sf: Salesforce, sandbox: Sandbox) -> None:
    ids = _seed(sandbox, 201)
    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.restful(
            "composite/sobjects",
            method="PATCH",
            json={"allOrNone": False, "records": _updates(ids, "confirmed")},
        )
    assert refused.value.status == 400
    assert refused.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"
    assert all(r["Status__c"] == "created" for r in sandbox.admin.records("Payment__c"))


def test_all_or_none_rolls_back_everything(sf: Salesforce, sandbox: Sandbox) -> None:
    ids = _seed(sandbox, 5)
    before = sandbox.admin.records("Payment__c")
    sandbox.admin.add_rule(record_id=ids[3])
    results = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"allOrNone": True, "records": _updates(ids, "confirmed")},
    )
    assert results is not None
    assert [r["success"] for r in results] == [False] * 5
    assert results[3]["errors"][0]["statusCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert {r["errors"][0]["statusCode"] for i, r in enumerate(results) if i != 3} == {
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    }
    assert sandbox.admin.records("Payment__c") == before
    sandbox.admin.clear_faults()
    again = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"allOrNone": True, "records": _updates(ids, "confirmed")},
    )
    assert again is not None and all(r["success"] for r in again)


def test_create_retrieve_and_delete_collections(sf: Salesforce, sandbox: Sandbox) -> None:
    created = sf.restful(
        "composite/sobjects",
        method="POST",
        json={
            "records": [
                {"attributes": {"type": "Payment__c"}, "External_Id__c": "x1", "Amount__c": 5},
                {"attributes": {"type": "Mandate__c"}, "External_Id__c": "m1"},
                {"attributes": {"type": "Payment__c"}, "Nope__c": 1},
            ]
        },
    )
    assert created is not None
    assert [r["success"] for r in created] == [True, True, False]
    assert created[2]["errors"][0]["statusCode"] == "INVALID_FIELD"
    pay, mandate = created[0]["id"], created[1]["id"]
    assert pay.startswith("a01") and mandate.startswith("a02")

    fetched = sf.restful(
        "composite/sobjects/Payment__c",
        params={"ids": f"{pay},a015g000000009ZAAA", "fields": "Id,Amount__c"},
    )
    assert fetched is not None
    assert fetched[0]["Amount__c"] == 5 and fetched[1] is None

    missing_id = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"records": [{"attributes": {"type": "Payment__c"}, "Status__c": "x"}]},
    )
    assert missing_id is not None and missing_id[0]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"

    deleted = sf.restful(
        "composite/sobjects",
        method="DELETE",
        params={"ids": f"{pay},{mandate}", "allOrNone": "false"},
    )
    assert deleted is not None and [r["success"] for r in deleted] == [True, True]
    assert sandbox.admin.records("Payment__c") == []


def test_upsert_by_external_id_updates_inserts_and_reports_each_record(
    sf: Salesforce, sandbox: Sandbox
) -> None:
    """``PATCH composite/sobjects/{obj}/{field}``: one call; an existing external id is
    updated, a new one inserted (``created``), a repeated one and a missing one fail alone."""
    ids = _seed(sandbox, 2)
    sandbox.admin.reset_usage()
    records: list[dict[str, Any]] = [
        {"attributes": {"type": "Payment__c"}, "External_Id__c": ext, "Status__c": "confirmed"}
        for ext in ("pay-0", "pay-new", "pay-dup", "pay-dup")
    ] + [{"attributes": {"type": "Payment__c"}, "Status__c": "confirmed"}]
    results = sf.restful(
        "composite/sobjects/Payment__c/External_Id__c",
        method="PATCH",
        json={"allOrNone": False, "records": records},
    )
    assert sandbox.admin.usage()["used"] == 1
    assert results[0] == {"id": ids[0], "success": True, "errors": [], "created": False}
    assert results[1]["success"] and results[1]["created"] and results[1]["id"] not in ids
    assert [r["errors"][0]["statusCode"] for r in results[2:]] == [
        "DUPLICATE_EXTERNAL_ID", "DUPLICATE_EXTERNAL_ID", "MISSING_ARGUMENT",
    ]  # fmt: skip
    stored = {r["External_Id__c"]: r["Status__c"] for r in sandbox.admin.records("Payment__c")}
    assert stored == {"pay-0": "confirmed", "pay-1": "created", "pay-new": "confirmed"}


def test_upsert_by_a_field_that_is_not_an_external_id_is_refused(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest, match="not an External ID"):
        sf.restful(
            "composite/sobjects/Payment__c/Status__c",
            method="PATCH",
            json={"records": [{"attributes": {"type": "Payment__c"}, "Status__c": "x"}]},
        )
