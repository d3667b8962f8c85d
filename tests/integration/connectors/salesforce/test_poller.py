"""ChangePoller against the sandbox: creates and staff edits in, the bus's own writes out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, cast

import pytest
from simple_salesforce.api import Salesforce, SFType

from connectors.errors import TransientError
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.poller import (
    ChangePoller,
    FileWatermarkStore,
    MemoryWatermarkStore,
    WatermarkStore,
    parse_datetime,
)
from connectors.salesforce.sandbox import Sandbox
from connectors.salesforce.writer import CrmWriter, Outcome
from streams.records import CrmChange, StatusUpdate

INTEGRATION = "integration@paybus.sandbox"


def _obj(sf: Salesforce, name: str) -> SFType:
    return cast(SFType, getattr(sf, name))


def _poller(sandbox: Sandbox, store: WatermarkStore, limit: int = 200) -> ChangePoller:
    client = SalesforceClient(sandbox.client(user="integration"))
    return ChangePoller(client, store, integration_username=INTEGRATION, limit=limit)


def _drain(poller: ChangePoller) -> list[dict[str, Any]]:
    """Fetch and commit until nothing new comes."""
    seen: list[dict[str, Any]] = []
    while True:
        batch = poller.fetch()
        if not batch.changes and batch.watermark == poller.watermark:
            return seen
        seen.extend(batch.changes)
        poller.commit(batch)


def test_creates_and_staff_updates_come_in_write_backs_do_not(
    sandbox: Sandbox, staff_sf: Salesforce
) -> None:
    pay = _obj(staff_sf, "Payment__c").create(
        {
            "External_Id__c": "pay-1",
            "Status__c": "New",
            "Amount__c": 25.5,
            "Currency__c": "GBP",
            "Method__c": "card",
            "Gateway__c": "Stripe",
        }
    )["id"]
    mandate = _obj(staff_sf, "Mandate__c").create(
        {"Status__c": "New", "Method__c": "Direct Debit"}
    )["id"]
    refund = _obj(staff_sf, "Refund__c").create(
        {"Status__c": "New", "Amount__c": 5, "Payment__c": pay}
    )["id"]
    poller = _poller(sandbox, MemoryWatermarkStore())
    first = _drain(poller)
    by_record = {c["crm_record_id"]: c for c in first}
    assert [by_record[r]["intent"] for r in (pay, mandate, refund)] == [
        "request_payment",  # a card payment with no saved card: its customer pays on a page
        "create_mandate",
        "refund",
    ]
    assert by_record[pay]["aggregate_id"] == "pay-1" and by_record[pay]["amount_minor"] == 2550
    assert by_record[mandate]["aggregate_id"] == mandate  # no external id: the record id
    assert by_record[refund]["payment_id"] == "pay-1" and by_record[refund]["amount_minor"] == 500
    assert all(isinstance(CrmChange(**c), CrmChange) for c in first)
    # The bus writes statuses back: nothing comes round again.
    writer = CrmWriter(SalesforceClient(sandbox.client(user="integration")))
    now = dt.datetime.now(dt.UTC)
    report = writer.write(
        [
            StatusUpdate(
                event_id=f"e{n}",
                aggregate_id=agg,
                aggregate_type=kind,
                to_status="pending_submission",
                occurred_at=now,
                seq=1,
                source="test",
                crm_record_id=rid,
            )
            for n, (agg, kind, rid) in enumerate(
                [("pay-1", "payment", pay), (mandate, "mandate", mandate), ("r", "refund", refund)]
            )
        ]
    )
    assert report.count(Outcome.WRITTEN) == 3
    assert _drain(poller) == []
    # A staff edit that asks for something comes in; one that asks for nothing is read past.
    _obj(staff_sf, "Payment__c").update(pay, {"Status__c": "Cancel Requested"})
    _obj(staff_sf, "Mandate__c").update(mandate, {"Name": "renamed by staff"})
    batch = poller.fetch()
    assert [(c["crm_record_id"], c["intent"]) for c in batch.changes] == [(pay, "cancel")]
    assert batch.ignored == 1
    assert batch.changes[0]["change_id"] != by_record[pay]["change_id"]
    poller.commit(batch)
    assert _drain(poller) == []


def _share_modstamp(sandbox: Sandbox, obj: str, ids: list[str], stamp: str) -> None:
    """Give records one SystemModstamp (the admin API stamps every write afresh, as
    Salesforce does; a real org still shows equal stamps for records saved together)."""
    assert sandbox.state is not None
    store = sandbox.state.org.store
    ms = int(parse_datetime(stamp).timestamp() * 1000)
    for rid in ids:
        record = store.get(obj, rid)
        assert record is not None
        store.put(obj, {**record, "SystemModstamp": stamp}, ms)


def test_restart_resumes_without_gaps_or_repeats_across_equal_stamps(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    rows = [{"Status__c": "New", "Amount__c": n + 1, "External_Id__c": f"p{n}"} for n in range(12)]
    ids = sandbox.admin.seed("Payment__c", rows, as_user="staff")
    # Records 2..7 share one stamp, so a page of 4 ends in the middle of them.
    shared = sandbox.admin.record("Payment__c", ids[2])["SystemModstamp"]
    _share_modstamp(sandbox, "Payment__c", ids[2:8], shared)
    path = tmp_path / "watermark.json"
    delivered: list[str] = []
    pages = 0
    while True:  # a fresh poller (a restart) for every page
        poller = _poller(sandbox, FileWatermarkStore(path), limit=4)
        batch = poller.fetch()
        if not batch.changes:
            break
        pages += 1
        assert len(batch.changes) <= 4
        delivered.extend(c["aggregate_id"] for c in batch.changes)
        if pages == 2:  # crash before committing: the same page comes again
            again = _poller(sandbox, FileWatermarkStore(path), limit=4).fetch()
            assert again.changes == batch.changes
        poller.commit(batch)
    assert pages == 3
    assert len(delivered) == len(set(delivered)) == 12
    assert sorted(delivered) == sorted(f"p{n}" for n in range(12))
    # New records after the restart still come in, once.
    later = sandbox.admin.seed("Payment__c", [{"Status__c": "New", "Amount__c": 1}], "staff")
    poller = _poller(sandbox, FileWatermarkStore(path), limit=4)
    assert [c["crm_record_id"] for c in _drain(poller)] == later


def test_since_skips_history_and_the_integration_user_is_looked_up_once(
    sandbox: Sandbox,
) -> None:
    sandbox.admin.seed("Payment__c", [{"Status__c": "New", "Amount__c": 1}], as_user="staff")
    cutoff = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    client = SalesforceClient(sandbox.client(user="integration"))
    poller = ChangePoller(
        client, MemoryWatermarkStore(), integration_username=INTEGRATION, since=cutoff
    )
    assert poller.fetch().changes == []
    assert poller.fetch().changes == []
    assert client.api_calls == 1 + 3 * 2  # user lookup once, then one query per object


def test_an_outage_raises_a_transient_error_and_loses_nothing(sandbox: Sandbox) -> None:
    ids = sandbox.admin.seed("Payment__c", [{"Status__c": "New", "Amount__c": 3}], "staff")
    poller = _poller(sandbox, MemoryWatermarkStore())
    poller.integration_user_id()
    sandbox.admin.fail_next(count=1, status=503, path="/query")
    with pytest.raises(TransientError) as outage:
        poller.fetch()
    assert outage.value.should_retry and outage.value.http_status == 503
    assert [c["crm_record_id"] for c in _drain(poller)] == ids
