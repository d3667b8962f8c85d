"""CrmWriter against the sandbox over HTTPS with the real simple-salesforce client."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from connectors.errors import TransientError
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.sandbox import Sandbox
from connectors.salesforce.settings import build_salesforce
from connectors.salesforce.writer import CrmWriter, Outcome, WriteReport
from streams.records import StatusUpdate
from streams.settings import SalesforceSettings

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _update(agg: str, seq: int, kind: str = "payment", **extra: Any) -> StatusUpdate:
    return StatusUpdate(
        event_id=f"{agg}-{seq}",
        aggregate_id=agg,
        aggregate_type=kind,
        to_status=f"status-{seq}",
        occurred_at=T0 + dt.timedelta(seconds=seq),
        seq=seq,
        source="test",
        psp="stripe",
        psp_object_id=f"pi_{agg}",
        **extra,
    )


def _batches(items: Sequence[StatusUpdate], size: int) -> Iterator[Sequence[StatusUpdate]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@pytest.fixture
def writer(sandbox: Sandbox) -> CrmWriter:
    return CrmWriter(SalesforceClient(sandbox.client(user="integration")))


def _seed_payments(sandbox: Sandbox, count: int, stored_seq: int | None = None) -> list[str]:
    rows = [
        {"External_Id__c": f"pay-{n:04d}", "Status__c": "New", "Amount__c": 10.0 + n}
        | ({"Bus_Seq__c": stored_seq, "Status__c": "seeded"} if stored_seq else {})
        for n in range(count)
    ]
    return sandbox.admin.seed("Payment__c", rows, as_user="staff")


def _workload(
    ids: list[str], rng: random.Random
) -> tuple[list[StatusUpdate], dict[str, tuple[int, str]]]:
    """1,000 updates for 300 records: histories, duplicates and replays, shuffled.

    Every third record is addressed by its CRM id, the others by external id. The first 30
    records already store Bus_Seq__c = 2, so their updates with seq <= 2 must be skipped.
    """
    fresh: list[StatusUpdate] = []
    latest: dict[str, tuple[int, str]] = {}
    for n, rid in enumerate(ids):
        agg = f"pay-{n:04d}"
        extra = {"crm_record_id": rid} if n % 3 == 0 else {}
        top = rng.randint(1, 3)
        seeded = n < 30 and top <= 2
        latest[rid] = (2, "seeded") if seeded else (top, f"status-{top}")
        fresh.extend(_update(agg, seq, **extra) for seq in range(1, top + 1))
    extra_count = 1000 - len(fresh)
    repeats = [rng.choice(fresh) for _ in range(extra_count)]  # duplicates and replays
    updates = fresh + repeats
    rng.shuffle(updates)
    return updates, latest


def _run(
    sandbox: Sandbox, batch_size: int
) -> tuple[int, list[WriteReport], dict[str, tuple[int, str]]]:
    ids = _seed_payments(sandbox, 30, stored_seq=2) + sandbox.admin.seed(
        "Payment__c", [{"External_Id__c": f"pay-{n:04d}"} for n in range(30, 300)], as_user="staff"
    )
    updates, latest = _workload(ids, random.Random(7))
    assert len(updates) == 1000
    writer = CrmWriter(SalesforceClient(sandbox.client(user="integration")))
    sandbox.admin.reset_usage()
    reports = [writer.write(batch) for batch in _batches(updates, batch_size)]
    calls = sum(r.api_calls for r in reports)
    assert calls == sandbox.admin.usage()["used"]  # our count is the org's count
    return calls, reports, latest


# Each batch: one Composite read, one Composite write (measured 10, 4 and 2; before Composite
# it was 10, 5 and 3: one call per query and per 200 records).
@pytest.mark.parametrize(("batch_size", "max_calls"), [(200, 10), (500, 4), (1000, 2)])
def test_thousand_updates_for_300_records_end_at_the_latest_seq(
    sandbox: Sandbox, batch_size: int, max_calls: int
) -> None:
    calls, reports, latest = _run(sandbox, batch_size)
    print(f"\nAPI calls for 1,000 updates / 300 records, batches of {batch_size}: {calls}")
    assert calls <= max_calls
    assert all(r.api_calls <= 2 for r in reports)
    outcomes = [res.outcome for r in reports for res in r.results]
    assert Outcome.FAILED not in outcomes and Outcome.NOT_FOUND not in outcomes
    assert outcomes.count(Outcome.SKIPPED_OLDER) > 0
    records = {r["Id"]: r for r in sandbox.admin.records("Payment__c")}
    assert len(records) == 300
    shown = {rid: (r["Bus_Seq__c"], r["Status__c"]) for rid, r in records.items()}
    assert shown == latest


def test_a_batch_of_1000_updates_over_600_uncached_records_costs_two_calls(
    sandbox: Sandbox, writer: CrmWriter
) -> None:
    """One Composite read (two SOQL chunks: the ids overflow one URL) and one Composite write
    (three collections of 200)."""
    ids = sandbox.admin.seed(
        "Payment__c", [{"External_Id__c": f"pay-{n:04d}"} for n in range(600)], as_user="staff"
    )
    newest = [
        _update(f"pay-{n:04d}", 2, **({"crm_record_id": rid} if n % 3 == 0 else {}))
        for n, rid in enumerate(ids)
    ]
    older = [_update(f"pay-{n:04d}", 1) for n in range(400)]
    updates = newest + older
    random.Random(3).shuffle(updates)
    sandbox.admin.reset_usage()
    report = writer.write(updates)
    print(f"\nAPI calls for 1,000 updates / 600 uncached records, one batch: {report.api_calls}")
    assert report.api_calls == sandbox.admin.usage()["used"] == 2
    assert report.counts() == {"written": 600, "skipped_older": 400, "failed": 0, "not_found": 0}
    assert report.cache_misses == 600
    assert {r["Bus_Seq__c"] for r in sandbox.admin.records("Payment__c")} == {2}


def test_replaying_everything_writes_nothing(sandbox: Sandbox, writer: CrmWriter) -> None:
    _seed_payments(sandbox, 5)
    updates = [_update(f"pay-{n:04d}", seq) for n in range(5) for seq in (1, 2)]
    assert writer.write(updates).count(Outcome.WRITTEN) == 5
    replay = writer.write(updates)
    assert replay.counts() == {"written": 0, "skipped_older": 10, "failed": 0, "not_found": 0}
    assert replay.api_calls == 0  # every version is cached: no read, nothing to write
    writer.forget()  # as on a rebalance
    assert writer.write(updates).api_calls == 1  # the read; nothing to write


def test_503_burst_fails_the_batch_retryably_and_a_rerun_completes_it(
    sandbox: Sandbox, writer: CrmWriter
) -> None:
    _seed_payments(sandbox, 40)
    first = [_update(f"pay-{n:04d}", 1) for n in range(40)]
    assert writer.write(first).count(Outcome.WRITTEN) == 40
    second = [_update(f"pay-{n:04d}", 2) for n in range(40)]
    writer.forget()  # as on a rebalance: the versions must be read again
    # The read fails: nothing of the batch is written, every update says "retry".
    sandbox.admin.fail_next(count=1, status=503, path="/query")
    down = writer.write(second)
    assert down.count(Outcome.FAILED) == 40 and len(down.retryable()) == 40
    error = down.results[0].error
    assert isinstance(error, TransientError) and error.http_status == 503
    assert error.code == "SERVER_UNAVAILABLE"
    # The read passes, the collection call fails.
    sandbox.admin.fail_next(count=1, status=503, path="/composite/sobjects", method="PATCH")
    half = writer.write(second)
    assert half.count(Outcome.FAILED) == 40 and all(r.should_retry for r in half.results)
    assert {r["Bus_Seq__c"] for r in sandbox.admin.records("Payment__c")} == {1.0}
    rerun = writer.write(half.retryable())
    assert rerun.count(Outcome.WRITTEN) == 40 and rerun.retryable() == []
    assert {r["Status__c"] for r in sandbox.admin.records("Payment__c")} == {"status-2"}


def test_api_limit_exhaustion_is_retryable(sandbox: Sandbox, writer: CrmWriter) -> None:
    _seed_payments(sandbox, 1)
    sandbox.admin.set_usage(used=100, limit=100)
    report = writer.write([_update("pay-0000", 1)])
    error = report.results[0].error
    assert isinstance(error, TransientError) and error.code == "REQUEST_LIMIT_EXCEEDED"
    assert writer.client.api_usage is not None and writer.client.api_usage.limit == 100


def test_a_validation_error_fails_only_its_record(sandbox: Sandbox, writer: CrmWriter) -> None:
    ids = _seed_payments(sandbox, 5)
    sandbox.admin.add_rule(obj="Payment__c", record_id=ids[2], message="Closed period")
    updates = [_update(f"pay-{n:04d}", 3) for n in range(5)]
    updates.append(_update("pay-missing", 1))
    updates.append(_update("pay-0002", 2))  # superseded by seq 3: shares its failure
    report = writer.write(updates)
    assert [r.outcome for r in report.results] == [
        Outcome.WRITTEN,
        Outcome.WRITTEN,
        Outcome.FAILED,
        Outcome.WRITTEN,
        Outcome.WRITTEN,
        Outcome.NOT_FOUND,
        Outcome.FAILED,
    ]
    failed = report.results[2]
    assert failed.record_id == ids[2] and not failed.should_retry
    assert failed.error is not None and failed.error.code == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    assert "Closed period" in failed.error.message
    assert [r.update.seq for r in report.permanent_failures()] == [3, 2]
    assert sandbox.admin.record("Payment__c", ids[2])["Status__c"] == "New"
    assert sandbox.admin.record("Payment__c", ids[3])["Status__c"] == "status-3"


def test_each_object_is_written_with_its_own_fields(sandbox: Sandbox, writer: CrmWriter) -> None:
    pay = sandbox.admin.seed("Payment__c", [{"External_Id__c": "pay-1"}])[0]
    mandate = sandbox.admin.seed("Mandate__c", [{"External_Id__c": "md-1"}])[0]
    refund = sandbox.admin.seed("Refund__c", [{"Payment__c": pay}])[0]
    sandbox.admin.reset_usage()
    report = writer.write(
        [
            _update("pay-1", 4, settlement_date="2026-03-04"),
            _update("md-1", 2, kind="mandate"),
            _update(
                "rf-1",
                1,
                kind="refund",
                crm_record_id=refund[:15],
                reason="Card 4000 0000 0000 0002 declined",
            ),
        ]
    )
    # One Composite read for the three objects, one Composite write for the three (a
    # collection each).
    assert (
        report.counts()["written"] == 3 and report.api_calls == 2 == sandbox.admin.usage()["used"]
    )
    assert sandbox.admin.record("Payment__c", pay)["Settlement_Date__c"] == "2026-03-04"
    assert sandbox.admin.record("Mandate__c", mandate)["Bus_Seq__c"] == 2
    stored = sandbox.admin.record("Refund__c", refund)
    assert stored["Failure_Reason__c"] == "Card [redacted] declined"
    assert stored["Psp_Id__c"] == "pi_rf-1"


def test_client_from_settings_trusts_only_the_ca_bundle(sandbox: Sandbox) -> None:
    settings = SalesforceSettings(
        instance_url=sandbox.instance_url,
        session_id=sandbox.token_for("integration"),  # type: ignore[arg-type]
        ca_bundle=sandbox.cert_path,
    )
    sf = build_salesforce(settings)
    assert sf.session.trust_env is False
    client = SalesforceClient(sf)
    assert client.user_id("integration@paybus.sandbox") == sandbox.user_id("integration")
    assert client.user_id("nobody@paybus.sandbox") is None
    assert client.api_calls == 2
