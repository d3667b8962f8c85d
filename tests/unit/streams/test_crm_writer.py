"""The write-back agent's settle logic with a scripted writer: retries, DLQ, alerts, outcomes."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from simple_salesforce.exceptions import SalesforceAuthenticationFailed

from connectors.errors import PermanentError, TransientError
from connectors.salesforce.client import ApiUsage
from connectors.salesforce.guard_rule import MARKER, RULE_NAME, OrgGuards
from connectors.salesforce.writer import Outcome, UpdateResult, WriteReport
from streams.agents import crm_writer
from streams.agents.crm_outcomes import disposition
from streams.agents.crm_writer import CrmWriterStage
from streams.records import StatusUpdate


def _update(agg: str, seq: int = 1, crm_record_id: str | None = None, **kw: Any) -> StatusUpdate:
    return StatusUpdate(
        event_id=f"e-{agg}-{seq}",
        aggregate_id=agg,
        aggregate_type="payment",
        to_status="confirmed",
        occurred_at=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
        seq=seq,
        source="t",
        crm_record_id=crm_record_id,
        **kw,
    )


class _Event:
    def __init__(self, value: StatusUpdate) -> None:
        self.value = value


class _Writer:
    """Answers each write from a script: aggregate id -> outcomes of successive attempts."""

    def __init__(self, script: dict[str, list[Outcome | str]]) -> None:
        self.script = script
        self.calls: list[list[str]] = []
        self.client = SimpleNamespace(api_usage=ApiUsage(used=120, limit=15000))

    def write(self, updates: Sequence[StatusUpdate]) -> WriteReport:
        self.calls.append([u.aggregate_id for u in updates])
        if self.script.get("login") and self.script["login"].pop(0) == "refused":
            raise SalesforceAuthenticationFailed("INVALID_LOGIN", "password expired")
        results = []
        for u in updates:
            step = self.script[u.aggregate_id].pop(0)
            if step == "lock":  # one record busy: retryable, a few times
                err = TransientError("busy", psp="salesforce", code="UNABLE_TO_LOCK_ROW")
                results.append(UpdateResult(u, Outcome.FAILED, "Payment__c", error=err))
            elif step == "503":  # Salesforce itself down: waited out
                err = TransientError("down", psp="salesforce", http_status=503)
                results.append(UpdateResult(u, Outcome.FAILED, "Payment__c", error=err))
            elif step == "rule":
                err = PermanentError("rule 4242 4242 4242 4242", psp="salesforce", code="RULE")
                results.append(UpdateResult(u, Outcome.FAILED, "Payment__c", "a01", err))
            else:
                results.append(UpdateResult(u, Outcome(step), "Payment__c", "a01"))
        return WriteReport(results, api_calls=2)


class _Alerter:
    def __init__(self) -> None:
        self.sent: list[list[UpdateResult]] = []

    def send(self, failures: Sequence[UpdateResult]) -> bool:
        self.sent.append(list(failures))
        return True


def _stage(writer: _Writer, alerter: _Alerter | None, attempts: int = 3) -> CrmWriterStage:
    stage = CrmWriterStage.__new__(CrmWriterStage)
    stage.app = None  # type: ignore[assignment]
    stage.topic_name = "paybus.payments.status"
    stage.attempts = attempts
    stage.outage_cap_s = 60.0
    stage.budget = None
    stage.alerter = alerter  # type: ignore[assignment]
    stage._writer = writer  # type: ignore[assignment]
    return stage


@pytest.fixture
def dead(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    letters: list[dict[str, Any]] = []

    async def fake_dead_letter(app: Any, event: Any, **kw: Any) -> Any:
        letters.append({"update": event.value, **kw})

        async def done() -> None:
            return None

        return done()

    async def no_sleep(delay: float) -> None:
        return None

    monkeypatch.setattr(crm_writer, "send_dead_letter", fake_dead_letter)
    monkeypatch.setattr(crm_writer.asyncio, "sleep", no_sleep)
    return letters


async def test_retryable_failures_are_retried_alone_then_dead_lettered(
    dead: list[dict[str, Any]],
) -> None:
    writer = _Writer(
        {
            "ok": ["written"],
            "flaky": ["lock", "lock", "written"],
            "down": ["lock", "lock", "lock"],
            "old": ["skipped_older"],
        }
    )
    alerter = _Alerter()
    stage = _stage(writer, alerter, attempts=3)
    events = [_Event(_update(a)) for a in ("ok", "flaky", "down", "old")]
    counts = await stage.process_batch(events)  # type: ignore[arg-type]
    assert counts == {"written": 2, "skipped_older": 1, "retries_exhausted": 1}
    # Only the failing updates are written again.
    assert writer.calls == [["ok", "flaky", "down", "old"], ["flaky", "down"], ["flaky", "down"]]
    assert [d["update"].aggregate_id for d in dead] == ["down"]
    assert dead[0]["stage"] == "crm-writer" and dead[0]["attempts"] == 3
    assert dead[0]["error_log"] == ["attempts 1-3: busy code=UNABLE_TO_LOCK_ROW"]  # not 3 lines
    assert alerter.sent == []  # retryable trouble is not a person's job (yet)


async def test_an_outage_is_waited_out_without_counting_attempts(
    dead: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Salesforce answers 503 for twelve attempts (three attempts allowed), then is back: the
    # updates wait, nothing is dead-lettered, the unavailable gauge is up only meanwhile.
    gauge: list[float] = []
    monkeypatch.setattr(crm_writer.metrics.CRM_UNAVAILABLE, "set", gauge.append)
    writer = _Writer({"a": ["503"] * 12 + ["written"], "b": ["503"] * 12 + ["skipped_older"]})
    stage = _stage(writer, _Alerter(), attempts=3)
    events = [_Event(_update(a)) for a in ("a", "b")]
    counts = await stage.process_batch(events)  # type: ignore[arg-type]
    assert counts == {"written": 1, "skipped_older": 1} and dead == []
    assert len(writer.calls) == 13
    assert gauge[0] == 1 and gauge[-1] == 0 and set(gauge) == {0, 1}


async def test_a_record_failure_during_an_outage_still_gets_its_attempts(
    dead: list[dict[str, Any]],
) -> None:
    writer = _Writer({"locked": ["lock"] * 3, "down": ["503"] * 5 + ["written"]})
    stage = _stage(writer, _Alerter(), attempts=3)
    counts = await stage.process_batch(
        [_Event(_update(a)) for a in ("locked", "down")]  # type: ignore[arg-type]
    )
    assert counts == {"retries_exhausted": 1, "written": 1}
    assert [d["update"].aggregate_id for d in dead] == ["locked"]


async def test_a_record_failure_after_an_outage_still_gets_its_attempts(
    dead: list[dict[str, Any]],
) -> None:
    # Salesforce was down for four attempts (three allowed for a record's own failure); when
    # it is back, one row lock is a record's first retryable failure, not its fifth: retried
    writer = _Writer({"a": ["503"] * 4 + ["lock", "written"]})
    stage = _stage(writer, _Alerter(), attempts=3)
    counts = await stage.process_batch([_Event(_update("a"))])  # type: ignore[list-item]
    assert counts == {"written": 1} and dead == []
    assert len(writer.calls) == 6


async def test_an_org_unreachable_at_login_is_waited_out_too(
    dead: list[dict[str, Any]],
) -> None:
    # a password login is made when the writer is first built (a worker started, or
    # restarted, during the outage): Salesforce unreachable there is the same outage
    scripted = _Writer({"a": ["written"]})
    stage = _stage(scripted, _Alerter(), attempts=3)
    stage._writer = None
    logins: list[int] = []

    def login() -> _Writer:
        logins.append(1)
        if len(logins) <= 4:
            raise requests.ConnectionError("login.salesforce.com: Connection refused")
        stage._writer = scripted  # type: ignore[assignment]
        return scripted

    stage.writer = login  # type: ignore[assignment,method-assign]
    counts = await stage.process_batch([_Event(_update("a"))])  # type: ignore[list-item]
    assert counts == {"written": 1} and dead == []
    assert len(logins) == 5


async def test_permanent_failures_are_dead_lettered_and_e_mailed_redacted(
    dead: list[dict[str, Any]],
) -> None:
    writer = _Writer({"bad": ["rule"], "gone": ["not_found"], "shop": ["not_found"]})
    alerter = _Alerter()
    stage = _stage(writer, alerter)
    events = [
        _Event(_update("bad", reason="card 4242424242424242 declined")),
        _Event(_update("gone", crm_record_id="a01000000000001AAA")),
        _Event(_update("shop")),  # never came from the CRM: nothing to update
    ]
    counts = await stage.process_batch(events)  # type: ignore[arg-type]
    assert counts == {"failed_permanent": 2, "not_found": 1}
    assert sorted(d["update"].aggregate_id for d in dead) == ["bad", "gone"]
    assert all("4242" not in d["reason"] for d in dead)
    (mail,) = alerter.sent
    assert [r.update.aggregate_id for r in mail] == ["bad", "gone"]
    assert mail[0].update.reason == "card [redacted] declined"
    assert mail[0].error is not None and "4242" not in mail[0].error.message
    assert len(writer.calls) == 1


def test_disposition_names_every_writer_outcome() -> None:
    upd = _update("x")
    err = TransientError("t", psp="salesforce")
    assert disposition(UpdateResult(upd, Outcome.WRITTEN)) == "written"
    assert disposition(UpdateResult(upd, Outcome.SKIPPED_OLDER)) == "skipped_older"
    assert disposition(UpdateResult(upd, Outcome.NOT_FOUND)) == "not_found"
    assert disposition(UpdateResult(upd, Outcome.FAILED, error=err)) == "retries_exhausted"
    perm = PermanentError("p", psp="salesforce")
    assert disposition(UpdateResult(upd, Outcome.FAILED, error=perm)) == "failed_permanent"


class _Forgetful:
    def __init__(self) -> None:
        self.forgotten = 0

    def forget(self) -> None:
        self.forgotten += 1


async def test_every_rebalance_forgets_the_writers_cached_versions(clean_env: Any) -> None:
    """Another worker may have written the partitions' records meanwhile: read them again."""
    from streams.app import build_app
    from streams.settings import SalesforceSettings, Settings

    salesforce = SalesforceSettings(
        instance_url="https://example.my.salesforce.com",
        session_id="00Dxx!token",  # type: ignore[arg-type]
    )
    app = build_app(Settings(data_dir=clean_env / "data", salesforce=salesforce))
    stage = CrmWriterStage(app)
    assert stage._writer is None
    await app.on_partitions_assigned.send(set())  # before the first write: nothing to forget
    writer = _Forgetful()
    stage._writer = writer  # type: ignore[assignment]
    await app.on_partitions_revoked.send(set())
    await app.on_partitions_assigned.send(set())
    assert writer.forgotten == 2


