"""The sequencing rules one at a time, and the lifecycle edge cases DESIGN.md calls out."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from streams.sequencing import (
    AggregateState,
    Event,
    InvalidEvent,
    Outcome,
    Result,
    Sequencer,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def ev(
    event_id: str,
    status: str,
    second: float,
    *,
    aggregate_id: str = "p1",
    aggregate_type: str = "payment",
    method: str | None = "direct_debit",
    attributes: dict[str, str] | None = None,
) -> Event:
    return Event(
        event_id=event_id,
        aggregate_id=aggregate_id,
        aggregate_type=aggregate_type,
        status=status,
        occurred_at=T0 + timedelta(seconds=second),
        source="test",
        method=method if aggregate_type == "payment" else None,
        attributes=attributes or {},
    )


def mandate_ev(event_id: str, status: str, second: float) -> Event:
    return ev(event_id, status, second, aggregate_id="m1", aggregate_type="mandate")


def refund_ev(event_id: str, status: str, second: float) -> Event:
    return ev(event_id, status, second, aggregate_id="r1", aggregate_type="refund")


def run(
    events: list[Event], sequencer: Sequencer | None = None
) -> tuple[AggregateState | None, list[Result]]:
    """Judge ``events`` in order against one running state; returns the state and each result."""
    sequencer = sequencer or Sequencer()
    state: AggregateState | None = None
    results = []
    for event in events:
        result = sequencer.judge(state, event)
        state = result.state
        results.append(result)
    return state, results


def outcomes(result: Result) -> list[tuple[str, Outcome]]:
    return [(j.event.event_id, j.outcome) for j in result.judgements]


def transitions_of(results: list[Result]) -> list[tuple[str | None, str, int]]:
    return [(u.from_status, u.to_status, u.seq) for r in results for u in r.updates]


# -- rule 3 and the first event ---------------------------------------------------------------


def test_first_event_applies_at_any_status() -> None:
    state, [result] = run([ev("e1", "confirmed", 0)])
    assert outcomes(result) == [("e1", Outcome.APPLIED)]
    [update] = result.updates
    assert (update.from_status, update.to_status, update.seq, update.inferred) == (
        None,
        "confirmed",
        1,
        False,
    )
    assert state is not None and state.status == "confirmed" and state.latest_at == T0


def test_applied_changes_carry_event_data_and_count_seq() -> None:
    events = [
        ev("e1", "created", 0),
        ev("e2", "pending_submission", 1, attributes={"psp_id": "PM1"}),
        ev("e3", "submitted", 2),
    ]
    state, results = run(events)
    assert transitions_of(results) == [
        (None, "created", 1),
        ("created", "pending_submission", 2),
        ("pending_submission", "submitted", 3),
    ]
    change = results[1].updates[0]
    assert change.event_id == "e2" and change.attributes == {"psp_id": "PM1"}
    assert change.occurred_at == T0 + timedelta(seconds=1) and change.source == "test"
    assert state is not None and state.last_event_id == "e3" and state.seq == 3


# -- rule 1: duplicates -----------------------------------------------------------------------


def test_seen_event_id_is_duplicate() -> None:
    _, results = run([ev("e1", "created", 0), ev("e2", "pending_submission", 1)])
    state = results[-1].state
    result = Sequencer().judge(state, ev("e1", "created", 0))
    assert outcomes(result) == [("e1", Outcome.DUPLICATE)]
    assert result.judgements[0].reason == "already seen event id"
    assert result.updates == [] and result.state.status == "pending_submission"


def test_new_id_repeating_status_is_duplicate_and_moves_latest_time() -> None:
    state, results = run(
        [
            ev("e1", "created", 0),
            ev("e2", "submitted", 5),  # held: direct debit needs pending_submission
            ev("e3", "created", 10),  # same status, newer: duplicate, latest -> 10
        ]
    )
    assert outcomes(results[2])[0] == ("e3", Outcome.DUPLICATE)
    # the latest time moved, so the held submitted (5 s) was judged again: stale now
    assert outcomes(results[2])[1:] == [("e2", Outcome.STALE)]
    assert state is not None and state.latest_at == T0 + timedelta(seconds=10)
    assert state.held == [] and state.seq == 1
    late = Sequencer().judge(state, ev("e4", "pending_submission", 7))
    assert outcomes(late) == [("e4", Outcome.STALE)]


def test_repeating_status_that_is_older_is_stale_not_duplicate() -> None:
    _, results = run([ev("e1", "created", 5), ev("e2", "created", 1)])
    assert outcomes(results[1]) == [("e2", Outcome.STALE)]


def test_repeating_status_at_same_time_is_duplicate() -> None:
    _, results = run([ev("e1", "submitted", 5), ev("e2", "submitted", 5)])
    assert outcomes(results[1]) == [("e2", Outcome.DUPLICATE)]


def test_further_partial_refund_is_applied_not_duplicate() -> None:
    state, results = run(
        [
            ev("e1", "confirmed", 0),
            ev("e2", "partially_refunded", 1),
            ev("e3", "partially_refunded", 2),
            ev("e3", "partially_refunded", 2),  # redelivery: duplicate id
            ev("e4", "partially_refunded", 1.5),  # older: stale
            ev("e5", "refunded", 3),
        ]
    )
    assert [outcomes(r)[0][1] for r in results] == [
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.DUPLICATE,
        Outcome.STALE,
        Outcome.APPLIED,
    ]
    assert transitions_of(results)[2] == ("partially_refunded", "partially_refunded", 3)
    assert state is not None and state.status == "refunded" and state.seq == 4


# -- rule 2: stale and the same-second tie ----------------------------------------------------


def test_older_event_is_stale() -> None:
    _, results = run([ev("e1", "submitted", 10), ev("e2", "pending_submission", 3)])
    assert outcomes(results[1]) == [("e2", Outcome.STALE)]
    assert results[1].judgements[0].reason.startswith("older than latest 2026-03-01T12:00:10")


def test_same_second_tie_main_line_stage_not_after_is_stale() -> None:
    _, results = run([ev("e1", "confirmed", 0), ev("e2", "submitted", 0)])
    assert outcomes(results[1]) == [("e2", Outcome.STALE)]
    assert "same time" in results[1].judgements[0].reason


def test_same_second_tie_with_later_stage_applies() -> None:
    _, results = run([ev("e1", "submitted", 0), ev("e2", "confirmed", 0)])
    assert outcomes(results[1]) == [("e2", Outcome.APPLIED)]


def test_same_second_tie_off_the_main_line_is_judged_on_legality() -> None:
    # failed is a side status: the tie rule does not apply, the transition is legal
    state, results = run([ev("e1", "confirmed", 0), ev("e2", "failed", 0)])
    assert outcomes(results[1]) == [("e2", Outcome.APPLIED)]
    assert state is not None and state.status == "failed"


# -- rule 4: held, and re-judging -------------------------------------------------------------


def test_gap_is_held_then_filled_in_order() -> None:
    state, results = run(
        [
            ev("e1", "created", 0),
            ev("e3", "submitted", 2),
            ev("e4", "confirmed", 3),
            ev("e2", "pending_submission", 1),
        ]
    )
    assert outcomes(results[1]) == [("e3", Outcome.HELD)]
    assert results[1].judgements[0].reason == (
        "waiting for created -> pending_submission -> submitted"
    )
    assert outcomes(results[2]) == [("e4", Outcome.HELD)]
    assert outcomes(results[3]) == [
        ("e2", Outcome.APPLIED),
        ("e3", Outcome.APPLIED),
        ("e4", Outcome.APPLIED),
    ]
    assert [u.to_status for u in results[3].updates] == [
        "pending_submission",
        "submitted",
        "confirmed",
    ]
    assert [u.seq for u in results[3].updates] == [2, 3, 4]
    assert state is not None and state.status == "confirmed" and state.held == []


def test_held_event_id_counts_as_seen() -> None:
    state, _ = run([ev("e1", "created", 0), ev("e3", "submitted", 2)])
    result = Sequencer().judge(state, ev("e3", "submitted", 2))
    assert outcomes(result) == [("e3", Outcome.DUPLICATE)]
    assert [h.event_id for h in result.state.held] == ["e3"]


def test_held_event_overtaken_by_newer_failure_becomes_stale() -> None:
    state, results = run(
        [
            ev("e1", "created", 0),
            ev("e3", "submitted", 3),  # held, waiting for pending_submission
            ev("e4", "failed", 4),  # created -> failed is legal, and newer than e3
            ev("e2", "pending_submission", 1),  # arrives last: older than the failure
        ]
    )
    assert outcomes(results[2]) == [("e4", Outcome.APPLIED), ("e3", Outcome.STALE)]
    assert outcomes(results[3]) == [("e2", Outcome.STALE)]
    assert state is not None and state.status == "failed" and state.held == []


def test_resubmission_after_failure_in_order() -> None:
    statuses = ["created", "pending_submission", "submitted", "failed"]
    statuses += ["pending_submission", "submitted", "confirmed"]
    events = [ev(f"e{i}", s, i) for i, s in enumerate(statuses)]
    state, results = run(events)
    assert [outcomes(r) for r in results] == [[(e.event_id, Outcome.APPLIED)] for e in events]
    assert state is not None and state.status == "confirmed" and state.seq == 7


def test_resubmission_held_until_the_failure_arrives() -> None:
    state, results = run(
        [
            ev("e2", "submitted", 2),
            ev("e4", "pending_submission", 4),  # resubmission: needs the failure first
            ev("e3", "failed", 3),
        ]
    )
    assert outcomes(results[1]) == [("e4", Outcome.HELD)]
    assert "submitted -> failed -> pending_submission" in results[1].judgements[0].reason
    assert outcomes(results[2]) == [("e3", Outcome.APPLIED), ("e4", Outcome.APPLIED)]
    assert state is not None and state.status == "pending_submission"


def test_held_event_turns_duplicate_when_an_older_one_reaches_its_status() -> None:
    state, results = run(
        [
            ev("e1", "submitted", 1),
            ev("e5", "pending_submission", 5),  # held
            ev("e3", "pending_submission", 3),  # held, older
            ev("e2", "failed", 2),
        ]
    )
    assert outcomes(results[3]) == [
        ("e2", Outcome.APPLIED),
        ("e3", Outcome.APPLIED),
        ("e5", Outcome.DUPLICATE),
    ]
    assert state is not None and state.latest_at == T0 + timedelta(seconds=5)
    assert state.seq == 3 and state.held == []


def test_card_goes_straight_to_confirmed() -> None:
    state, results = run(
        [ev("e1", "created", 0, method="card"), ev("e2", "confirmed", 1, method="card")]
    )
    assert outcomes(results[1]) == [("e2", Outcome.APPLIED)]
    assert state is not None and state.method == "card" and state.status == "confirmed"
    # the same for a direct debit waits for its mandatory stages
    _, dd = run([ev("e1", "created", 0), ev("e2", "confirmed", 1)])
    assert outcomes(dd[1]) == [("e2", Outcome.HELD)]


def test_paid_out_waits_for_confirmed_even_for_a_card() -> None:
    state, results = run(
        [
            ev("e1", "created", 0, method="card"),
            ev("e3", "paid_out", 2, method="card"),
            ev("e2", "confirmed", 1, method="card"),
        ]
    )
    assert outcomes(results[1]) == [("e3", Outcome.HELD)]
    assert outcomes(results[2]) == [("e2", Outcome.APPLIED), ("e3", Outcome.APPLIED)]
    assert state is not None and state.status == "paid_out"


def test_payment_method_adopted_from_first_event_naming_one() -> None:
    state, results = run(
        [
            ev("e1", "created", 0, method=None),
            ev("e2", "confirmed", 1, method=None),  # direct-debit rules: held
            ev("e3", "pending_customer_approval", 0.5, method="card"),
        ]
    )
    assert outcomes(results[1]) == [("e2", Outcome.HELD)]
    # the card method arrives with e3; e3 applies and the held confirmed is now legal
    assert outcomes(results[2]) == [("e3", Outcome.APPLIED), ("e2", Outcome.APPLIED)]
    assert state is not None and state.method == "card" and state.status == "confirmed"


def test_mandate_suspended_and_reinstated() -> None:
    state, results = run(
        [
            mandate_ev("m-1", "created", 0),
            mandate_ev("m-2", "submitted", 1),
            mandate_ev("m-3", "active", 2),
            mandate_ev("m-4", "suspended", 3),
            mandate_ev("m-5", "active", 4),
            mandate_ev("m-7", "expired", 6),
            mandate_ev("m-6", "suspended", 5),  # late: stale, expiry already applied
        ]
    )
    assert transitions_of(results) == [
        (None, "created", 1),
        ("created", "submitted", 2),
        ("submitted", "active", 3),
        ("active", "suspended", 4),
        ("suspended", "active", 5),
        ("active", "expired", 6),
    ]
    assert outcomes(results[-1]) == [("m-6", Outcome.STALE)]
    assert state is not None and state.status == "expired"


def test_mandate_expiry_while_suspended_waits_for_reinstatement() -> None:
    state, results = run(
        [
            mandate_ev("m-1", "suspended", 0),
            mandate_ev("m-3", "expired", 2),
            mandate_ev("m-2", "active", 1),
        ]
    )
    assert outcomes(results[1]) == [("m-3", Outcome.HELD)]
    assert outcomes(results[2]) == [("m-2", Outcome.APPLIED), ("m-3", Outcome.APPLIED)]
    assert state is not None and state.status == "expired"


def test_refund_reversed_after_being_refunded() -> None:
    state, results = run(
        [
            refund_ev("r-1", "created", 0),
            refund_ev("r-2", "refunded", 1),
            refund_ev("r-3", "failed", 9),
        ]
    )
    assert transitions_of(results)[-1] == ("refunded", "failed", 3)  # scheme rejected it later
    assert state is not None and state.status == "failed"
    state, results = run([refund_ev("r-2", "refunded", 1), refund_ev("r-3", "reversed", 2)])
    assert transitions_of(results)[-1] == ("refunded", "reversed", 2)
    late = Sequencer().judge(state, refund_ev("r-4", "refunded", 3))
    assert outcomes(late) == [("r-4", Outcome.REJECTED)]  # reversed is terminal


# -- rule 5: rejected -------------------------------------------------------------------------


def test_cancelled_to_confirmed_is_rejected_and_not_remembered() -> None:
    state, results = run([ev("e1", "cancelled", 0), ev("e2", "confirmed", 1)])
    [judgement] = results[1].judgements
    assert judgement.outcome is Outcome.REJECTED
    assert judgement.reason == "illegal transition cancelled -> confirmed: unreachable"
    assert results[1].updates == []
    assert state is not None and "e2" not in state.seen and state.status == "cancelled"
    # a replay from the DLQ is judged again rather than dropped as a duplicate
    replay = Sequencer().judge(state, ev("e2", "confirmed", 1))
    assert outcomes(replay) == [("e2", Outcome.REJECTED)]


def test_held_event_made_unreachable_is_rejected_on_rejudgement() -> None:
    state, results = run(
        [ev("e1", "created", 0), ev("e3", "submitted", 5), ev("e2", "cancelled", 1)]
    )
    assert outcomes(results[2]) == [("e2", Outcome.APPLIED), ("e3", Outcome.REJECTED)]
    assert state is not None and state.held == [] and "e3" not in state.seen


def test_event_for_another_aggregate_is_rejected() -> None:
    state, _ = run([ev("e1", "created", 0)])
    result = Sequencer().judge(state, ev("x", "created", 1, aggregate_id="p2"))
    assert outcomes(result) == [("x", Outcome.REJECTED)] and result.state.status == "created"


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
