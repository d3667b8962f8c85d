"""The sequencing rules one at a time, and the lifecycle edge cases DESIGN.md calls out."""

from __future__ import annotations

from datetime import timedelta

from streams.sequencing import Outcome, Sequencer
from tests.unit.streams.sequencing_support import (
    T0,
    ev,
    mandate_ev,
    outcomes,
    refund_ev,
    run,
    transitions_of,
)

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
