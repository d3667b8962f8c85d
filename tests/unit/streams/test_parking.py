"""The pure rules of ordered parking, retry due times, scheduled collection and DLQ replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.errors import (
    AuthenticationError,
    NotFoundError,
    PermanentError,
    TransientError,
    worth_asking_later,
)
from streams import parking
from streams.dlq_store import Ledger, Letter, collect, replay_order, select
from streams.parking import Parked, RetryQueue
from streams.secrets_check import key_fingerprint
from streams.settings import Settings

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
SCHEDULE = (0.5, 1.0, 2.0)


def test_retry_due_follows_the_schedule_and_caps_at_its_end() -> None:
    def due(attempt: int) -> datetime:
        return parking.retry_due(attempt, SCHEDULE, NOW, rng=lambda: 0.0)

    assert due(1) == NOW + timedelta(seconds=0.5)
    assert due(3) == NOW + timedelta(seconds=2)
    assert due(9) == NOW + timedelta(seconds=2)
    assert due(0) == NOW


def test_retries_parked_together_come_due_spread_not_at_once() -> None:
    # one outage parks many commands at the same moment: their retries must not all meet
    # the PSP in the same second when it comes back
    dues = {parking.retry_due(1, (60.0,), NOW) for _ in range(50)}
    assert len(dues) > 40
    assert all(NOW + timedelta(seconds=60) <= d <= NOW + timedelta(seconds=72) for d in dues)
    assert parking.retry_due(1, (60.0,), NOW, rng=lambda: 1.0) == NOW + timedelta(seconds=72)


def test_refused_credentials_are_tried_again_at_once_by_a_worker_started_after() -> None:
    # the key is fixed by restarting the workers (settings are read once per process): what
    # was parked for it before must not wait out the rest of the schedule
    due = NOW + timedelta(hours=6)
    started = NOW - timedelta(minutes=1)
    before, after = started - timedelta(minutes=5), started + timedelta(seconds=1)

    def due_for(parked_for: str | None, parked_at: datetime) -> datetime:
        return parking.due_for(
            due, parked_for=parked_for, parked_at=parked_at, started_at=started, now=NOW
        )

    assert due_for(parking.CREDENTIALS, before) == NOW
    # parked by this worker (its key refused too), or for a PSP outage: the schedule stands
    assert due_for(parking.CREDENTIALS, after) == due
    assert due_for(None, before) == due
    # already due earlier than now: unchanged
    early = NOW - timedelta(seconds=3)
    assert (
        parking.due_for(
            early, parked_for=parking.CREDENTIALS, parked_at=before, started_at=started, now=NOW
        )
        == early
    )


def test_with_fingerprints_a_worker_tries_at_once_exactly_when_its_key_is_another() -> None:
    # a rolling restart: worker A started with the new key while B, on the old one, kept
    # parking; and a worker restarted with the same wrong key must not try again at all
    due = NOW + timedelta(hours=6)
    started = NOW - timedelta(minutes=1)

    def due_for(parked_at: datetime, refused: str, own: str) -> datetime:
        return parking.due_for(
            due, parked_for=parking.CREDENTIALS, parked_at=parked_at, started_at=started,
            now=NOW, refused_key=refused, own_key=own,
        )  # fmt: skip

    after, before = started + timedelta(seconds=30), started - timedelta(minutes=5)
    assert due_for(after, "old", "new") == NOW  # parked by B after A started
    assert due_for(before, "same", "same") == due  # restarted, key still wrong
    assert parking.due_for(
        due, parked_for=None, parked_at=before, started_at=started, now=NOW,
        refused_key="old", own_key="new",
    ) == due  # fmt: skip


def test_a_key_fingerprint_tells_keys_apart_and_does_not_show_them(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYBUS_GOCARDLESS__ACCESS_TOKEN", "live_token_one")
    one = key_fingerprint(Settings(), "gocardless")
    assert one == key_fingerprint(Settings(), "gocardless") and one is not None
    assert "live_token_one" not in one and len(one) == 12
    monkeypatch.setenv("PAYBUS_GOCARDLESS__ACCESS_TOKEN", "live_token_two")
    assert key_fingerprint(Settings(), "gocardless") != one
    assert key_fingerprint(Settings(), "stripe") is not None  # its api_key
    assert key_fingerprint(Settings(), "adyen") is None  # no settings of its own


def test_only_the_bus_s_own_key_and_passing_failures_are_asked_again() -> None:
    assert worth_asking_later(TransientError("503", http_status=503))
    assert worth_asking_later(AuthenticationError("revoked", http_status=401))
    assert worth_asking_later(AuthenticationError("not allowed", http_status=403))
    assert not worth_asking_later(PermanentError("amount must be positive", http_status=422))
    assert not worth_asking_later(NotFoundError("no such mandate", http_status=404))
    assert not worth_asking_later(ValueError("a bug"))


def test_exhausted_after_as_many_retries_as_the_schedule_has() -> None:
    assert not parking.exhausted(0, SCHEDULE)
    assert not parking.exhausted(2, SCHEDULE)
    assert parking.exhausted(3, SCHEDULE)


def test_error_log_keeps_the_newest_lines() -> None:
    text = ""
    for i in range(15):
        text = parking.error_log(text, f"attempt {i}: 503")
    lines = text.splitlines()
    assert len(lines) == parking.MAX_ERROR_LINES and lines[-1] == "attempt 14: 503"


def test_collection_due_is_lead_days_before_the_charge_date() -> None:
    assert parking.collection_due("2025-03-10") == datetime(2025, 3, 10, tzinfo=UTC)
    assert parking.collection_due("2025-03-10", 3) == datetime(2025, 3, 7, tzinfo=UTC)
    with pytest.raises(ValueError):
        parking.collection_due("next tuesday")


def test_parked_entry_keeps_order_and_is_idempotent() -> None:
    entry = parking.appended(None, "t:0:5", parking.RETRY)
    entry = parking.appended(entry, "t:0:9", parking.WAITING)
    again = parking.appended(entry, "t:0:5", parking.WAITING)  # re-delivered after a crash
    assert parking.pending(again) == ["t:0:5", "t:0:9"]
    assert again["stages"]["t:0:5"] == parking.RETRY
    rest = parking.removed(again, "t:0:5")
    assert parking.pending(rest) == ["t:0:9"]
    assert parking.removed(rest, "t:0:9") is None


def test_blocked_by_survives_removal_of_others() -> None:
    entry = parking.appended(parking.appended(None, "a", "retry"), "b", "waiting")
    rest = parking.removed(entry, "a")
    assert rest is not None
    rest["blocked_by"] = "dl-1"
    assert parking.blocked_by(parking.appended(rest, "c", "waiting")) == "dl-1"
    assert parking.blocked_by(entry) is None


def _item(key: str, origin: str, attempt: int = 0, due: datetime = NOW) -> Parked:
    return Parked(key, origin, attempt, due, parking.RETRY)


def test_queue_drops_finished_and_lower_attempts() -> None:
    q = RetryQueue()
    assert q.offer(_item("k", "o1"), ["o2"]) == ("stale", None)
    first = _item("k", "o1", attempt=1)
    assert q.offer(first, ["o1"]) == ("held", None)
    assert q.offer(_item("k", "o1", attempt=0), ["o1"]) == ("superseded", None)
    verdict, replaced = q.offer(_item("k", "o1", attempt=2), ["o1"])
    assert verdict == "held" and replaced is first
    assert len(q) == 1


def test_only_the_first_listed_origin_runs_and_only_when_due() -> None:
    q = RetryQueue()
    later = _item("a", "a2")
    head = _item("a", "a1", attempt=1, due=NOW + timedelta(seconds=5))
    other = _item("b", "b1")
    listed = {"a": ["a1", "a2"], "b": ["b1"]}
    for item in (later, head, other):  # arrival order differs from listed order
        q.offer(item, listed[item.key])
    assert q.runnable(listed, NOW, set()) == [other]
    assert q.runnable(listed, NOW + timedelta(seconds=6), set()) == [other, head]  # by due
    assert q.runnable(listed, NOW + timedelta(seconds=6), {"a"}) == [other]
    q.discard(head)
    assert q.runnable({"a": ["a2"], "b": []}, NOW, set()) == [later]


def test_head_missing_means_the_aggregate_waits() -> None:
    q = RetryQueue()
    q.offer(_item("a", "a2"), ["a1", "a2"])
    assert q.runnable({"a": ["a1", "a2"]}, NOW, set()) == []
    assert q.drop_orphans("a", ["a1"]) and len(q) == 0


def _letter(lid: str, topic: str, partition: int, offset: int, **kw: object) -> dict[str, object]:
    return {"dead_letter_id": lid, "original_topic": topic, "original_partition": partition,
            "original_offset": offset, "stage": "decode", "failed_at": NOW,
            "aggregate_id": kw.pop("aggregate", None), **kw}  # fmt: skip


def test_replay_order_is_by_original_offset_per_partition() -> None:
    letters = [Letter(_letter(str(i), "t", p, o)) for i, (p, o) in enumerate(
        [(1, 9), (0, 7), (1, 3), (0, 2)])]  # fmt: skip
    order = [(lt.record["original_partition"], lt.record["original_offset"])
             for lt in replay_order(letters)]  # fmt: skip
    assert order == [(0, 2), (0, 7), (1, 3), (1, 9)]


def test_markers_flag_replayed_and_a_later_failure_reopens() -> None:
    later = NOW + timedelta(minutes=1)
    records = [
        _letter("x", "t", 0, 1, aggregate="A"),
        _letter("y", "t", 0, 2, aggregate="A"),
        {**_letter("x", "t", 0, 1), "stage": "replayed", "failed_at": later},
    ]
    letters = collect(records)
    assert letters["x"].replayed and not letters["y"].replayed
    assert [lt.id for lt in select(letters, aggregate="A")] == ["y"]
    assert [lt.id for lt in select(letters, everything=True)] == ["y"]
    reopened = collect([*records, {**_letter("x", "t", 0, 1), "failed_at": later + timedelta(1)}])
    assert not reopened["x"].replayed
    with pytest.raises(KeyError):
        select(letters, ids=["nope"])


def test_a_discard_marker_closes_a_letter_as_discarded_not_replayed() -> None:
    later = NOW + timedelta(minutes=1)
    records = [
        _letter("x", "t", 0, 1, aggregate="A", stage="normaliser"),
        _letter("y", "t", 0, 2, aggregate="A", stage="crm"),
        {**_letter("x", "t", 0, 1), "stage": "discarded", "failed_at": later,
         "reason": "discarded: a test event"},
    ]  # fmt: skip
    ledger = Ledger()
    for record in records:
        ledger.add(record)
    x = ledger.letters["x"]
    assert x.resolved and x.resolution == "discarded" and not x.replayed
    assert x.resolved_at == later and x.resolution_reason == "discarded: a test event"
    assert [lt.id for lt in ledger.pending()] == ["y"]
    # nothing picks a discarded letter up for a bulk replay; naming it still can
    assert [lt.id for lt in select(ledger.letters, aggregate="A")] == ["y"]
    assert [lt.id for lt in select(ledger.letters, ids=["x"])] == ["x"]


def test_log_order_not_clocks_decides_what_a_marker_closes() -> None:
    # a marker closes the letter before it, even when the operator's clock is behind the
    # worker's; a copy of the letter after the marker (the record failed again) is pending
    ledger = Ledger()
    ledger.add(_letter("x", "t", 0, 1, failed_at=NOW + timedelta(minutes=5)))
    ledger.add({**_letter("x", "t", 0, 1), "stage": "replayed", "failed_at": NOW})
    assert ledger.pending() == [] and ledger.letters["x"].replayed
    ledger.add(_letter("x", "t", 0, 1, failed_at=NOW - timedelta(minutes=1)))
    assert [lt.id for lt in ledger.pending()] == ["x"]
    ledger.add({**_letter("x", "t", 0, 1), "stage": "discarded",
                "failed_at": NOW + timedelta(seconds=9)})  # fmt: skip
    assert ledger.pending() == [] and ledger.letters["x"].resolution == "discarded"


def test_a_marker_without_its_letter_lists_nothing() -> None:
    ledger = Ledger()
    ledger.add({**_letter("x", "t", 0, 1), "stage": "replayed"})
    assert ledger.letters == {} and ledger.pending() == []
