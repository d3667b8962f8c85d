"""A cancel's reason reaches the CRM whichever comes first: the PSP's answer or its webhook.

The command stage puts the cancel's reason on the answer's ``cancelled`` event (the PSP's
answer and its webhook say only that the payment is cancelled). When the webhook was
sequenced first, the answer repeated the current status and was dropped as a duplicate, so
the CRM record showed ``cancelled`` with no reason, though the README promises it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from streams.agents.commands import Shared
from streams.records import PaymentEvent
from streams.sequencing import Outcome, Sequencer
from streams.sequencing_state import REASON_GIVEN_ATTRIBUTE, Event
from tests.unit.streams.sequencing_support import ev as _ev
from tests.unit.streams.sequencing_support import outcomes, run

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
GIVEN = {REASON_GIVEN_ATTRIBUTE: "cancel", "reason": "customer asked"}


def ev(
    event_id: str, status: str, second: float, attributes: dict[str, str] | None = None
) -> Event:
    """A card payment's event (no mandatory stages between created and cancelled)."""
    return _ev(event_id, status, second, method="card", attributes=attributes)


def _event(status: str, reason: str | None = None) -> PaymentEvent:
    return PaymentEvent(
        event_id=f"cmd-1:{status}", aggregate_id="pay-1", aggregate_type="payment",
        status=status, occurred_at=NOW, source="stripe", reason=reason,
        attributes={"paybus_page_url": "https://pay.example/p/1"},
    )  # fmt: skip


def test_the_answer_to_a_cancel_carries_its_reason_marked_under_an_id_of_its_own() -> None:
    """Its own id: GoCardless answers with its webhook's very event (see below)."""
    cancelled, other, own = Shared._with_reason(
        "customer asked", [_event("cancelled"), _event("confirmed"), _event("cancelled", "psp")]
    )
    assert (cancelled.event_id, cancelled.reason) == ("cmd-1:cancelled:reason", "customer asked")
    assert cancelled.attributes == {
        "paybus_page_url": "https://pay.example/p/1",
        REASON_GIVEN_ATTRIBUTE: "cancel",
    }
    assert (other.event_id, other.reason, other.attributes) == (
        "cmd-1:confirmed",
        None,
        {"paybus_page_url": "https://pay.example/p/1"},
    )
    # cancelled before, for a reason the PSP gives: that one stands
    assert (own.event_id, own.reason, REASON_GIVEN_ATTRIBUTE in (own.attributes or {})) == (
        "cmd-1:cancelled",
        "psp",
        False,
    )


def test_after_the_webhook_the_answer_re_asserts_cancelled_with_the_reason() -> None:
    """Stripe's ``canceled_at`` can be a second before its webhook event's ``created``."""
    state, _ = run([ev("e1", "created", 0), ev("wh-1", "cancelled", 10)])
    answer = ev("cmd-1:cancelled", "cancelled", 9, GIVEN)
    result = Sequencer().judge(state, answer)
    assert outcomes(result) == [("cmd-1:cancelled", Outcome.APPLIED)]
    assert result.judgements[0].reason == "re-asserts cancelled with the cancel's reason"
    (update,) = result.updates
    assert (update.from_status, update.to_status, update.seq) == ("cancelled", "cancelled", 3)
    assert update.attributes["reason"] == "customer asked"
    assert result.state.latest_at == state.latest_at  # an older answer moves no time back
    again = Sequencer().judge(result.state, answer)  # the command re-executed after a crash
    assert outcomes(again) == [("cmd-1:cancelled", Outcome.DUPLICATE)] and not again.updates


def test_before_the_webhook_the_answer_applies_and_the_webhook_is_a_duplicate() -> None:
    state, _ = run([ev("e1", "created", 0)])
    first = Sequencer().judge(state, ev("cmd-1:cancelled", "cancelled", 9, GIVEN))
    assert [u.to_status for u in first.updates] == ["cancelled"]
    webhook = Sequencer().judge(first.state, ev("wh-1", "cancelled", 10))
    assert outcomes(webhook) == [("wh-1", Outcome.DUPLICATE)] and not webhook.updates


def test_only_a_marked_answer_with_a_reason_and_not_much_older_re_asserts() -> None:
    state, _ = run([ev("e1", "created", 0), ev("wh-1", "cancelled", 10)])
    cases = {
        "unmarked": ev("a", "cancelled", 11, {"reason": "the PSP's own"}),
        "no reason": ev("b", "cancelled", 11, {REASON_GIVEN_ATTRIBUTE: "cancel"}),
        "older": ev("c", "cancelled", 8.9, GIVEN),
    }
    got = {name: outcomes(Sequencer().judge(state, e))[0][1] for name, e in cases.items()}
    assert got == {
        "unmarked": Outcome.DUPLICATE,
        "no reason": Outcome.DUPLICATE,
        "older": Outcome.STALE,
    }


def test_a_gocardless_cancels_reason_reaches_the_status_whichever_came_first() -> None:
    """GoCardless's answer to a cancel is its own ``payments.cancelled`` event: the webhook's
    id, and GoCardless's cause code as its reason. So the answer was never marked (it has a
    reason) nor re-asserted (its id was seen when the webhook came first): the intent's reason
    never reached the CRM record, against the README's promise for "any cancel intent"."""
    from connectors.gocardless import transformers as gc
    from streams.agents.sequencer_records import to_engine_event

    gc_event = {
        "id": "EV0001", "created_at": "2026-12-05T12:00:10.000Z", "resource_type": "payments",
        "action": "cancelled", "links": {"payment": "PM0001"},
        "details": {"origin": "api", "cause": "payment_cancelled",
                    "description": "The payment was cancelled."},
        "resource_metadata": {"paybus_aggregate_id": "pay-1"},
    }  # fmt: skip
    (webhook,) = gc.events_from_event(gc_event)
    # The connector's answer: GoCardless's event, without the cause of a cancel paybus made
    # (connectors/gocardless/connector.py _caused_by; tests/integration/connectors/gocardless).
    mine = [e.derive(reason=None) for e in gc.events_from_event(gc_event, aggregate_id="pay-1")]
    answer = Shared._with_reason("customer asked", mine)
    created = _ev("e1", "created", -3600, aggregate_id="pay-1")
    for order in ([webhook, *answer], [*answer, webhook]):
        _, results = run([created, *(to_engine_event(pe) for pe in order)])
        reasons = [u.attributes.get("reason") for r in results for u in r.updates]
        assert "customer asked" in reasons, (order[0].event_id, reasons)


def test_a_re_assertion_published_after_the_webhook_does_not_go_back_in_time() -> None:
    """The sequencer's promise (tests/unit/streams/test_sequencing_properties.py, (a)): no
    applied event is older than one applied before it. The answer, up to a second older than
    the webhook it follows, is applied: its update is stamped at the latest time, not its own."""
    _, results = run(
        [
            ev("e1", "created", 0),
            ev("wh-1", "cancelled", 10),
            ev("cmd-1:cancelled", "cancelled", 9, GIVEN),
        ]
    )
    times = [u.occurred_at for r in results for u in r.updates]
    assert len(times) == 3 and times == sorted(times)
