"""Automatic replay of dead letters: the schedule, the replay header, what is due and what
counts as waiting for a human (streams/auto_replay.py, streams/dlq_watch.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.errors import (
    AuthenticationError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from streams import auto_replay, metrics
from streams.auto_replay import REPLAY_ATTEMPT_HEADER as HEADER
from streams.codec import AvroCodec
from streams.deadletters import make_dead_letter
from streams.dlq_store import REPLAYED
from streams.dlq_watch import PENDING, SCHEDULED, DlqWatch
from streams.settings import Settings

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SCHEDULE = (10.0, 60.0)


def no_jitter() -> float:
    return 0.0


# --- the schedule and the header --------------------------------------------------------------


def test_each_failure_takes_the_next_delay_until_the_schedule_is_used_up() -> None:
    at = [auto_replay.retry_at(n, SCHEDULE, NOW, no_jitter) for n in range(4)]
    assert at == [NOW + timedelta(seconds=10), NOW + timedelta(seconds=60), None, None]


def test_an_empty_schedule_replays_nothing() -> None:
    assert auto_replay.retry_at(0, (), NOW) is None


def test_the_delay_is_stretched_by_at_most_a_fifth() -> None:
    assert auto_replay.retry_at(0, SCHEDULE, NOW, lambda: 1.0) == NOW + timedelta(seconds=12)


def test_the_default_schedule_replays_four_times() -> None:
    schedule = Settings().normaliser_retry_schedule_s
    assert len(schedule) == 4
    assert [auto_replay.retry_at(n, schedule, NOW) is None for n in range(5)] == [False] * 4 + [
        True
    ]


@pytest.mark.parametrize(
    ("headers", "replays"),
    [
        (None, 0),
        ([], 0),
        ([("traceparent", b"00-ab")], 0),
        ([("traceparent", b"x"), (HEADER, b"2")], 2),
        ({HEADER: b"3"}, 3),
        ([(HEADER, b"-1")], 0),
        ([(HEADER, b"two")], 0),
        ([(HEADER, b"\xff")], 0),
        ([(HEADER, "2")], 0),  # not bytes: not what a Kafka client hands over
    ],
)
def test_replays_come_from_the_header(headers: Any, replays: int) -> None:
    assert auto_replay.replays_of(headers) == replays


def test_a_replay_carries_the_letters_attempts_and_the_next_failure_continues_the_schedule() -> (
    None
):
    letter = {"attempts": 1}
    headers = auto_replay.replay_headers(letter)
    assert headers == [(HEADER, b"1")]
    # the replayed record fails again: its letter is scheduled with the second delay
    replays = auto_replay.replays_of(headers)
    assert auto_replay.retry_at(replays, SCHEDULE, NOW, no_jitter) == NOW + timedelta(seconds=60)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (TransientError("gocardless answered 503", psp="gocardless", http_status=503), True),
        (PermanentError("bad", should_retry=True), True),
        (NotFoundError("gone"), False),
        (PermanentError("refused"), False),
        (AuthenticationError("revoked key", http_status=401), True),
        (ValueError("a bug"), False),
        (None, False),
    ],
)
def test_only_retryable_connector_errors_are_replayed(error: Any, retryable: bool) -> None:
    assert auto_replay.is_retryable(error) is retryable


def test_a_letter_waits_for_the_bus_until_it_is_overdue() -> None:
    grace = auto_replay.overdue_after(5.0)
    assert grace == auto_replay.OVERDUE_MIN
    assert auto_replay.overdue_after(60.0) == timedelta(minutes=10)
    record = {"retry_at": NOW}
    assert auto_replay.waits_for_replay(record, NOW + grace - timedelta(seconds=1), grace)
    assert not auto_replay.waits_for_replay(record, NOW + grace, grace)
    assert not auto_replay.waits_for_replay({"retry_at": None}, NOW, grace)
    assert auto_replay.describe(record, NOW, grace) == "retrying at 2026-12-04T12:00:00+00:00"
    assert auto_replay.describe(record, NOW + grace, grace).endswith("(overdue)")
    assert auto_replay.describe({"retry_at": None}, NOW, grace) == "pending"


# --- the watch: what is kept, due, pending --------------------------------------------------

CODEC = AvroCodec()


Record = tuple[bytes, list[tuple[str, bytes]]]


def letter(offset: int, retry_at: datetime | None, *, stage: str = "normaliser") -> Record:
    """A DLQ record as written: (value, headers)."""
    record = make_dead_letter(
        topic="paybus.psp.webhooks", partition=0, offset=offset, key=b"PO1", value=b"webhook",
        stage=stage, reason="gocardless answered 503",
    ).asdict()  # fmt: skip
    return CODEC.encode("DeadLetter", record), auto_replay.retry_at_headers(retry_at)


def marker(offset: int) -> Record:
    record = CODEC.decode(letter(offset, None)[0], "DeadLetter")
    return CODEC.encode("DeadLetter", {**record, "stage": REPLAYED, "value": b""}), []


def watch_of(*records: tuple[int, Record], keep: int = 10) -> DlqWatch:
    """A watch fed ``(DLQ partition, record)``, as if read to the end at ``NOW``."""
    watch = DlqWatch("unused:9092", "dlq", keep=keep)
    for partition, (value, headers) in records:
        watch._add(value, partition, headers)
    watch._at_end = watch.caught_up = True
    watch._count_over_cap()
    watch._pending, watch._scheduled = watch._count(NOW)
    return watch


def gauges(watch: DlqWatch) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for family in watch.collect():
        for s in family.samples:
            out.setdefault(s.name, {})[s.labels["stage"]] = s.value
    return out


def everything(_partition: int) -> bool:
    return True


def test_a_scheduled_letter_is_not_pending_for_a_human() -> None:
    soon = NOW + timedelta(seconds=10)
    watch = watch_of((0, letter(1, soon)), (0, letter(2, None, stage="sequencer")))
    assert gauges(watch) == {
        PENDING: {"normaliser": 0, "sequencer": 1},
        SCHEDULED: {"normaliser": 1, "sequencer": 0},
    }
    assert watch.due(NOW, everything) == []
    [due] = watch.due(soon, everything)
    assert (due.id, due.record["value"], due.retry_at) == ("paybus.psp.webhooks:0:1", b"webhook",
                                                           soon)  # fmt: skip


def test_only_letters_with_a_retry_at_keep_their_bytes() -> None:
    watch = watch_of((0, letter(1, NOW)), (0, letter(2, None)))
    records = {lid: lt.record for lid, lt in watch._ledger.letters.items()}
    assert records["paybus.psp.webhooks:0:1"]["value"] == b"webhook"
    assert "value" not in records["paybus.psp.webhooks:0:2"]


def test_a_replayed_letter_is_not_due_again_before_its_marker_is_read() -> None:
    watch = watch_of((0, letter(1, NOW)))
    [due] = watch.due(NOW, everything)
    due.resolved_at = NOW
    watch.closed([due])
    assert watch.due(NOW + timedelta(hours=1), everything) == []
    assert watch._kept == {} and "value" not in watch._ledger.letters[due.id].record
    assert watch._count(NOW) == ({"normaliser": 0}, {"normaliser": 0})


def test_a_marker_closes_a_scheduled_letter_and_drops_its_bytes() -> None:
    watch = watch_of((0, letter(1, NOW)), (0, marker(1)))
    assert watch.due(NOW, everything) == [] and watch._kept == {}
    closed = watch._ledger.letters["paybus.psp.webhooks:0:1"]
    assert closed.replayed and "value" not in closed.record


def test_nothing_is_due_unless_the_dlq_was_read_to_the_end() -> None:
    watch = watch_of((0, letter(1, NOW)))
    watch._at_end = False  # the marker may be further on
    assert watch.due(NOW, everything) == []


def test_a_worker_replays_only_the_partitions_it_owns() -> None:
    watch = watch_of((0, letter(1, NOW)), (3, letter(2, NOW)))
    assert [lt.id for lt in watch.due(NOW, lambda p: p == 3)] == ["paybus.psp.webhooks:0:2"]


def test_letters_beyond_the_cap_are_left_to_operators() -> None:
    before = metrics.DLQ_AUTO_REPLAYS.labels("normaliser", auto_replay.OVER_CAP)._value.get()
    watch = watch_of((0, letter(1, NOW)), (0, letter(2, NOW)), (0, letter(3, NOW)), keep=2)
    assert [lt.id for lt in watch.due(NOW, everything)] == [
        "paybus.psp.webhooks:0:1",
        "paybus.psp.webhooks:0:2",
    ]
    assert gauges(watch) == {PENDING: {"normaliser": 1}, SCHEDULED: {"normaliser": 2}}
    after = metrics.DLQ_AUTO_REPLAYS.labels("normaliser", auto_replay.OVER_CAP)._value.get()
    assert after - before == 1
    assert "value" not in watch._ledger.letters["paybus.psp.webhooks:0:3"].record


def test_a_letter_over_the_cap_that_a_later_marker_closed_is_not_counted() -> None:
    # an ops worker re-reads the DLQ from the start after a restart: a letter replayed long
    # ago meets a full cap before its marker is read; it was never left to operators
    before = metrics.DLQ_AUTO_REPLAYS.labels("normaliser", auto_replay.OVER_CAP)._value.get()
    watch = watch_of((0, letter(1, NOW)), (0, letter(2, NOW)), (0, marker(2)), keep=1)
    after = metrics.DLQ_AUTO_REPLAYS.labels("normaliser", auto_replay.OVER_CAP)._value.get()
    assert after == before
    assert [lt.id for lt in watch.due(NOW, everything)] == ["paybus.psp.webhooks:0:1"]
    assert gauges(watch) == {PENDING: {"normaliser": 0}, SCHEDULED: {"normaliser": 1}}


def test_with_automatic_replay_off_every_letter_waits_for_a_human() -> None:
    watch = watch_of((0, letter(1, NOW)), keep=0)
    assert gauges(watch) == {PENDING: {"normaliser": 1}, SCHEDULED: {"normaliser": 0}}
    assert watch.due(NOW, everything) == []


def test_an_overdue_letter_counts_as_pending_again() -> None:
    # no ops worker replays it (or every replay fails): the pending alert must see it
    watch = watch_of((0, letter(1, NOW - auto_replay.OVERDUE_MIN)))
    assert gauges(watch) == {PENDING: {"normaliser": 1}, SCHEDULED: {"normaliser": 0}}
    assert len(watch.due(NOW, everything)) == 1  # still replayed when it can be


def test_a_later_copy_for_an_operator_replaces_a_scheduled_one() -> None:
    # the same record failing again (re-read after a crash) with its replays used up
    watch = watch_of((0, letter(1, NOW)), (0, letter(1, None)))
    assert watch.due(NOW, everything) == [] and watch._kept == {}
    assert gauges(watch)[PENDING] == {"normaliser": 1}


def test_a_replay_failing_half_way_closes_the_letters_it_replayed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from streams.agents import dlq

    watch = watch_of((0, letter(1, NOW)), (0, letter(2, NOW)))
    monkeypatch.setattr(watch, "refresh", lambda: None)

    def replay_one_then_fail(_bootstrap: str, _topic: str, due: list[Any], **_: Any) -> None:
        due[0].resolved_at = NOW  # delivered and marked (dlq_store.replay marks as it goes)
        raise TimeoutError("no ack within 30 s")

    monkeypatch.setattr(dlq, "replay", replay_one_then_fail)
    stage = object.__new__(dlq.DlqStage)
    stage.bootstrap, stage.watch = "unused:9092", watch
    stage.status_topic = SimpleNamespace(partitions=8)  # type: ignore[assignment]
    failed = metrics.DLQ_AUTO_REPLAYS.labels("normaliser", auto_replay.FAILED)
    before = failed._value.get()
    stage._replay_due(frozenset(range(8)))
    # the next tick replays only the letter that failed
    assert [lt.id for lt in watch.due(NOW, everything)] == ["paybus.psp.webhooks:0:2"]
    assert failed._value.get() - before == 1
