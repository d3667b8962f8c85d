"""Legal payment histories for the demo, the benchmarks and the integration tests.

Histories are generated from the lifecycle tables' main lines and a few well-known side paths
(failure and resubmission, partial refunds, suspension), with strictly increasing timestamps,
and can be delivered shuffled and with duplicates, as PSP webhooks arrive in real life.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

#: (aggregate type, method, statuses in order) templates.
TEMPLATES: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
    (
        "payment",
        "direct_debit",
        ("created", "pending_submission", "submitted", "confirmed", "paid_out"),
    ),
    (
        "payment",
        "direct_debit",
        (
            "created",
            "pending_submission",
            "submitted",
            "failed",
            "pending_submission",
            "submitted",
            "confirmed",
        ),
    ),
    ("payment", "direct_debit", ("created", "pending_submission", "cancelled")),
    ("payment", "card", ("created", "confirmed", "paid_out")),
    (
        "payment",
        "card",
        (
            "created",
            "pending_customer_approval",
            "confirmed",
            "partially_refunded",
            "partially_refunded",
            "refunded",
        ),
    ),
    ("payment", "card", ("created", "failed")),
    ("payment", "card", ("created", "confirmed", "charged_back")),
    (
        "mandate",
        None,
        ("created", "pending_submission", "submitted", "active", "suspended", "active"),
    ),
    ("mandate", None, ("created", "pending_submission", "submitted", "failed")),
    ("refund", None, ("created", "pending", "refunded")),
    ("refund", None, ("created", "pending", "refunded", "reversed")),
)


@dataclass(frozen=True)
class HistoryEvent:
    """One canonical event of a generated history."""

    event_id: str
    aggregate_id: str
    aggregate_type: str
    status: str
    occurred_at: datetime
    method: str | None
    source: str

    def as_json(self) -> dict[str, Any]:
        """The ``paybus sequence`` input form."""
        data: dict[str, Any] = {
            "event_id": self.event_id,
            "aggregate_id": self.aggregate_id,
            "aggregate_type": self.aggregate_type,
            "status": self.status,
            "occurred_at": self.occurred_at.isoformat().replace("+00:00", "Z"),
            "source": self.source,
        }
        if self.method is not None:
            data["method"] = self.method
        return data

    def as_record(self) -> dict[str, Any]:
        """The ``PaymentEvent`` record form."""
        return {
            "event_id": self.event_id,
            "aggregate_id": self.aggregate_id,
            "aggregate_type": self.aggregate_type,
            "status": self.status,
            "occurred_at": self.occurred_at,
            "source": self.source,
            "method": self.method,
        }


def histories(
    count: int, *, seed: int = 7, start: datetime | None = None, prefix: str = "agg"
) -> dict[str, list[HistoryEvent]]:
    """``count`` legal histories keyed by aggregate id, in order."""
    rng = random.Random(seed)
    t0 = start or datetime(2026, 11, 1, tzinfo=UTC)
    out: dict[str, list[HistoryEvent]] = {}
    for n in range(count):
        kind, method, statuses = TEMPLATES[rng.randrange(len(TEMPLATES))]
        agg = f"{prefix}-{kind[:3]}-{n:06d}"
        at = t0 + timedelta(seconds=rng.randrange(3600))
        events = []
        for i, status in enumerate(statuses):
            at += timedelta(seconds=rng.randint(1, 600))
            events.append(HistoryEvent(f"{agg}-e{i}", agg, kind, status, at, method, "demo"))
        out[agg] = events
    return out


def delivery(
    hist: dict[str, list[HistoryEvent]], *, seed: int = 11, duplicate_rate: float = 0.2
) -> Iterator[HistoryEvent]:
    """All events of ``hist`` shuffled, a fraction of them delivered twice."""
    rng = random.Random(seed)
    events = [e for evs in hist.values() for e in evs]
    events += [e for e in events if rng.random() < duplicate_rate]
    rng.shuffle(events)
    yield from events


def final_statuses(hist: dict[str, list[HistoryEvent]]) -> dict[str, str]:
    """The in-order final status of every aggregate."""
    return {agg: evs[-1].status for agg, evs in hist.items()}
