"""Pure poller logic: intents, amounts, change ids, watermark round trips, keyset queries."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from connectors.salesforce.poller import (
    ChangePoller,
    Cursor,
    FileWatermarkStore,
    MemoryWatermarkStore,
    Watermark,
    change_id,
    intent_of,
    parse_datetime,
    soql_datetime,
    to_change,
    to_minor,
)
from connectors.salesforce.settings import FieldMap
from streams.records import CrmChange

FIELDS = FieldMap()


def _row(**values: Any) -> dict[str, Any]:
    base = {
        "Id": "a015g0000000001AAA",
        "Name": "P-1",
        "SystemModstamp": "2026-11-22T10:00:00.123+0000",
        "LastModifiedById": "005000000000001AAA",
        "External_Id__c": None,
        "Status__c": "New",
        "Amount__c": 12.34,
        "Currency__c": "eur",
        "Method__c": "Direct Debit",
        "Gateway__c": "GoCardless",
    }
    return base | values


@pytest.mark.parametrize(
    ("kind", "values", "intent"),
    [
        ("payment", {}, "create_payment"),
        ("payment", {"Status__c": None}, "create_payment"),
        ("payment", {"Amount__c": None}, None),
        ("payment", {"Status__c": "Cancel Requested"}, "cancel"),
        ("payment", {"Status__c": "confirmed"}, None),
        ("mandate", {"Amount__c": None}, "create_mandate"),
        ("refund", {}, "refund"),
        ("payment", {"Method__c": "Card", "Payment_Method_Ref__c": "pm_1"}, "create_payment"),
        ("payment", {"Method__c": "Card"}, "request_payment"),
        ("payment", {"Method__c": None, "Payment_Method_Ref__c": ""}, "create_payment"),
    ],
)
def test_intent_follows_the_record_state(
    kind: str, values: dict[str, Any], intent: str | None
) -> None:
    mapping = FIELDS.for_type(kind)
    assert mapping is not None
    assert intent_of(mapping, _row(**values)) == intent


def test_amounts_become_minor_units_by_currency() -> None:
    assert to_minor(12.34, "EUR") == 1234
    assert to_minor(0.1 + 0.2, "EUR") == 30
    assert to_minor(1500.0, "JPY") == 1500
    assert to_minor(1.234, "KWD") == 1234
    assert to_minor(None, "EUR") is None


def test_change_matches_the_crmchange_contract() -> None:
    change = to_change(FIELDS.payment, _row(External_Id__c="pay-42"), {})
    assert change is not None
    record = CrmChange(**change)  # every key is a CrmChange field, types fit
    assert record.aggregate_id == "pay-42" and record.crm_record_id == "a015g0000000001AAA"
    assert (record.amount_minor, record.currency) == (1234, "EUR")
    assert (record.method, record.gateway) == ("direct_debit", "gocardless")
    assert record.occurred_at == dt.datetime(2026, 11, 22, 10, 0, 0, 123000, tzinfo=dt.UTC)
    fallback = to_change(FIELDS.payment, _row(), {})
    assert fallback is not None and fallback["aggregate_id"] == "a015g0000000001AAA"


def test_refund_points_at_the_payment_aggregate() -> None:
    row = _row(Payment__c="a015g0000000009AAA")
    change = to_change(FIELDS.refund, row, {"a015g0000000009": "pay-9"})
    assert change is not None and change["payment_id"] == "pay-9"
    assert change["intent"] == "refund" and change["aggregate_type"] == "refund"


def test_change_id_is_deterministic_per_record_version() -> None:
    first = change_id("a015g0000000001AAA", "2026-11-22T10:00:00.123+0000")
    assert first == change_id("a015g0000000001AAA", "2026-11-22T10:00:00.123+0000")
    assert first != change_id("a015g0000000001AAA", "2026-11-22T10:00:00.124+0000")
    assert first != change_id("a015g0000000002AAA", "2026-11-22T10:00:00.123+0000")


def test_datetimes_round_trip_with_milliseconds() -> None:
    stamp = parse_datetime("2026-11-22T10:00:00.123+0000")
    assert soql_datetime(stamp) == "2026-11-22T10:00:00.123Z"
    assert parse_datetime("2026-11-22T10:00:00Z") == dt.datetime(2026, 11, 22, 10, tzinfo=dt.UTC)


def test_watermark_stores_round_trip(tmp_path: Path) -> None:
    mark = Watermark({"Payment__c": Cursor(parse_datetime("2026-11-22T10:00:00.1Z"), "a01x")})
    assert Watermark.from_json(mark.to_json()) == mark
    store = FileWatermarkStore(tmp_path / "wm.json")
    assert store.load() is None
    store.save(mark)
    assert FileWatermarkStore(tmp_path / "wm.json").load() == mark
    memory = MemoryWatermarkStore()
    memory.save(mark)
    assert memory.load() == mark


def test_keyset_query_resumes_after_the_last_record_of_an_equal_stamp() -> None:
    poller = ChangePoller(
        client=None,  # type: ignore[arg-type]  # the query text needs no client
        store=MemoryWatermarkStore(),
        integration_user_id="005000000000001AAA",
        limit=3,
    )
    cursor = Cursor(parse_datetime("2026-11-22T10:00:00.5Z"), "a015g0000000004AAA")
    text = poller.query_for(FIELDS.payment, cursor)
    assert "LastModifiedById != '005000000000001AAA'" in text
    assert (
        "(SystemModstamp > 2026-11-22T10:00:00.500Z OR "
        "(SystemModstamp = 2026-11-22T10:00:00.500Z AND Id > 'a015g0000000004AAA'))"
    ) in text
    assert text.endswith("ORDER BY SystemModstamp, Id LIMIT 3")


def test_tokens_and_routing_facts_are_carried_into_the_change() -> None:
    row = _row(
        Customer_Ref__c="cus_123", Payment_Method_Ref__c="pm_card_visa", Mandate_Ref__c="",
        Country__c="GB", Charge_Date__c="2026-12-01",
    )  # fmt: skip
    change = to_change(FIELDS.payment, row, {})
    assert change is not None
    assert change["customer_ref"] == "cus_123"
    assert change["payment_method_ref"] == "pm_card_visa"
    assert change["mandate_ref"] is None  # empty on the record: absent, not ""
    assert (change["country"], change["charge_date"]) == ("GB", "2026-12-01")
    CrmChange(**change)  # still the contract
