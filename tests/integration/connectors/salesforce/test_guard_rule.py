"""The org-side version guard against the sandbox: the rule found through the Tooling API, writes
by Id that skip the read, and a late writer that can no longer move a record back."""

from __future__ import annotations

import pytest

from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.guard_rule import RULE_NAME, guarded_objects, message
from connectors.salesforce.sandbox import Sandbox
from connectors.salesforce.settings import FieldMap
from connectors.salesforce.writer import CrmWriter, Outcome

from .test_writer import _seed_payments, _update

FIELDS = FieldMap()
PAYMENT = frozenset({"Payment__c"})


def _deploy(
    sandbox: Sandbox, obj: str = "Payment__c", text: str | None = None, active: bool = True
) -> None:
    """The rule as ``deploy/salesforce`` has it (or with another message) on ``obj``."""
    (mapping,) = [m for m in FIELDS.objects() if m.object_name == obj]
    text = text or message(mapping)
    sandbox.admin.deploy_guard_rule(obj, mapping.bus_seq, text, RULE_NAME, active)


def _writer(sandbox: Sandbox, guarded: frozenset[str] = PAYMENT) -> CrmWriter:
    return CrmWriter(SalesforceClient(sandbox.client(user="integration")), guarded=guarded)


def test_only_objects_with_the_active_rule_and_its_marker_are_guarded(sandbox: Sandbox) -> None:
    client = SalesforceClient(sandbox.client(user="integration"))
    assert guarded_objects(client, FIELDS.objects()) == frozenset()
    _deploy(sandbox, "Payment__c")
    _deploy(sandbox, "Refund__c", active=False)
    _deploy(sandbox, "Mandate__c", text="Bus seq must grow")  # not paybus's message
    assert guarded_objects(client, FIELDS.objects()) == PAYMENT
    assert guarded_objects(client, FIELDS.objects(), "Another_Rule") == frozenset()


def test_updates_by_id_are_written_unread_and_older_ones_refused(sandbox: Sandbox) -> None:
    """300 records, the first 100 already at seq 5: seq 3 for them is refused by the rule, seq
    7 for the others is written; one Composite call, no read."""
    _deploy(sandbox)
    ids = _seed_payments(sandbox, 300)
    staff = sandbox.client(user="staff")
    for rid in ids[:100]:
        staff.Payment__c.update(rid, {"Bus_Seq__c": 5, "Status__c": "x5"})
    updates = [
        _update(f"pay-{n:04d}", 3 if n < 100 else 7, crm_record_id=rid) for n, rid in enumerate(ids)
    ]
    sandbox.admin.reset_usage()
    report = _writer(sandbox).write(updates)
    assert report.api_calls == sandbox.admin.usage()["used"] == 1
    assert report.counts() == {"written": 200, "skipped_older": 100, "failed": 0, "not_found": 0}
    rows = sandbox.admin.records("Payment__c")
    stored = {r["Id"]: (r["Bus_Seq__c"], r["Status__c"]) for r in rows}
    assert {stored[rid] for rid in ids[:100]} == {(5.0, "x5")}
    assert {stored[rid] for rid in ids[100:]} == {(7.0, "status-7")}


def test_a_late_writer_cannot_move_a_record_back(sandbox: Sandbox) -> None:
    """A worker that lost its partition while stalled still trusts its cache (seq 5) and
    writes seq 6 after the new owner wrote seq 7: the rule refuses it inside the write."""
    _deploy(sandbox)
    (rid,) = _seed_payments(sandbox, 1)
    late, owner = _writer(sandbox), _writer(sandbox)
    assert late.write([_update("pay-0000", 5, crm_record_id=rid)]).counts()["written"] == 1
    assert owner.write([_update("pay-0000", 7, crm_record_id=rid)]).counts()["written"] == 1
    report = late.write([_update("pay-0000", 6, crm_record_id=rid)])
    assert [r.outcome for r in report.results] == [Outcome.SKIPPED_OLDER]
    assert sandbox.admin.record("Payment__c", rid)["Bus_Seq__c"] == 7.0
    # The refusal dropped the stale cache entry; the next try is refused again, never written.
    again = late.write([_update("pay-0000", 6, crm_record_id=rid)])
    assert [r.outcome for r in again.results] == [Outcome.SKIPPED_OLDER]


def test_a_deleted_record_written_unread_ends_not_found(sandbox: Sandbox) -> None:
    _deploy(sandbox)
    kept, deleted = _seed_payments(sandbox, 2)
    sandbox.client(user="staff").Payment__c.delete(deleted)
    updates = [
        _update("pay-0000", 1, crm_record_id=kept),
        _update("pay-0001", 1, crm_record_id=deleted),
    ]
    report = _writer(sandbox).write(updates)
    assert [r.outcome for r in report.results] == [Outcome.WRITTEN, Outcome.NOT_FOUND]


@pytest.mark.parametrize("guarded", [frozenset(), PAYMENT], ids=["read", "rule"])
def test_updates_by_external_id_are_read_either_way(
    sandbox: Sandbox, guarded: frozenset[str]
) -> None:
    """Without the record's Id the writer must read to find it; the rule saves nothing."""
    _deploy(sandbox)
    _seed_payments(sandbox, 3)
    sandbox.admin.reset_usage()
    report = _writer(sandbox, guarded).write([_update(f"pay-{n:04d}", 1) for n in range(3)])
    assert report.api_calls == 2 and report.counts()["written"] == 3
