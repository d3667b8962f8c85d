"""The sandbox through the real simple-salesforce client: sObjects, upsert, describe, SOQL."""

from __future__ import annotations

import pytest
import requests
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from connectors.salesforce.sandbox import Sandbox, make_salesforce, start_sandbox


def test_instance_url_keeps_the_port(sandbox: Sandbox, sf: Salesforce) -> None:
    assert sandbox.instance_url.startswith("https://127.0.0.1:")
    assert sf.sf_instance == f"127.0.0.1:{sandbox.port}"
    assert sf.base_url == f"{sandbox.instance_url}/services/data/v59.0/"


def test_create_get_update_delete(sf: Salesforce) -> None:
    created = sf.Payment__c.create(
        {"Amount__c": 12.5, "Currency__c": "EUR", "Status__c": "created", "Bus_Seq__c": 1}
    )
    assert created["success"] is True and created["errors"] == []
    rid = created["id"]
    assert len(rid) == 18 and rid.startswith("a01")

    record = sf.Payment__c.get(rid)
    assert record["attributes"]["type"] == "Payment__c"
    assert record["Amount__c"] == 12.5 and record["Status__c"] == "created"
    assert record["Name"] and record["CreatedDate"].endswith("+0000")

    assert sf.Payment__c.update(rid, {"Status__c": "confirmed", "Bus_Seq__c": 2}) == 204
    updated = sf.Payment__c.get(rid)
    assert updated["Status__c"] == "confirmed" and updated["Bus_Seq__c"] == 2
    assert updated["SystemModstamp"] > record["SystemModstamp"]
    assert updated["CreatedDate"] == record["CreatedDate"]

    assert sf.Payment__c.get(rid[:15])["Id"] == rid  # 15-character ids are accepted too

    assert sf.Payment__c.delete(rid) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Payment__c.get(rid)


def test_upsert_by_external_id_creates_then_updates(sf: Salesforce) -> None:
    assert sf.Payment__c.upsert("External_Id__c/pay-1", {"Status__c": "created"}) == 201
    first = sf.Payment__c.get_by_custom_id("External_Id__c", "pay-1")
    assert first["Status__c"] == "created" and first["External_Id__c"] == "pay-1"

    response = sf.Payment__c.upsert(
        "External_Id__c/pay-1", {"Status__c": "confirmed"}, raw_response=True
    )
    # API v46.0+ answers an update by upsert with 200 and a body (older versions: 204).
    assert response.status_code == 200
    assert response.json() == {"id": first["Id"], "success": True, "errors": [], "created": False}
    assert sf.Payment__c.get(first["Id"])["Status__c"] == "confirmed"
    assert sf.query("SELECT COUNT() FROM Payment__c")["totalSize"] == 1


def test_external_ids_match_whatever_their_case(sf: Salesforce) -> None:
    """As in Salesforce (external ids are case-insensitive unless defined otherwise): an
    upsert naming the record in another case updates it; it does not create a second one."""
    sf.Payment__c.upsert("External_Id__c/Pay-Case", {"Status__c": "created"})
    response = sf.Payment__c.upsert(
        "External_Id__c/PAY-CASE", {"Status__c": "confirmed"}, raw_response=True
    )
    assert response.status_code == 200 and response.json()["created"] is False
    found = sf.Payment__c.get_by_custom_id("External_Id__c", "pay-case")
    assert found["Status__c"] == "confirmed" and found["External_Id__c"] == "Pay-Case"
    assert sf.query("SELECT COUNT() FROM Payment__c")["totalSize"] == 1


