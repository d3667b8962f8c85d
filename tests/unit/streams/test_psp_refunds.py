"""Refunds made at the PSP: how their events are named (pure: no broker)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connectors.base import FOREIGN_ATTRIBUTE
from streams import psp_refunds
from streams.backfill import run_backfill
from streams.records import PaymentEvent

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _refund(**kw: Any) -> PaymentEvent:
    fields: dict[str, Any] = {
        "event_id": "EV1",
        "aggregate_id": "",
        "aggregate_type": "refund",
        "status": "refunded",
        "occurred_at": NOW,
        "source": "gocardless",
        "psp": "gocardless",
        "psp_object_id": "RF1",
        "payment_id": "pay-1",
        "attributes": {"gocardless_event": "refunds.paid", "crm_record_id": "a01x"},
    }
    return PaymentEvent(**{**fields, **kw})


def test_a_psp_refund_on_a_known_payment_gets_its_own_stable_aggregate() -> None:
    named = psp_refunds.resolve(_refund())
    assert named is not None
    assert named.aggregate_id == "gocardless-RF1" == psp_refunds.aggregate_id("gocardless", "RF1")
    assert named.payment_id == "pay-1" and named.event_id == "EV1"
    assert named.attributes == {"gocardless_event": "refunds.paid", "refund_origin": "psp"}
    again = psp_refunds.resolve(_refund(event_id="EV2", status="created"))
    assert again is not None and again.aggregate_id == named.aggregate_id


def test_events_that_cannot_or_need_not_be_named() -> None:
    ours = _refund(aggregate_id="ref-9")
    assert psp_refunds.resolve(ours) is ours, "a refund the bus made keeps its aggregate"
    assert psp_refunds.resolve(_refund(payment_id=None)) is None
    assert psp_refunds.resolve(_refund(psp_object_id=None)) is None
    assert psp_refunds.resolve(_refund(aggregate_type="payment")) is None


def test_backfill_publishes_a_psp_refund_under_its_payment_and_counts_the_rest() -> None:
    sent: list[tuple[str, PaymentEvent]] = []
    foreign = {FOREIGN_ATTRIBUTE: "true"}
    events = [
        _refund(attributes=foreign),  # its payment is the bus's: no longer foreign
        _refund(event_id="EV2", payment_id=None, psp_object_id="RF2"),
        _refund(event_id="EV3", payment_id=None, psp_object_id="RF3", attributes=foreign),
    ]
    report = run_backfill("gocardless", NOW, events, lambda k, e: sent.append((k, e)))
    assert [(key, e.aggregate_id) for key, e in sent] == [("pay-1", "gocardless-RF1")]
    assert sent[0][1].attributes == {"refund_origin": "psp"}
    assert [e.psp_object_id for e in report.unresolved] == ["RF2"]
    assert report.foreign == 1 and report.read_total == 3
