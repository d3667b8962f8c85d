"""The sequencer's promise, checked on generated histories (DESIGN.md "Sequencing rules").

A legal history with strictly increasing times, delivered in any order and with duplicates,
ends in the same status as when delivered in order, with nothing left held; no applied event is
older than one applied before it; the published updates form a legal path with growing seq.
Histories are random walks through the lifecycle tables, side moves included (failures,
resubmissions, partial refunds, suspensions), and may start mid-life.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.lifecycles import (
    LIFECYCLES,
    PAYMENT_METHODS,
    gap_path,
    is_legal,
    resolve_method,
    stage_index,
    transitions,
)
from streams.sequencing import (
    AggregateState,
    Event,
    Judgement,
    Outcome,
    Sequencer,
    StatusChange,
)
from streams.sequencing_state import REASON_GIVEN_ATTRIBUTE

T0 = datetime(2026, 3, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=250, deadline=None)


@dataclass(frozen=True)
class History:
    aggregate_id: str
    aggregate_type: str
    method: str | None
    events: list[Event]


@st.composite
def histories(draw: st.DrawFn, aggregate_id: str) -> History:
    """A legal walk with strictly increasing times; may start at any status (mid-life)."""
    kind = draw(st.sampled_from(["payment", "payment", "mandate", "refund"]))
    method = draw(st.sampled_from(PAYMENT_METHODS)) if kind == "payment" else None
    table = transitions(kind, resolve_method(kind, method))
    start = draw(st.one_of(st.just("created"), st.sampled_from(sorted(table))))
    statuses = [start]
    for _ in range(draw(st.integers(0, 15) | st.integers(4, 15))):
        options = sorted(table[statuses[-1]])
        if not options:
            break
        # Mostly the next main-line stage, often another move that keeps the walk alive (a
        # terminal status ends it), sometimes anything: long histories with side moves.
        alive = [status for status in options if table[status]]
        ahead = [status for status in options if stage_index(kind, status) is not None]
        choice = draw(st.integers(0, 9))
        if ahead and choice >= 5:
            options = [min(ahead, key=lambda status: stage_index(kind, status) or 0)]
        elif alive and choice >= 1:
            options = alive
        statuses.append(draw(st.sampled_from(options)))
    gaps = draw(st.lists(st.integers(1, 90), min_size=len(statuses), max_size=len(statuses)))
    times = [T0 + timedelta(seconds=s) for s in itertools.accumulate(gaps)]
    events = [
        Event(f"{aggregate_id}-{i}", aggregate_id, kind, status, at, "gen", method)
        for i, (status, at) in enumerate(zip(statuses, times, strict=True))
    ]
    return History(aggregate_id, kind, method, events)


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[History], list[Event]]:
    """One to three interleaved histories, shuffled, some events delivered more than once."""
    count = draw(st.integers(1, 3))
    found = [draw(histories(f"a{i}")) for i in range(count)]
    events = [e for h in found for e in h.events]
    repeats = draw(st.lists(st.sampled_from(events), max_size=len(events)))
    if draw(st.booleans()):
        return found, draw(st.permutations(events + repeats))
    # Each history's first event first, the rest shuffled: an early status with later ones
    # arriving out of order is what makes events wait (a uniform shuffle mostly makes them
    # stale, because a late event tends to arrive early and overtake the rest).
    firsts = [h.events[0] for h in found]
    rest = [e for e in events if e not in firsts] + repeats
    return found, firsts + draw(st.permutations(rest))


def deliver(
    sequencer: Sequencer, events: list[Event]
) -> tuple[dict[str, AggregateState], list[Judgement], dict[str, list[StatusChange]]]:
    """Judge ``events`` in order, passing each state through its JSON form as a table would."""
    states: dict[str, AggregateState] = {}
    judgements: list[Judgement] = []
    updates: dict[str, list[StatusChange]] = {}
    for event in events:
        stored = states.get(event.aggregate_id)
        if stored is not None:
            stored = AggregateState.from_dict(json.loads(json.dumps(stored.to_dict())))
        result = sequencer.judge(stored, event)
        states[event.aggregate_id] = result.state
        judgements.extend(result.judgements)
        updates.setdefault(event.aggregate_id, []).extend(result.updates)
        assert result.evicted_held == 0
    return states, judgements, updates


def assert_legal_path(kind: str, method: str | None, changes: list[StatusChange]) -> None:
    """Updates chain from one another, each step legal, seq counting 1, 2, 3 ..."""
    previous: str | None = None
    for seq, change in enumerate(changes, start=1):
        assert change.seq == seq
        assert change.from_status == previous
        assert is_legal(kind, method, change.from_status, change.to_status), change
        previous = change.to_status


@PROPERTY
@given(deliveries())
def test_any_order_with_duplicates_ends_as_in_order(
    case: tuple[list[History], list[Event]],
) -> None:
    found, delivered = case
    sequencer = Sequencer()
    states, judgements, updates = deliver(sequencer, delivered)
    in_order, _, _ = deliver(sequencer, [e for h in found for e in h.events])
    for history in found:
        last = history.events[-1]
        state, reference = states[history.aggregate_id], in_order[history.aggregate_id]
        # (b) the same final status as in order, with nothing left held
        assert reference.status == last.status
        assert state.status == last.status
        assert state.held == [] and state.latest_at == last.occurred_at
        # (a) applied events never go back in time
        changes = updates[history.aggregate_id]
        times = [c.occurred_at for c in changes]
        assert times == sorted(times) and len(set(times)) == len(times)
        # (c) the published updates are a legal path
        assert_legal_path(history.aggregate_type, history.method, changes)
    # nothing is left waiting: each event's last word is not "held"
    last_word = {j.event.event_id: j.outcome for j in judgements}
    assert set(last_word) == {e.event_id for h in found for e in h.events}
    assert Outcome.HELD not in last_word.values()
    assert Outcome.REJECTED not in last_word.values()


@PROPERTY
@given(deliveries(), st.data())
def test_a_cancels_answer_with_its_reason_re_asserts_at_most_once_and_never_back(
    case: tuple[list[History], list[Event]], data: st.DataObject
) -> None:
    """The answer to the bus's own cancel, marked as carrying its reason (rule 1), delivered
    anywhere among a history that ends cancelled, up to a second older than the PSP's report
    of the cancellation (PSPs stamp whole seconds) and maybe twice: the same final status;
    the updates a legal path but for at most one re-assertion ``cancelled -> cancelled``,
    which carries the reason; times never go back."""
    found, delivered = case
    answers = []
    for history in found:
        last = history.events[-1]
        if last.status != "cancelled":
            continue
        older = timedelta(seconds=data.draw(st.sampled_from([0.0, 0.5, 1.0])))
        answers.append(Event(
            f"{history.aggregate_id}-answer", history.aggregate_id, history.aggregate_type,
            "cancelled", last.occurred_at - older, "psp", history.method,
            {REASON_GIVEN_ATTRIBUTE: "cancel", "reason": "customer asked"},
        ))  # fmt: skip
    twice = answers + data.draw(st.lists(st.sampled_from(answers), max_size=1)) if answers else []
    with_answers = list(delivered)
    for answer in twice:
        with_answers.insert(data.draw(st.integers(0, len(with_answers))), answer)
    states, _, updates = deliver(Sequencer(), with_answers)
    for history in found:
        assert states[history.aggregate_id].status == history.events[-1].status
        changes = updates[history.aggregate_id]
        times = [c.occurred_at for c in changes]
        assert times == sorted(times)
        again = [c for c in changes if c.from_status == c.to_status == "cancelled"]
        assert len(again) <= 1
        assert all(c.attributes.get("reason") == "customer asked" for c in again)
        moves = [c for c in changes if c not in again]
        assert [c.seq for c in changes] == list(range(1, len(changes) + 1))
        assert_legal_path(
            history.aggregate_type, history.method,
            [replace(c, seq=n) for n, c in enumerate(moves, start=1)],
        )  # fmt: skip


@PROPERTY
@given(deliveries(), st.integers(1, 3))
def test_nothing_is_lost_silently_with_a_small_held_list(
    case: tuple[list[History], list[Event]], max_held: int
) -> None:
    """Evicted held events are reported REJECTED; every other event is judged or still held."""
    _, delivered = case
    sequencer = Sequencer(max_held=max_held)
    states: dict[str, AggregateState] = {}
    last_word: dict[str, Judgement] = {}
    for event in delivered:
        result = sequencer.judge(states.get(event.aggregate_id), event)
        states[event.aggregate_id] = result.state
        evicted = [j for j in result.judgements if j.reason.startswith("evicted:")]
        assert result.evicted_held == len(evicted)
        assert all(j.outcome is Outcome.REJECTED for j in evicted)
        assert len(result.state.held) <= max_held
        first, *rejudged = result.judgements
        # a redelivery judged duplicate does not change the fate of the event it repeats
        if not (first.outcome is Outcome.DUPLICATE and event.event_id in last_word):
            last_word[event.event_id] = first
        last_word.update((j.event.event_id, j) for j in rejudged)
    still_held = {e.event_id for s in states.values() for e in s.held}
    for event_id, judgement in last_word.items():
        assert (judgement.outcome is Outcome.HELD) == (event_id in still_held)


@st.composite
def reconcile_cases(draw: st.DrawFn) -> tuple[History, str]:
    history = draw(histories("r0"))
    target = draw(st.sampled_from(sorted(LIFECYCLES[history.aggregate_type].statuses)))
    return history, target


@PROPERTY
@given(reconcile_cases())
def test_reconcile_applies_a_legal_inferred_path(case: tuple[History, str]) -> None:
    history, target = case
    sequencer = Sequencer()
    states, _, updates = deliver(sequencer, history.events)
    state = states[history.aggregate_id]
    now = history.events[-1].occurred_at + timedelta(hours=1)
    result = sequencer.reconcile(state, target, now=now)
    path = gap_path(history.aggregate_type, history.method, state.status, target)
    if target == state.status:
        assert result.updates == [] and result.judgements[0].outcome is Outcome.DUPLICATE
    elif path is None:
        assert result.updates == [] and result.judgements[0].outcome is Outcome.REJECTED
        assert result.state == state
    else:
        assert [c.to_status for c in result.updates] == [*path, target]
        assert all(c.inferred and c.occurred_at == now for c in result.updates)
        assert_legal_path(
            history.aggregate_type,
            history.method,
            updates[history.aggregate_id] + result.updates,
        )
        assert result.state.status == target and result.state.seq == state.seq + len(path) + 1
