"""A refused cancel: its answer marked by the command stage, re-asserted by the sequencer."""

from __future__ import annotations

from datetime import UTC, datetime

from streams import page_expiry
from streams.records import PaymentCommand, PaymentEvent
from streams.refusals import is_refusal, refused_answer
from streams.sequencing import Outcome, Sequencer
from streams.sequencing_state import REFUSED_ATTRIBUTE, Event
from tests.unit.streams.sequencing_support import ev as _ev
from tests.unit.streams.sequencing_support import outcomes, run

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def ev(
    event_id: str, status: str, second: float, attributes: dict[str, str] | None = None
) -> Event:
    """A card payment's event (no mandatory stages between created and confirmed)."""
    return _ev(event_id, status, second, method="card", attributes=attributes)


def _command(operation: str = "cancel", reason: str | None = None) -> PaymentCommand:
    return PaymentCommand(
        command_id="cmd-1", aggregate_id="pay-1", aggregate_type="payment",
        operation=operation, psp="stripe", issued_at=NOW, psp_object_id="pi_1", reason=reason,
    )  # fmt: skip


def _event(status: str, reason: str | None = None, aggregate: str = "pay-1") -> PaymentEvent:
    return PaymentEvent(
        event_id=f"cmd-1:{status}", aggregate_id=aggregate, aggregate_type="payment",
        status=status, occurred_at=NOW, source="stripe", reason=reason,
    )  # fmt: skip


def test_a_cancel_that_took_effect_is_left_alone() -> None:
    events = [_event("cancelled")]
    assert not is_refusal(_command(), events)
    assert refused_answer("stripe", _command(), events) == events


def test_other_operations_are_never_refusals() -> None:
    events = [_event("confirmed")]
    assert not is_refusal(_command("create_payment"), events)
    assert refused_answer("stripe", _command("create_payment"), events) == events


def test_a_refused_cancel_keeps_the_actual_status_marked_with_a_reason() -> None:
    """A SEPA debit's answer fills its stages; for a refusal only the status itself is kept
    (the stages behind it, timed now, would be dead-lettered as unreachable)."""
    events = [_event("pending_submission"), _event("submitted"), _event("confirmed")]
    (marked,) = refused_answer("stripe", _command(), events)
    assert (marked.event_id, marked.status) == ("cmd-1:confirmed", "confirmed")
    assert marked.attributes == {REFUSED_ATTRIBUTE: "cancel"}
    assert marked.reason == "stripe refused the cancel: the payment is already confirmed"


def test_a_cancel_the_bus_asked_for_itself_is_not_marked() -> None:
    """An expired page's cancel losing the race to the customer's payment: no one on staff
    asked, so nothing is re-asserted and no failure reason lands on the paid record (the
    answer applies, or is a duplicate, like any PSP report)."""
    expiry = page_expiry.cancel_intent(
        "pay-1", {page_expiry.EXPIRES_KEY: 1_764_936_000, "crm_record_id": None}
    )
    command = _command(reason=expiry.reason).derive(change_id=expiry.change_id)
    events = [_event("confirmed")]
    assert is_refusal(command, events) and refused_answer("stripe", command, events) == events
    staff = _command(reason="customer asked").derive(change_id="chg-staff-1")
    (marked,) = refused_answer("stripe", staff, events)
    assert marked.attributes == {REFUSED_ATTRIBUTE: "cancel"}


def test_the_psps_own_reason_is_kept_and_other_aggregates_pass_through() -> None:
    refund = _event("refunded", aggregate="stripe-re_1")
    events = [refund, _event("pending_customer_approval", reason="stripe refused: Checkout")]
    out = refused_answer("stripe", _command(), events)
    assert out[0] == refund
    assert (out[1].reason, out[1].attributes) == (
        "stripe refused: Checkout",
        {REFUSED_ATTRIBUTE: "cancel"},
    )


