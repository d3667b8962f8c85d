"""The writer's version cache with an in-memory client: which batches read, which write, and
that a cached version never lets a record move back to an older seq."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from connectors.errors import ConnectorError, PermanentError, TransientError
from connectors.salesforce.client import MAX_COLLECTION, MAX_QUERY_OR_COLLECTION, RecordResult
from connectors.salesforce.writer import CrmWriter, Outcome, VersionCache, WriteReport
from streams.records import StatusUpdate

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
_LITERAL = re.compile(r"'((?:[^'\\]|\\.)*)'")


def _update(agg: str, seq: int, **extra: Any) -> StatusUpdate:
    return StatusUpdate(
        event_id=f"{agg}-{seq}",
        aggregate_id=agg,
        aggregate_type="payment",
        to_status=f"status-{seq}",
        occurred_at=NOW,
        seq=seq,
        source="test",
        **extra,
    )


def _rid(n: int) -> str:
    return f"a015g{n:010d}AAA"


class FakeClient:
    """Payment__c rows in memory, answering the writer's SOQL reads and collection updates,
    counting calls the way :class:`SalesforceClient` does (one per query or 200 records, one
    per Composite of 5 queries or 5 collections)."""

    def __init__(self, externals: Sequence[str]) -> None:
        self.rows: dict[str, dict[str, Any]] = {
            _rid(n): {"Id": _rid(n), "External_Id__c": ext, "Bus_Seq__c": None}
            for n, ext in enumerate(externals)
        }
        self.api_calls = 0
        self.queried: list[set[str]] = []  # the literals of each query
        self.written: list[list[str]] = []  # the record ids of each collection call
        self.fail_call: ConnectorError | None = None
        self.fail_record: dict[str, ConnectorError] = {}
        self.during_update: Callable[[], None] | None = None
        self.fail_read: ConnectorError | None = None  # every read fails with it

    def query(self, soql: str) -> list[dict[str, Any]]:
        self.api_calls += 1
        return self._select(soql)

    def query_many_outcomes(
        self, soqls: Sequence[str]
    ) -> list[list[dict[str, Any]] | ConnectorError]:
        self.api_calls += -(-len(soqls) // MAX_QUERY_OR_COLLECTION)
        if self.fail_read is not None:
            return [self.fail_read for _ in soqls]
        return [self._select(soql) for soql in soqls]

    def _select(self, soql: str) -> list[dict[str, Any]]:
        literals = {v.lower() for v in _LITERAL.findall(soql)}
        self.queried.append(literals)
        return [
            dict(row)
            for row in self.rows.values()
            if row["Id"].lower() in literals or str(row["External_Id__c"]).lower() in literals
        ]

    def update_records(
        self, object_name: str, records: Sequence[Mapping[str, Any]]
    ) -> list[RecordResult]:
        assert object_name == "Payment__c" and len(records) <= MAX_COLLECTION
        self.api_calls += 1
        self.written.append([r["Id"] for r in records])
        if self.during_update is not None:
            self.during_update()
        if self.fail_call is not None:
            error, self.fail_call = self.fail_call, None
            raise error
        results = []
        for record in records:
            rid = record["Id"]
            error = self.fail_record.pop(rid, None)
            if error is None and rid not in self.rows:
                error = PermanentError("deleted", psp="salesforce", code="ENTITY_IS_DELETED")
            if error is None:
                self.rows[rid].update({k: v for k, v in record.items() if k != "Id"})
            results.append(RecordResult(rid, error))
        return results

    def update_records_many(
        self, object_name: str, chunks: Sequence[Sequence[Mapping[str, Any]]]
    ) -> list[list[RecordResult]]:
        """Like the real client: a failed Composite fails every record of its chunks."""
        results: list[list[RecordResult]] = []
        for start in range(0, len(chunks), MAX_QUERY_OR_COLLECTION):
            group = chunks[start : start + MAX_QUERY_OR_COLLECTION]
            calls = self.api_calls
            try:
                results.extend(self.update_records(object_name, chunk) for chunk in group)
            except ConnectorError as err:
                results.extend([RecordResult(r["Id"], err) for r in chunk] for chunk in group)
            self.api_calls = calls + 1
        return results

    def save_many(
        self, chunks: Sequence[tuple[str, str | None, Sequence[Mapping[str, Any]]]]
    ) -> list[list[RecordResult]]:
        """Updates by Id only: this writer has no org-side rules, so it never upserts."""
        assert all(field is None for _, field, _ in chunks)
        return self.update_records_many("Payment__c", [chunk for _, _, chunk in chunks])

    def seq(self, n: int) -> Any:
        return self.rows[_rid(n)]["Bus_Seq__c"]


def _writer(externals: Sequence[str], cache_records: int = 1000) -> tuple[CrmWriter, FakeClient]:
    client = FakeClient(externals)
    return CrmWriter(client, cache_records=cache_records), client  # type: ignore[arg-type]


def _outcomes(report: WriteReport) -> list[str]:
    return [r.outcome.value for r in report.results]


def test_a_second_batch_for_the_same_records_makes_no_query() -> None:
    writer, client = _writer(["a", "b", "c"])
    first = writer.write([_update(a, 1) for a in "abc"])
    assert first.api_calls == 2 and (first.cache_hits, first.cache_misses) == (0, 3)
    second = writer.write([_update(a, 2) for a in "abc"] + [_update("a", 3)])
    assert _outcomes(second) == ["skipped_older", "written", "written", "written"]
    assert second.api_calls == 1 and len(client.queried) == 1  # the collection write only
    assert (second.cache_hits, second.cache_misses) == (3, 0)
    assert [client.seq(n) for n in range(3)] == [3, 2, 2]


def test_an_older_update_of_a_cached_record_is_skipped_without_any_call() -> None:
    writer, client = _writer(["a", "b"])
    writer.write([_update("a", 5), _update("b", 2)])
    calls = client.api_calls
    replay = writer.write([_update("a", 3), _update("a", 5), _update("b", 1), _update("b", 2)])
    assert _outcomes(replay) == ["skipped_older"] * 4
    assert replay.api_calls == 0 and client.api_calls == calls
    assert [r.record_id for r in replay.results] == [_rid(0), _rid(0), _rid(1), _rid(1)]
    assert (client.seq(0), client.seq(1)) == (5, 2)


def test_versions_read_from_the_crm_are_cached_too() -> None:
    writer, client = _writer(["a", "b"])
    client.rows[_rid(0)]["Bus_Seq__c"] = 7.0  # written before this process started
    first = writer.write([_update("a", 6), _update("b", 1)])
    assert _outcomes(first) == ["skipped_older", "written"]
    again = writer.write([_update("a", 7), _update("a", 8)])
    assert _outcomes(again) == ["skipped_older", "written"] and len(client.queried) == 1
    assert client.seq(0) == 8


@pytest.mark.parametrize("whole_call", [True, False])
def test_a_failed_write_evicts_so_the_next_batch_reads_again(whole_call: bool) -> None:
    writer, client = _writer(["a", "b"])
    writer.write([_update("a", 1), _update("b", 1)])
    error = TransientError("timed out", psp="salesforce", code="TIMEOUT")
    if whole_call:
        client.fail_call = error  # it may or may not have written
    else:
        client.fail_record[_rid(0)] = error
    failed = writer.write([_update("a", 2), _update("b", 2)])
    assert failed.results[0].outcome is Outcome.FAILED and failed.results[0].should_retry
    retry = writer.write([_update("a", 2), _update("b", 3)])
    assert _outcomes(retry) == ["written", "written"]
    # Only the failed record(s) were read again.
    assert client.queried[-1] == ({"a", "b"} if whole_call else {"a"})
    assert (client.seq(0), client.seq(1)) == (2, 3)


def test_a_permanent_record_error_evicts_as_well() -> None:
    writer, client = _writer(["a"])
    writer.write([_update("a", 1)])
    client.fail_record[_rid(0)] = PermanentError("closed period", psp="salesforce", code="RULE")
    assert _outcomes(writer.write([_update("a", 2)])) == ["failed"]
    assert len(writer.cache) == 0
    assert _outcomes(writer.write([_update("a", 2)])) == ["written"]
    assert len(client.queried) == 2


def test_forget_makes_the_next_batch_read_again() -> None:
    writer, client = _writer(["a", "b"])
    writer.write([_update("a", 1), _update("b", 1)])
    old = writer.cache
    writer.forget()
    assert writer.cache is not old and len(writer.cache) == 0
    assert writer.cache.max_records == old.max_records
    report = writer.write([_update("a", 2), _update("b", 1)])
    assert _outcomes(report) == ["written", "skipped_older"]
    assert report.api_calls == 2 and len(client.queried) == 2


def test_a_write_in_flight_during_forget_fills_the_discarded_cache() -> None:
    writer, client = _writer(["a"])
    client.during_update = writer.forget  # a rebalance while the collection call runs
    assert _outcomes(writer.write([_update("a", 1)])) == ["written"]
    client.during_update = None
    assert len(writer.cache) == 0  # what the old write learned is not trusted
    assert _outcomes(writer.write([_update("a", 1)])) == ["skipped_older"]
    assert len(client.queried) == 2


def test_the_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    writer, client = _writer(["a", "b", "c"], cache_records=2)
    writer.write([_update("a", 1), _update("b", 1)])
    writer.write([_update("a", 2)])  # a is now the most recently used
    writer.write([_update("c", 1)])  # c pushes b out
    assert len(writer.cache) == 2
    client.queried.clear()
    report = writer.write([_update(x, 3) for x in "abc"])
    assert _outcomes(report) == ["written"] * 3
    assert client.queried == [{"b"}]
    assert len(writer.cache) == 2


def test_a_write_through_one_key_is_seen_through_the_other() -> None:
    """Read by external id, written by record id: the ext key must not keep the old seq."""
    writer, client = _writer(["a"])
    writer.write([_update("a", 1)])  # cached as ext:a and id:<rid> at seq 1
    writer.write([_update("a", 5, crm_record_id=_rid(0))])  # written by id, no read
    stale = writer.write([_update("a", 4)])  # by ext id again, no read
    assert _outcomes(stale) == ["skipped_older"] and stale.api_calls == 0
    assert client.seq(0) == 5 and len(client.queried) == 1


def test_records_not_in_the_crm_stay_not_found_and_are_read_each_time() -> None:
    writer, client = _writer(["a"])
    first = writer.write([_update("a", 1), _update("shop-1", 1)])
    assert _outcomes(first) == ["written", "not_found"]
    again = writer.write([_update("a", 1), _update("shop-1", 1)])
    assert _outcomes(again) == ["skipped_older", "not_found"] and again.api_calls == 1
    assert client.queried == [{"a", "shop-1"}, {"shop-1"}]


def test_a_cached_record_deleted_in_the_crm_is_read_again_and_ends_not_found() -> None:
    writer, client = _writer(["a", "b"])
    writer.write([_update("a", 1), _update("b", 1)])
    del client.rows[_rid(0)]
    report = writer.write([_update("a", 2), _update("b", 2)])
    assert _outcomes(report) == ["not_found", "written"]
    assert report.results[0].error is None
    assert client.queried[-1] == {"a"} and report.api_calls == 2  # one write, one read


def test_a_failed_read_fails_only_the_records_not_cached() -> None:
    writer, client = _writer(["a", "b"])
    writer.write([_update("a", 1)])

    client.fail_read = TransientError("down", psp="salesforce", http_status=503)
    report = writer.write([_update("a", 2), _update("b", 1)])
    assert _outcomes(report) == ["written", "failed"] and report.results[1].should_retry
    assert client.seq(0) == 2


def test_version_cache_keys_and_bound() -> None:
    cache = VersionCache(max_records=1)
    cache.put("Payment__c", "R1", 3.0, "ext:a")
    assert cache.get("Payment__c", "ext:a") == ("R1", 3.0)
    assert cache.get("Payment__c", "id:R1") == ("R1", 3.0)
    assert cache.get("Refund__c", "id:R1") is None  # per object
    cache.put("Payment__c", "R2", None, "ext:b")  # evicts R1 and its alias
    assert cache.get("Payment__c", "ext:a") is None and len(cache) == 1
    assert cache.get("Payment__c", "ext:b") == ("R2", None)
    cache.evict("Payment__c", "R2")
    assert cache.get("Payment__c", "ext:b") is None and len(cache) == 0
    with pytest.raises(ValueError):
        VersionCache(-1)
