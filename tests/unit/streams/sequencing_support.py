"""What the sequencing unit tests share: events at seconds after T0, and judging a run of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from streams.sequencing import AggregateState, Event, Outcome, Result, Sequencer

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
