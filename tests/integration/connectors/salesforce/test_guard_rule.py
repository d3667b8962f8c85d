"""The org-side version guard against the sandbox: the rules found through the Tooling API, writes
by Id and upserts by external id that skip the read, and a late writer that can no longer move a
record back."""

from __future__ import annotations

import pytest

from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.guard_rule import (
    NO_CREATE_RULE_NAME,
    RULE_NAME,
    OrgGuards,
    message,
    no_create_message,
    org_guards,
)
from connectors.salesforce.sandbox import Sandbox
from connectors.salesforce.settings import FieldMap
from connectors.salesforce.writer import CrmWriter, Outcome

from .test_writer import _seed_payments, _update

FIELDS = FieldMap()
PAYMENT = frozenset({"Payment__c"})


def _deploy(
    sandbox: Sandbox,
    obj: str = "Payment__c",
    text: str | None = None,
    active: bool = True,
    kind: str = "grow_only",
) -> None:
    """A rule as ``deploy/salesforce`` has it (or with another message) on ``obj``."""
    (mapping,) = [m for m in FIELDS.objects() if m.object_name == obj]
    if kind == "grow_only":
        text, name = text or message(mapping), RULE_NAME
    else:
        text, name = text or no_create_message(mapping), NO_CREATE_RULE_NAME
    sandbox.admin.deploy_guard_rule(obj, mapping.bus_seq, text, name, active, kind)


def _writer(
    sandbox: Sandbox, guarded: frozenset[str] = PAYMENT, upsertable: frozenset[str] = frozenset()
) -> CrmWriter:
    client = SalesforceClient(sandbox.client(user="integration"))
    return CrmWriter(client, guarded=guarded, upsertable=upsertable)


def test_only_objects_with_the_active_rules_and_their_markers_are_guarded(
    sandbox: Sandbox,
) -> None:
    client = SalesforceClient(sandbox.client(user="integration"))
    assert org_guards(client, FIELDS.objects()) == OrgGuards()
    _deploy(sandbox, "Payment__c")
    _deploy(sandbox, "Refund__c", active=False)
    _deploy(sandbox, "Mandate__c", text="Bus seq must grow")  # not paybus's message
    assert org_guards(client, FIELDS.objects()) == OrgGuards(PAYMENT)
    assert org_guards(client, FIELDS.objects(), "Another_Rule") == OrgGuards()
    _deploy(sandbox, "Payment__c", kind="no_create")
    _deploy(sandbox, "Mandate__c", kind="no_create")  # without the version guard: not enough
    _deploy(sandbox, "Refund__c")
    _deploy(sandbox, "Refund__c", text="No new refunds", kind="no_create")
    refund = frozenset({"Refund__c"})
    assert org_guards(client, FIELDS.objects()) == OrgGuards(PAYMENT | refund, PAYMENT)


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
def test_updates_by_external_id_are_read_without_the_no_create_rule(
    sandbox: Sandbox, guarded: frozenset[str]
) -> None:
    """Without the record's Id the writer must read to find it; the rule saves nothing."""
    _deploy(sandbox)
    _seed_payments(sandbox, 3)
    sandbox.admin.reset_usage()
    report = _writer(sandbox, guarded).write([_update(f"pay-{n:04d}", 1) for n in range(3)])
    assert report.api_calls == 2 and report.counts()["written"] == 3


def test_upserts_by_external_id_are_written_unread_and_never_create(sandbox: Sandbox) -> None:
    """Both rules: 300 records by external id (100 already at seq 5) and 50 aggregates the CRM
    does not have, plus 20 records by Id, in one batch: one Composite call. The older updates
    are refused by the version guard, the unknown ones by the no-create rule."""
    _deploy(sandbox)
    _deploy(sandbox, kind="no_create")
    ids = _seed_payments(sandbox, 320)
    staff = sandbox.client(user="staff")
    for rid in ids[:100]:
        staff.Payment__c.update(rid, {"Bus_Seq__c": 5, "Status__c": "x5"})
    updates = [_update(f"pay-{n:04d}", 3 if n < 100 else 7) for n in range(300)]
    updates += [_update(f"pay-{n:04d}", 7, crm_record_id=ids[n]) for n in range(300, 320)]
    updates += [_update(f"shop-{n:04d}", 2) for n in range(50)]
    sandbox.admin.reset_usage()
    writer = _writer(sandbox, PAYMENT, PAYMENT)
    report = writer.write(updates)
    assert report.api_calls == sandbox.admin.usage()["used"] == 1
    assert report.counts() == {"written": 220, "skipped_older": 100, "failed": 0, "not_found": 50}
    by_outcome = {r.update.aggregate_id: (r.outcome, r.record_id) for r in report.results}
    assert by_outcome["pay-0150"] == (Outcome.WRITTEN, ids[150])  # the Id the upsert found
    assert by_outcome["shop-0000"] == (Outcome.NOT_FOUND, None)
    rows = sandbox.admin.records("Payment__c")
    assert len(rows) == 320  # nothing created
    stored = {r["Id"]: (r["Bus_Seq__c"], r["Status__c"]) for r in rows}
    assert {stored[rid] for rid in ids[:100]} == {(5.0, "x5")}
    assert {stored[rid] for rid in ids[100:]} == {(7.0, "status-7")}
    # A replay: what the upserts wrote is cached and skipped without a call; the refused and
    # the unknown ones are sent again (one call) and refused again.
    replay = writer.write(updates)
    assert replay.api_calls == 1 and replay.cache_hits == 220
    assert replay.counts() == {"written": 0, "skipped_older": 320, "failed": 0, "not_found": 50}
    assert len(sandbox.admin.records("Payment__c")) == 320


def test_an_upsert_is_refused_by_the_version_guard_after_a_newer_write(sandbox: Sandbox) -> None:
    """The late-writer case by external id: nothing read, nothing cached, seq 6 after seq 7."""
    _deploy(sandbox)
    _deploy(sandbox, kind="no_create")
    (rid,) = _seed_payments(sandbox, 1)
    late, owner = _writer(sandbox, PAYMENT, PAYMENT), _writer(sandbox, PAYMENT, PAYMENT)
    assert owner.write([_update("pay-0000", 7)]).counts()["written"] == 1
    report = late.write([_update("pay-0000", 6)])
    assert [(r.outcome, r.record_id) for r in report.results] == [(Outcome.SKIPPED_OLDER, None)]
    assert sandbox.admin.record("Payment__c", rid)["Bus_Seq__c"] == 7.0