def test_unique_external_id_and_field_checks(sf: Salesforce) -> None:
    sf.Payment__c.create({"External_Id__c": "dup"})
    with pytest.raises(SalesforceMalformedRequest) as dup:
        sf.Payment__c.create({"External_Id__c": "dup"})
    assert dup.value.content[0]["errorCode"] == "DUPLICATE_VALUE"
    with pytest.raises(SalesforceMalformedRequest) as folded:
        sf.Payment__c.create({"External_Id__c": "DUP"})  # unique text: case-insensitive
    assert folded.value.content[0]["errorCode"] == "DUPLICATE_VALUE"
    with pytest.raises(SalesforceMalformedRequest) as unknown:
        sf.Payment__c.create({"Nope__c": 1})
    assert unknown.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as readonly:
        sf.Payment__c.create({"SystemModstamp": "2020-01-01T00:00:00Z"})
    assert readonly.value.content[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    with pytest.raises(SalesforceMalformedRequest) as badtype:
        sf.Payment__c.create({"Amount__c": "lots"})
    assert badtype.value.content[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_refund_lookup_must_point_at_a_payment(sf: Salesforce) -> None:
    payment = sf.Payment__c.create({"Amount__c": 10})["id"]
    refund = sf.Refund__c.create({"Payment__c": payment, "Amount__c": 4})["id"]
    assert refund.startswith("a03")
    assert sf.Refund__c.get(refund)["Payment__c"] == payment
    mandate = sf.Mandate__c.create({"Status__c": "active"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as bad:
        sf.Refund__c.create({"Payment__c": mandate})
    assert bad.value.content[0]["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"


def test_describe(sf: Salesforce) -> None:
    described = sf.Payment__c.describe()
    assert described["name"] == "Payment__c" and described["keyPrefix"] == "a01"
    fields = {f["name"]: f for f in described["fields"]}
    assert fields["Amount__c"]["type"] == "double"
    assert fields["Bus_Seq__c"]["type"] == "double"
    assert fields["Settlement_Date__c"]["type"] == "date"
    assert fields["External_Id__c"]["externalId"] is True
    assert fields["Status__c"]["updateable"] is True
    assert fields["SystemModstamp"]["updateable"] is False
    assert fields["CreatedById"]["referenceTo"] == ["User"]
    refund = {f["name"]: f for f in sf.Refund__c.describe()["fields"]}
    assert refund["Payment__c"]["referenceTo"] == ["Payment__c"]
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Payment__c", "Mandate__c", "Refund__c"} <= names


def test_soql_where_and_order_limit(sf: Salesforce) -> None:
    rows = [
        ("a", "card", 10.0, "2026-11-20"),
        ("b", "card", 30.0, "2026-11-22"),
        ("c", "direct_debit", 20.0, "2026-11-21"),
        ("d", "card", 40.0, None),
    ]
    for ext, method, amount, settled in rows:
        sf.Payment__c.create(
            {
                "External_Id__c": ext,
                "Method__c": method,
                "Amount__c": amount,
                "Settlement_Date__c": settled,
            }
        )
    result = sf.query(
        "SELECT External_Id__c, Amount__c FROM Payment__c "
        "WHERE Method__c = 'card' AND Amount__c >= 20 ORDER BY Amount__c DESC LIMIT 1"
    )
    assert result["totalSize"] == 1 and result["done"] is True
    assert [r["External_Id__c"] for r in result["records"]] == ["d"]
    assert list(result["records"][0]) == ["attributes", "External_Id__c", "Amount__c"]

    dated = sf.query_all(
        "select External_Id__c from Payment__c where Settlement_Date__c > 2026-11-20 "
        "or External_Id__c in ('a') order by External_Id__c asc"
    )
    assert [r["External_Id__c"] for r in dated["records"]] == ["a", "b", "c"]

    like = sf.query("SELECT Id FROM Payment__c WHERE Method__c LIKE 'direct%'")
    assert like["totalSize"] == 1
    nulls = sf.query("SELECT Id FROM Payment__c WHERE Settlement_Date__c = null")
    assert nulls["totalSize"] == 1


def test_soql_by_id_reads_only_the_named_records(sf: Salesforce) -> None:
    """Queries by Id or external id take the indexed path: rows, order, filters as a scan."""
    ids = [
        sf.Payment__c.create({"External_Id__c": f"x{n}", "Amount__c": n})["id"] for n in range(5)
    ]
    listed = ", ".join(f"'{i}'" for i in [ids[3], ids[1], ids[4], "a0X5g0000000zzzAAA"])
    rows = sf.query(f"SELECT Id, Amount__c FROM Payment__c WHERE Id IN ({listed})")["records"]
    assert [r["Id"] for r in rows] == [ids[1], ids[3], ids[4]]  # SystemModstamp order
    both = f"SELECT Id FROM Payment__c WHERE Amount__c >= 4 AND Id IN ({listed})"
    assert [r["Id"] for r in sf.query(both)["records"]] == [ids[4]]
    either = f"SELECT Id FROM Payment__c WHERE Amount__c = 0 OR Id = '{ids[2]}'"
    assert [r["Id"] for r in sf.query(either)["records"]] == [ids[0], ids[2]]
    by_ext = "SELECT Id FROM Payment__c WHERE External_Id__c IN ('X3', 'x0') OR Id = "
    assert [r["Id"] for r in sf.query(by_ext + f"'{ids[1]}'")["records"]] == [*ids[:2], ids[3]]
    sf.Payment__c.update(ids[3], {"External_Id__c": "y3"})  # the index follows updates
    assert [r["Id"] for r in sf.query(by_ext + f"'{ids[1]}'")["records"]] == ids[:2]


def test_soql_on_system_modstamp_and_user(
    sf: Salesforce, staff_sf: Salesforce, sandbox: Sandbox
) -> None:
    first = sf.Payment__c.create({"Status__c": "created"})["id"]
    stamp = sf.Payment__c.get(first)["SystemModstamp"]  # 2026-...T..:..:..SSS+0000
    staff_sf.Payment__c.create({"Status__c": "created"})
    after = sf.query_all(
        f"SELECT Id, LastModifiedById FROM Payment__c WHERE SystemModstamp > {stamp} "
        "ORDER BY SystemModstamp, Id"
    )["records"]
    assert [r["LastModifiedById"] for r in after] == [sandbox.user_id("staff")]
    iso_z = stamp[:19] + "Z"
    assert sf.query(f"SELECT Id FROM Payment__c WHERE SystemModstamp >= {iso_z}")["totalSize"] == 2
    mine = sf.query(
        f"SELECT Id FROM Payment__c WHERE LastModifiedById != '{sandbox.user_id('integration')}'"
    )
    assert mine["totalSize"] == 1


def test_malformed_and_invalid_queries(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as malformed:
        sf.query("SELECT Id FROM")
    assert malformed.value.content[0]["errorCode"] == "MALFORMED_QUERY"
    with pytest.raises(SalesforceMalformedRequest) as quoted:
        sf.query("SELECT Id FROM Payment__c WHERE SystemModstamp > '2026-11-22T00:00:00Z'")
    assert quoted.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as unknown:
        sf.query("SELECT Id FROM Nothing__c")
    assert unknown.value.content[0]["errorCode"] == "INVALID_TYPE"


def test_query_paging_past_one_page() -> None:
    with start_sandbox(page_size=7) as small:
        sf = small.client()
        ids = small.admin.seed("Payment__c", [{"Bus_Seq__c": n} for n in range(20)])
        first = sf.query("SELECT Id, Bus_Seq__c FROM Payment__c ORDER BY Bus_Seq__c")
        assert first["totalSize"] == 20 and first["done"] is False
        assert len(first["records"]) == 7
        assert first["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
        second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
        assert len(second["records"]) == 7 and second["done"] is False
        everything = sf.query_all("SELECT Id FROM Payment__c ORDER BY Bus_Seq__c")
        assert [r["Id"] for r in everything["records"]] == ids
        assert everything["totalSize"] == 20


def test_system_modstamp_strictly_increases_across_rapid_writes(
    sf: Salesforce, sandbox: Sandbox
) -> None:
    rid = sf.Payment__c.create({"Status__c": "created"})["id"]
    for seq in range(30):
        sf.Payment__c.update(rid, {"Bus_Seq__c": seq})
    batch = [{"attributes": {"type": "Payment__c"}, "Bus_Seq__c": n} for n in range(50)]
    sf.restful("composite/sobjects", method="POST", json={"records": batch})
    stamps = [r["SystemModstamp"] for r in sandbox.admin.records("Payment__c")]
    assert len(stamps) == 51
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert sf.Payment__c.get(rid)["SystemModstamp"] < stamps[1]


def test_created_and_modified_by_follow_the_session_user(
    sf: Salesforce, staff_sf: Salesforce, sandbox: Sandbox
) -> None:
    staff, bus = sandbox.user_id("staff"), sandbox.user_id("integration")
    assert staff != bus and staff.startswith("005") and bus.startswith("005")
    rid = staff_sf.Payment__c.create({"Status__c": "created"})["id"]
    record = sf.Payment__c.get(rid)
    assert record["CreatedById"] == staff and record["LastModifiedById"] == staff
    sf.Payment__c.update(rid, {"Status__c": "confirmed"})
    record = staff_sf.Payment__c.get(rid)
    assert record["CreatedById"] == staff and record["LastModifiedById"] == bus
    users = sf.query("SELECT Id, Name FROM User ORDER BY Name")["records"]
    assert {(u["Id"], u["Name"]) for u in users} == {(staff, "staff"), (bus, "integration")}


def test_api_usage_header_counts_calls(sf: Salesforce, sandbox: Sandbox) -> None:
    payments = sf.Payment__c  # a new SFType per attribute access: keep one to read its usage
    payments.create({"Status__c": "created"})
    assert payments.api_usage["api-usage"].used == 1
    sf.query("SELECT Id FROM Payment__c")
    sf.query("SELECT Id FROM Payment__c")
    assert sf.api_usage["api-usage"].used == 3
    assert sf.api_usage["api-usage"].total == 15000
    sandbox.admin.records("Payment__c")  # admin calls are free
    limits = sf.limits()
    assert limits["DailyApiRequests"] == {"Max": 15000, "Remaining": 15000 - 4}
    assert sandbox.admin.usage()["used"] == 4
    sandbox.admin.reset_usage()
    sf.query("SELECT Id FROM Payment__c")
    assert sf.api_usage["api-usage"].used == 1


def test_api_limit_exceeded(sandbox: Sandbox, sf: Salesforce) -> None:
    sandbox.admin.set_usage(used=10, limit=10)
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.query("SELECT Id FROM Payment__c")
    assert refused.value.status == 403
    assert refused.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_bad_session_is_refused(sandbox: Sandbox) -> None:
    intruder = make_salesforce(sandbox.instance_url, "wrong-token", sandbox.cert_path)
    with pytest.raises(SalesforceExpiredSession) as refused:
        intruder.query("SELECT Id FROM Payment__c")
    assert refused.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]
    plain = requests.get(
        f"{sandbox.instance_url}/services/data/v59.0/limits",
        verify=str(sandbox.cert_path),
        timeout=5,
    )
    assert plain.status_code == 401 and "Sforce-Limit-Info" in plain.headers
    assert sandbox.admin.usage()["used"] == 0


def test_seeding_sets_system_fields_and_never_reuses_a_seeded_id(
    sf: Salesforce, sandbox: Sandbox
) -> None:
    seeded = "a015g0000000003AAA"
    staff = sandbox.user_id("staff")
    sandbox.admin.add_rule(field="Status__c", equals="legacy")  # seeding skips rules
    ids = sandbox.admin.seed(
        "Payment__c",
        [
            {
                "Id": seeded,
                "Status__c": "legacy",
                "CreatedById": staff,
                "CreatedDate": "2025-01-01T00:00:00Z",
            }
        ],
    )
    assert ids == [seeded]
    record = sf.Payment__c.get(seeded)
    assert record["CreatedById"] == staff
    assert record["CreatedDate"] == "2025-01-01T00:00:00.000+0000"
    assert record["LastModifiedById"] == staff  # seeded as the first configured user
    fresh = {sf.Payment__c.create({"Amount__c": n})["id"] for n in range(4)}
    assert seeded not in fresh and len(fresh) == 4
