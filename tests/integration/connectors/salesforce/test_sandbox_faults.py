"""Fault injection: outages, latency, and that admin calls are exempt from both."""

from __future__ import annotations

import time

import pytest
from simple_salesforce.api import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceGeneralError

from connectors.salesforce.sandbox import Sandbox


def test_503_injection_then_recovery(sf: Salesforce, sandbox: Sandbox) -> None:
    rid = sf.Payment__c.create({"Status__c": "created"})["id"]
    sandbox.admin.fail_next(2)
    for _ in range(2):
        with pytest.raises(SalesforceGeneralError) as outage:
            sf.Payment__c.update(rid, {"Status__c": "confirmed"})
        assert isinstance(outage.value, SalesforceError)
        assert outage.value.status == 503
        assert outage.value.content[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert sandbox.admin.record("Payment__c", rid)["Status__c"] == "created"
    assert sf.Payment__c.update(rid, {"Status__c": "confirmed"}) == 204
    assert sandbox.admin.record("Payment__c", rid)["Status__c"] == "confirmed"
    assert sandbox.admin.state()["faults"]["unavailable"] == []


def test_outage_can_target_one_path_and_method(sf: Salesforce, sandbox: Sandbox) -> None:
    sandbox.admin.fail_next(
        1, status=500, error_code="UNKNOWN_EXCEPTION", path="/composite/sobjects", method="PATCH"
    )
    assert sf.query("SELECT Id FROM Payment__c")["totalSize"] == 0  # not hit
    with pytest.raises(SalesforceGeneralError) as outage:
        sf.restful("composite/sobjects", method="PATCH", json={"records": []})
    assert outage.value.status == 500
    assert sf.restful("composite/sobjects", method="PATCH", json={"records": []}) is None


def test_rule_with_times_fails_only_that_often(sf: Salesforce, sandbox: Sandbox) -> None:
    rid = sf.Payment__c.create({"Status__c": "created"})["id"]
    sandbox.admin.add_rule(
        record_id=rid, error_code="UNABLE_TO_LOCK_ROW", message="locked", times=1
    )
    with pytest.raises(SalesforceError) as locked:
        sf.Payment__c.update(rid, {"Status__c": "confirmed"})
    assert locked.value.content[0]["errorCode"] == "UNABLE_TO_LOCK_ROW"
    assert sf.Payment__c.update(rid, {"Status__c": "confirmed"}) == 204


def test_latency_is_added_per_call(sf: Salesforce, sandbox: Sandbox) -> None:
    sandbox.admin.set_latency(150)
    started = time.monotonic()
    sf.query("SELECT Id FROM Payment__c")
    assert time.monotonic() - started >= 0.15
    sandbox.admin.clear_faults()
    assert sandbox.admin.state()["faults"]["latency_ms"] == 0
