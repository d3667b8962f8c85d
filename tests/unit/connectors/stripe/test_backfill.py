"""Stripe's backfill naming refunds made at Stripe (pure: a stand-in API, no broker)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.stripe.connector import StripeConnector
from streams.backfill import run_backfill
from streams.records import PaymentEvent
from streams.settings import Settings
from tests.support import stripe_events as se

SINCE = datetime(2026, 12, 1, tzinfo=UTC)


class _Api:
    """Stripe's event log: two events of a refund staff made in the dashboard on the bus's
    payment, one of a refund of a web shop's payment; PaymentIntents by id."""

    def __init__(self) -> None:
        ours = se.refund("re_ours", payment_intent="pi_ours", charge_id="ch_1", amount=500)
        shop = se.refund("re_shop", payment_intent="pi_shop", charge_id="ch_2", amount=700)
        self.events = [
            se.event("refund.created", ours, event_id="evt_1", created=1),
            se.event("refund.updated", ours, event_id="evt_2", created=2),
            se.event("refund.created", shop, event_id="evt_3", created=3),
        ]
        self.intents = {
            "pi_ours": {"id": "pi_ours", "metadata": {"paybus_aggregate_id": "pay-1"}},
            "pi_shop": {"id": "pi_shop", "metadata": {"order": "shop-9"}},
        }
        self.lookups: list[str] = []

    def events_since(self, created_gt: int) -> list[dict[str, Any]]:
        return self.events

    def retrieve_payment_intent(self, pi_id: str) -> dict[str, Any]:
        self.lookups.append(pi_id)
        return self.intents[pi_id]


def test_a_dashboard_refund_of_the_buss_payment_is_backfilled_not_counted_foreign(
    clean_env: Path,
) -> None:
    api = _Api()
    connector = StripeConnector(Settings(), api=api)  # type: ignore[arg-type]
    sent: list[tuple[str, PaymentEvent]] = []
    report = run_backfill(
        "stripe", SINCE, connector.backfill(SINCE), lambda k, e: sent.append((k, e))
    )
    # named as the webhook path names it (the normaliser, through its link of pi_ours)
    assert [(key, e.aggregate_id, e.event_id) for key, e in sent] == [
        ("pay-1", "stripe-re_ours", "evt_1"),
        ("pay-1", "stripe-re_ours", "evt_2"),
    ]
    assert report.foreign == 1 and not report.unresolved, "only the shop's refund is foreign"
    assert api.lookups == ["pi_ours", "pi_shop"], "one look-up per PaymentIntent"