def test_the_orgs_allowance_is_exported_from_the_last_response() -> None:
    from streams import metrics

    def gauge(kind: str) -> float:
        return float(metrics.CRM_API_ALLOWANCE.labels("salesforce", kind)._value.get())

    crm_writer.record_allowance(SimpleNamespace(api_usage=ApiUsage(used=4321, limit=100000)))  # type: ignore[arg-type]
    assert (gauge("used"), gauge("limit")) == (4321, 100000)
    crm_writer.record_allowance(SimpleNamespace(api_usage=None))  # type: ignore[arg-type]
    assert gauge("used") == 4321  # no header: the last known figure stands


class _Tooling:
    """A client whose Tooling API lookups fail (an outage) until ``rows`` is set."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] | None = None

    def tooling_query(self, soql: str) -> list[dict[str, Any]]:
        if self.rows is None:
            raise TransientError("503", psp="salesforce", code="SERVER_UNAVAILABLE")
        return self.rows


async def test_a_failed_rule_lookup_keeps_the_read_guard_and_is_tried_again(
    clean_env: Any,
) -> None:
    from streams.app import build_app
    from streams.settings import SalesforceSettings, Settings

    salesforce = SalesforceSettings(
        instance_url="https://example.my.salesforce.com",
        session_id="00Dxx!token",  # type: ignore[arg-type]
        version_guard="rule",
    )
    stage = CrmWriterStage(build_app(Settings(data_dir=clean_env / "data", salesforce=salesforce)))
    client = _Tooling()
    assert stage._guards(client) == OrgGuards()  # type: ignore[arg-type]
    assert stage._guard_lookup_due is not None
    client.rows = [
        {"ValidationName": RULE_NAME, "Active": True, "ErrorMessage": f"{MARKER}: older",
         "EntityDefinition": {"QualifiedApiName": "Payment__c"}},
    ]  # fmt: skip
    assert stage._guards(client) == OrgGuards(frozenset({"Payment__c"}))  # type: ignore[arg-type]
    due = stage._guard_lookup_due
    assert due is not None and due - time.monotonic() > crm_writer.GUARD_LOOKUP_RETRY_S
    client.rows = []  # an admin deactivated it: the hourly look-up goes back to reading
    assert stage._guards(client) == OrgGuards()  # type: ignore[arg-type]


async def test_a_refused_login_is_waited_out_like_an_outage(
    dead: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    # an expired password (or a login answered 5xx, which simple-salesforce reports the same
    # way) stops every write: no update's fault, so none is dead-lettered for it
    gauge: list[float] = []
    monkeypatch.setattr(crm_writer.metrics.CRM_UNAVAILABLE, "set", gauge.append)
    writer = _Writer({"login": ["refused"] * 6 + ["ok"], "a": ["written"]})
    stage = _stage(writer, _Alerter(), attempts=3)
    counts = await stage.process_batch([_Event(_update("a"))])  # type: ignore[arg-type]
    assert counts == {"written": 1} and dead == []
    assert len(writer.calls) == 7 and gauge[0] == 1 and gauge[-1] == 0