def test_the_sequencer_reasserts_the_current_status_once() -> None:
    state, _ = run([ev("e1", "created", 0), ev("e2", "confirmed", 1)])
    answer = ev("cmd-1:confirmed", "confirmed", 5, {REFUSED_ATTRIBUTE: "cancel"})
    result = Sequencer().judge(state, answer)
    assert outcomes(result) == [("cmd-1:confirmed", Outcome.APPLIED)]
    assert result.judgements[0].reason == "re-asserts confirmed: the cancel was refused"
    (update,) = result.updates
    assert (update.from_status, update.to_status, update.seq) == ("confirmed", "confirmed", 3)
    assert update.attributes == {REFUSED_ATTRIBUTE: "cancel"}
    again = Sequencer().judge(result.state, answer)  # the command re-executed after a crash
    assert outcomes(again) == [("cmd-1:confirmed", Outcome.DUPLICATE)] and not again.updates


def test_without_the_mark_or_when_older_nothing_is_written() -> None:
    state, _ = run([ev("e1", "created", 0), ev("e2", "confirmed", 10)])
    plain = Sequencer().judge(state, ev("x", "confirmed", 11))
    assert outcomes(plain) == [("x", Outcome.DUPLICATE)] and not plain.updates
    old = ev("y", "confirmed", 5, {REFUSED_ATTRIBUTE: "cancel"})
    stale = Sequencer().judge(state, old)
    assert outcomes(stale) == [("y", Outcome.STALE)] and not stale.updates


def test_a_refusal_reporting_a_later_status_applies_as_a_move() -> None:
    state, _ = run([ev("e1", "created", 0), ev("e2", "pending_submission", 1)])
    answer = ev("cmd-1:submitted", "submitted", 5, {REFUSED_ATTRIBUTE: "cancel"})
    result = Sequencer().judge(state, answer)
    (update,) = result.updates
    assert (update.from_status, update.to_status) == ("pending_submission", "submitted")


def test_a_refusal_behind_the_bus_re_asserts_the_current_status() -> None:
    """Stripe has no paid_out: a paid-out card payment is 'succeeded' there, so a refused
    cancel answers 'confirmed'. Rejected, it went to the DLQ and the CRM record kept staff's
    'Cancel Requested' for good."""
    state, _ = run([ev("e1", "created", 0), ev("e2", "confirmed", 1), ev("e3", "paid_out", 2)])
    answer = ev("cmd-1:confirmed", "confirmed", 5, {REFUSED_ATTRIBUTE: "cancel"})
    result = Sequencer().judge(state, answer)
    assert outcomes(result) == [("cmd-1:confirmed", Outcome.APPLIED)]
    (update,) = result.updates
    assert (update.from_status, update.to_status, update.seq) == ("paid_out", "paid_out", 4)
    assert result.state.status == "paid_out"


def test_a_refusal_contradicting_the_bus_is_still_rejected() -> None:
    """A payment the bus has cancelled that the PSP says is paid is no lag: the DLQ."""
    state, _ = run([ev("e1", "created", 0), ev("e2", "cancelled", 1)])
    answer = ev("cmd-1:confirmed", "confirmed", 5, {REFUSED_ATTRIBUTE: "cancel"})
    assert outcomes(Sequencer().judge(state, answer)) == [("cmd-1:confirmed", Outcome.REJECTED)]
    plain = ev("x", "confirmed", 5)  # and a PSP event behind the bus, unmarked: as before
    state, _ = run([ev("e1", "created", 0), ev("e2", "confirmed", 1), ev("e3", "paid_out", 2)])
    assert outcomes(Sequencer().judge(state, plain)) == [("x", Outcome.REJECTED)]


def test_the_refusal_reason_is_redacted_before_kafka() -> None:
    """Stripe's message is free text the connector passes on, like a decline's."""
    said = "stripe refused the cancel: card 4242 4242 4242 4242 is on file"
    (marked,) = refused_answer("stripe", _command(), [_event("pending_customer_approval", said)])
    assert marked.reason is not None and "4242 4242 4242 4242" not in marked.reason
    (marked,) = refused_answer("stripe", _command(reason="x" * 2000), [_event("confirmed")])
    assert marked.reason is not None and len(marked.reason) <= 500
