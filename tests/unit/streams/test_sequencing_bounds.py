"""The sequencer's bounds, its state's JSON form, reconciliation and event validation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from streams.sequencing import AggregateState, Event, InvalidEvent, Outcome, Sequencer
from tests.unit.streams.sequencing_support import T0, ev, outcomes, run

# -- bounds -----------------------------------------------------------------------------------


def test_seen_ids_are_bounded_oldest_first() -> None:
    seq = Sequencer(max_seen=3)
    statuses = ["created", "pending_submission", "submitted", "confirmed", "paid_out"]
    state, results = run([ev(f"e{i}", s, i) for i, s in enumerate(statuses)], seq)
    assert [r.evicted_seen for r in results] == [0, 0, 0, 1, 1]
    assert state is not None and list(state.seen) == ["e2", "e3", "e4"]


def test_full_held_list_evicts_oldest_and_reports_it() -> None:
    seq = Sequencer(max_held=2)
    state, results = run(
        [
            ev("e1", "created", 0),
            ev("e3", "submitted", 3),
            ev("e4", "confirmed", 4),
            ev("e5", "paid_out", 5),
        ],
        seq,
    )
    last = results[-1]
    assert outcomes(last) == [("e5", Outcome.HELD), ("e3", Outcome.REJECTED)]
    assert last.judgements[1].reason.startswith("evicted:") and last.evicted_held == 1
    assert state is not None and [h.event_id for h in state.held] == ["e4", "e5"]
    assert "e3" not in state.seen  # a replay of the evicted event is judged again
    # an incoming event older than every held one is the one pushed out
    older = seq.judge(state, ev("e2b", "submitted", 2))
    assert outcomes(older) == [("e2b", Outcome.REJECTED)] and older.evicted_held == 1
    assert [h.event_id for h in older.state.held] == ["e4", "e5"]


def test_sequencer_bounds_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Sequencer(max_seen=0)


# -- state ------------------------------------------------------------------------------------


def test_state_round_trips_through_json() -> None:
    state, _ = run(
        [
            ev("e1", "created", 0),
            ev("e3", "submitted", 3, attributes={"psp_id": "PM9"}),
            ev("e4", "confirmed", 4.25),
        ]
    )
    assert state is not None and len(state.held) == 2
    data = state.to_dict()
    text = json.dumps(data)
    again = AggregateState.from_dict(json.loads(text))
    assert again == state
    assert again.held[0].attributes == {"psp_id": "PM9"}
    assert "aggregate_id" not in data["held"][0]  # compact: the state already names it
    assert all(v is not None for v in data.values())


def test_judge_does_not_mutate_the_given_state() -> None:
    state, _ = run([ev("e1", "created", 0), ev("e3", "submitted", 3)])
    assert state is not None
    before = state.to_dict()
    Sequencer().judge(state, ev("e2", "pending_submission", 1))
    assert state.to_dict() == before


# -- reconcile --------------------------------------------------------------------------------


def test_reconcile_infers_missing_stages() -> None:
    state, _ = run([ev("e1", "created", 0), ev("e4", "confirmed", 4)])
    assert state is not None
    now = T0 + timedelta(hours=1)
    assert [
        e.event_id for e in Sequencer.overdue_held(state, now=now, timeout=timedelta(minutes=30))
    ] == ["e4"]
    assert (
        Sequencer.overdue_held(state, now=T0 + timedelta(seconds=5), timeout=timedelta(minutes=30))
        == []
    )
    result = Sequencer().reconcile(state, "confirmed", now=now)
    assert [(u.from_status, u.to_status, u.seq, u.inferred) for u in result.updates] == [
        ("created", "pending_submission", 2, True),
        ("pending_submission", "submitted", 3, True),
        ("submitted", "confirmed", 4, True),
    ]
    assert [u.event_id for u in result.updates] == [
        "reconcile:p1:pending_submission:2",
        "reconcile:p1:submitted:3",
        "reconcile:p1:confirmed:4",
    ]
    assert all(u.occurred_at == now and u.source == "reconcile" for u in result.updates)
    # the PSP's answer first, then the held confirmed, now older than what the PSP said
    assert outcomes(result) == [
        ("reconcile:p1:confirmed:4", Outcome.APPLIED),
        ("e4", Outcome.STALE),
    ]
    assert result.state.status == "confirmed" and result.state.held == []


def test_reconcile_to_unreachable_status_is_rejected() -> None:
    state, _ = run([ev("e1", "cancelled", 0)])
    assert state is not None
    result = Sequencer().reconcile(state, "confirmed", now=T0 + timedelta(hours=1))
    assert result.updates == []
    assert [j.outcome for j in result.judgements] == [Outcome.REJECTED]
    assert "unreachable" in result.judgements[0].reason
    assert result.state == state


def test_reconcile_to_current_status_makes_held_events_stale() -> None:
    state, _ = run([ev("e1", "created", 0), ev("e3", "submitted", 3)])
    assert state is not None
    now = T0 + timedelta(hours=1)
    result = Sequencer().reconcile(state, "created", now=now, source="gocardless")
    assert result.updates == []
    assert [j.outcome for j in result.judgements] == [Outcome.DUPLICATE, Outcome.STALE]
    assert result.state.latest_at == now and result.state.held == []


def test_reconcile_unknown_status_is_rejected() -> None:
    state, _ = run([ev("e1", "created", 0)])
    assert state is not None
    result = Sequencer().reconcile(state, "bogus", now=T0)
    assert [j.outcome for j in result.judgements] == [Outcome.REJECTED] and result.updates == []


# -- events -----------------------------------------------------------------------------------


def test_event_round_trips_and_normalises_to_utc() -> None:
    event = Event.from_dict(
        {
            "event_id": "e1",
            "aggregate_id": "p1",
            "aggregate_type": "payment",
            "status": "created",
            "occurred_at": "2026-03-01T13:00:00+01:00",
            "source": "stripe",
            "method": "card",
            "attributes": {"psp_id": "pi_1"},
        }
    )
    assert event.occurred_at == T0 and event.occurred_at.tzinfo is UTC
    assert event.to_dict()["occurred_at"] == "2026-03-01T12:00:00Z"
    assert Event.from_dict(json.loads(json.dumps(event.to_dict()))) == event


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "settled"}, "unknown status 'settled' for payment"),
        ({"aggregate_type": "invoice"}, "unknown aggregate_type 'invoice'"),
        ({"method": "cash"}, "unknown method 'cash'"),
        ({"occurred_at": "2026-03-01T12:00:00"}, "naive timestamp"),
        ({"occurred_at": "yesterday"}, "bad timestamp"),
        ({"event_id": None}, "missing field 'event_id'"),
        ({"source": 3}, "field 'source' must be a non-empty string"),
        ({"attributes": {"n": 1}}, "attribute 'n'"),
    ],
)
def test_invalid_events_are_refused(change: dict[str, object], message: str) -> None:
    data: dict[str, object] = {
        "event_id": "e1",
        "aggregate_id": "p1",
        "aggregate_type": "payment",
        "status": "created",
        "occurred_at": "2026-03-01T12:00:00Z",
        "source": "crm",
    }
    data.update(change)
    with pytest.raises(InvalidEvent, match=message):
        Event.from_dict(data)


def test_naive_datetime_refused_on_construction() -> None:
    with pytest.raises(InvalidEvent):
        Event("e1", "p1", "payment", "created", datetime(2026, 1, 1), "crm")


@pytest.mark.parametrize("field", ["event_id", "aggregate_id", "source"])
def test_empty_ids_are_refused_on_construction_as_the_agent_builds_events(field: str) -> None:
    # The agent builds events from decoded Avro, where "" fits the schema; offline and live
    # must refuse the same events (an empty aggregate id was applied under the key "").
    fields = {"event_id": "e1", "aggregate_id": "p1", "source": "crm", field: ""}
    with pytest.raises(InvalidEvent, match=f"field '{field}' must be a non-empty string"):
        Event(aggregate_type="payment", status="created", occurred_at=T0, **fields)
