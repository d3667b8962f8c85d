"""The sequencing engine: judge each event against its aggregate's state (DESIGN.md rules 1-5).

Pure: a state and an event in; a new state, the judgements and the status changes out. The
Faust agent and ``paybus sequence`` wrap it with I/O; keeping it free of any lets the heart of
the bus be tested exhaustively (see the hypothesis properties in tests/unit/streams).

Rules, in priority order, for an event against the current status and latest time:

1. duplicate: its id was seen (recently, or it is held); or it repeats the current status
   (other than a self-loop such as a further ``partially_refunded``) and is not older: no
   transition, but a newer one moves the latest time forward, so anything older is now stale.
   Except the answer to a refused command (``REFUSED_ATTRIBUTE``): repeating the current
   status and not older, it is applied as a re-assertion (an update from the status to
   itself, with the refusal's reason), because the CRM record shows the request staff made
   ("Cancel Requested") until the bus writes the status back. So is one reporting a status
   the aggregate has passed (rule 5 would reject it): the PSP's view can lag the bus's
   (Stripe has no ``paid_out``), and the current status is re-asserted. Likewise the answer
   to a command that gave a reason (``REASON_GIVEN_ATTRIBUTE``: a cancel's reason, which the
   PSP's own report lacks) when that report came first: the status is re-asserted with the
   reason, even if the answer is up to a second older (PSPs stamp whole seconds, and Stripe's
   ``canceled_at`` can precede its webhook event's ``created``), stamped at the latest time;
2. stale: older than the latest time, or at the same time with both statuses on the main line
   and the event's stage not after the current one (second-resolution PSP timestamps tie);
3. applied: a legal transition (or the first event of an aggregate, at any status);
4. held: not legal, but the target is reachable through statuses not reached yet (a gap);
5. rejected: unreachable.

After any change of status or latest time, held events are judged again, oldest first, until
none changes. Choices the design leaves open, made here:

- Ids of rejected events (and of held events evicted from a full held list) are not kept as
  seen: they go to the DLQ, and an operator's replay from there must be judged again, not
  dropped as a duplicate. Everything else judged (applied, held, stale, duplicate) is seen.
- A full held list evicts its oldest event by ``occurred_at`` (possibly the incoming one),
  reported as REJECTED with a reason starting ``evicted:`` so it reaches the DLQ.
- A payment's method is fixed by the first event that names one; until then the strictest
  rules (direct debit) apply.
- Reconcile is judged like an event from the PSP at ``now``: a status equal to the current one
  is a duplicate that moves the latest time to ``now``; otherwise the gap path and the status
  are applied as inferred changes at ``max(now, latest time)``. Either way held events older
  than that become stale: the PSP's current view supersedes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from streams.lifecycles import gap_path, is_legal, lifecycle_for, stage_index
from streams.sequencing_state import (
    REFUSED_ATTRIBUTE,
    WHOLE_SECOND,
    AggregateState,
    Event,
    InvalidEvent,
    format_time,
    gives_reason,
    passed,
)

__all__ = [
    "AggregateState",
    "Event",
    "InvalidEvent",
    "Judgement",
    "Outcome",
    "Result",
    "Sequencer",
    "StatusChange",
    "classify",
]


class Outcome(StrEnum):
    """What became of one event; also the ``outcome`` label of the events metric."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    STALE = "stale"
    HELD = "held"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class StatusChange:
    """An accepted transition, which the agent publishes as a ``StatusUpdate``.

    ``seq`` numbers the aggregate's changes from 1 and only grows, so a subscriber (the CRM
    writer's version guard) can order and deduplicate them without comparing timestamps.
    ``inferred`` marks stages reconcile filled in without having seen their events.
    """

    event_id: str
    aggregate_id: str
    aggregate_type: str
    from_status: str | None
    to_status: str
    occurred_at: datetime
    seq: int
    inferred: bool
    source: str
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Judgement:
    """The outcome of judging one event, with a short reason for logs and the DLQ."""

    event: Event
    outcome: Outcome
    reason: str


@dataclass(frozen=True, slots=True)
class Result:
    """Everything one call changed: the new state, judgements (the incoming event's first, then
    re-judged held events in order), the updates in the order applied, and evictions.

    Every held event evicted from a full held list also appears in ``judgements`` as REJECTED
    with a reason starting ``evicted:``, so the agent can DLQ it: nothing is lost silently.
    """

    state: AggregateState
    judgements: list[Judgement]
    updates: list[StatusChange]
    evicted_seen: int = 0
    evicted_held: int = 0


class _Call:
    """The mutable working set of one judge/reconcile call (a private helper of Sequencer)."""

    __slots__ = (
        "held_evicted", "judgements", "max_held", "max_seen", "seen_evicted", "state", "updates",
    )  # fmt: skip

    def __init__(self, state: AggregateState, max_seen: int, max_held: int) -> None:
        self.state = state
        self.max_seen = max_seen
        self.max_held = max_held
        self.judgements: list[Judgement] = []
        self.updates: list[StatusChange] = []
        self.seen_evicted = 0
        self.held_evicted = 0  # counted as they go: a scan of the judgements cost 2.5 % CPU

    def result(self) -> Result:
        return Result(
            self.state, self.judgements, self.updates, self.seen_evicted, self.held_evicted
        )

    def see(self, event_id: str) -> None:
        seen = self.state.seen
        if event_id in seen:
            return
        seen[event_id] = None
        while len(seen) > self.max_seen:
            del seen[next(iter(seen))]
            self.seen_evicted += 1

    def unsee(self, event_id: str) -> None:
        self.state.seen.pop(event_id, None)

    def apply(self, event: Event, *, inferred: bool = False) -> None:
        st = self.state
        st.seq += 1
        self.updates.append(
            StatusChange(
                event_id=event.event_id,
                aggregate_id=st.aggregate_id,
                aggregate_type=st.aggregate_type,
                from_status=st.status,
                to_status=event.status,
                occurred_at=event.occurred_at,
                seq=st.seq,
                inferred=inferred,
                source=event.source,
                attributes=event.attributes,
            )
        )
        st.status = event.status
        st.last_event_id = event.event_id
        if st.latest_at is None or event.occurred_at > st.latest_at:
            st.latest_at = event.occurred_at

    def hold(self, event: Event) -> None:
        """Insert by occurred_at (ties keep arrival order); evict the oldest when over the bound."""
        held = self.state.held
        index = len(held)
        while index > 0 and held[index - 1].occurred_at > event.occurred_at:
            index -= 1
        held.insert(index, event)
        while len(held) > self.max_held:
            evicted = held.pop(0)
            self.unsee(evicted.event_id)
            reason = f"evicted: held list full ({self.max_held}), oldest held event dropped"
            self.held_evicted += 1
            if evicted is event:
                self.judgements[-1] = Judgement(event, Outcome.REJECTED, reason)
            else:
                self.judgements.append(Judgement(evicted, Outcome.REJECTED, reason))


def classify(state: AggregateState, event: Event) -> tuple[Outcome, str]:
    """Rules 1-5 for ``event`` against ``state``, without the seen-id check or any change.

    Exposed for tests and tooling that want to ask "what would happen" without a Sequencer.
    """
    current, latest = state.status, state.latest_at
    if current is None or latest is None:
        return Outcome.APPLIED, "first event of the aggregate"
    kind, method, target = state.aggregate_type, state.method, event.status
    at = event.occurred_at
    repeats = target == current and not is_legal(kind, method, current, target)
    if repeats and (given := gives_reason(event)) and at >= latest - WHOLE_SECOND:
        return Outcome.APPLIED, f"re-asserts {current} with the {given}'s reason"
    if repeats and at >= latest:
        if refused := event.attributes.get(REFUSED_ATTRIBUTE):
            return Outcome.APPLIED, f"re-asserts {current}: the {refused} was refused"
        return Outcome.DUPLICATE, f"repeats current status {current}"
    if at < latest:
        return Outcome.STALE, f"older than latest {format_time(latest)}"
    if at == latest:
        cur_stage, new_stage = stage_index(kind, current), stage_index(kind, target)
        if cur_stage is not None and new_stage is not None and new_stage <= cur_stage:
            return Outcome.STALE, f"same time as latest, stage not after {current}"
    if is_legal(kind, method, current, target):
        return Outcome.APPLIED, f"{current} -> {target}"
    path = gap_path(kind, method, current, target)
    if path is not None:
        return Outcome.HELD, f"waiting for {' -> '.join((current, *path))} -> {target}"
    if (refused := event.attributes.get(REFUSED_ATTRIBUTE)) and passed(state, target):
        # The PSP's view is behind the bus's (Stripe knows no paid_out: a paid-out card
        # payment is "succeeded" there): the refusal stands for the current status.
        return Outcome.APPLIED, f"re-asserts {current}: the {refused} was refused ({target})"
    return Outcome.REJECTED, f"illegal transition {current} -> {target}: unreachable"


class Sequencer:
    """Judges events against aggregate states with the bounds given (per aggregate).

    ``max_seen`` bounds the recent event ids kept for duplicate detection; ``max_held`` the
    events kept waiting for a gap. Both bound the table's per-key size: at ~131 bytes per id the
    defaults keep one aggregate's state in a few kilobytes.
    """

    def __init__(self, *, max_seen: int = 64, max_held: int = 32) -> None:
        if max_seen < 1 or max_held < 1:
            raise ValueError("max_seen and max_held must be at least 1")
        self.max_seen = max_seen
        self.max_held = max_held

    def judge(self, state: AggregateState | None, event: Event) -> Result:
        """Judge ``event``; ``state`` is None for an aggregate never seen (it is not mutated)."""
        if state is None:
            state = AggregateState(event.aggregate_id, event.aggregate_type)
        call = _Call(state.copy(), self.max_seen, self.max_held)
        st = call.state
        if (st.aggregate_id, st.aggregate_type) != (event.aggregate_id, event.aggregate_type):
            reason = f"event for {event.aggregate_type} {event.aggregate_id} judged against "
            reason += f"{st.aggregate_type} {st.aggregate_id}"
            call.judgements.append(Judgement(event, Outcome.REJECTED, reason))
            return call.result()
        if event.event_id in st.seen or any(h.event_id == event.event_id for h in st.held):
            call.judgements.append(Judgement(event, Outcome.DUPLICATE, "already seen event id"))
            return call.result()
        before = (st.status, st.latest_at, st.method)
        if (
            st.method is None
            and event.method is not None
            and lifecycle_for(st.aggregate_type).methods
        ):
            st.method = event.method
        outcome, reason = classify(st, event)
        call.judgements.append(Judgement(event, outcome, reason))
        self._enact(call, event, outcome)
        if (st.status, st.latest_at, st.method) != before:
            self._rejudge(call)
        return call.result()

    def reconcile(
        self,
        state: AggregateState,
        psp_status: str,
        *,
        now: datetime,
        source: str = "reconcile",
        event_id_prefix: str = "reconcile",
    ) -> Result:
        """Bring ``state`` to ``psp_status``, the PSP's current view, inferring the gap.

        Each inferred change has the deterministic id ``{prefix}:{aggregate}:{status}:{seq}``,
        so a reconcile retried after a crash produces the same updates. The judgement reported
        first is for a synthetic event standing for the PSP's answer.
        """
        call = _Call(state.copy(), self.max_seen, self.max_held)
        st = call.state
        at = now if st.latest_at is None else max(now, st.latest_at)

        def synthetic(status: str, seq: int) -> Event:
            return Event(
                event_id=f"{event_id_prefix}:{st.aggregate_id}:{status}:{seq}",
                aggregate_id=st.aggregate_id,
                aggregate_type=st.aggregate_type,
                status=status,
                occurred_at=at,
                source=source,
                method=st.method,
            )

        if psp_status not in lifecycle_for(st.aggregate_type).statuses:
            # Not an Event (it would not validate): report against the current status instead.
            probe = synthetic(st.status or "created", st.seq)
            reason = f"unknown status {psp_status!r} for {st.aggregate_type}"
            call.judgements.append(Judgement(probe, Outcome.REJECTED, reason))
            return call.result()
        if st.status == psp_status:
            probe = synthetic(psp_status, st.seq)
            call.judgements.append(
                Judgement(probe, Outcome.DUPLICATE, f"psp confirms current status {psp_status}")
            )
            if st.latest_at is None or at > st.latest_at:
                st.latest_at = at
                self._rejudge(call)
            return call.result()
        path = gap_path(st.aggregate_type, st.method, st.status, psp_status)
        if path is None:
            probe = synthetic(psp_status, st.seq + 1)
            reason = f"illegal transition {st.status} -> {psp_status}: unreachable, not reconciled"
            call.judgements.append(Judgement(probe, Outcome.REJECTED, reason))
            return call.result()
        steps = (*path, psp_status)
        for status in steps:
            call.apply(synthetic(status, st.seq + 1), inferred=True)
        reason = f"reconciled: inferred {' -> '.join(steps)}"
        call.judgements.append(Judgement(synthetic(psp_status, st.seq), Outcome.APPLIED, reason))
        self._rejudge(call)
        return call.result()

    @staticmethod
    def overdue_held(state: AggregateState, *, now: datetime, timeout: timedelta) -> list[Event]:
        """Held events whose ``occurred_at`` is more than ``timeout`` before ``now``.

        The state does not record when an event was held (that would cost bytes per held event
        in every changelog write); an event's own time is a lower bound of it, so this errs on
        the side of reconciling early, never late.
        """
        return [event for event in state.held if now - event.occurred_at > timeout]

    def _enact(self, call: _Call, event: Event, outcome: Outcome) -> None:
        """Carry out ``outcome`` for a newly judged event (bookkeeping, no re-judging)."""
        st = call.state
        if outcome is Outcome.REJECTED:
            return
        call.see(event.event_id)
        if outcome is Outcome.APPLIED:
            current = st.status
            if (
                current is not None
                and event.attributes.get(REFUSED_ATTRIBUTE)
                and not is_legal(st.aggregate_type, st.method, current, event.status)
            ):  # classify applied a refusal it cannot move to: the current status, re-asserted
                event = replace(event, status=current)
            if st.latest_at is not None and event.occurred_at < st.latest_at:
                # a reason's re-assertion, up to a second older: published at the latest time
                event = replace(event, occurred_at=st.latest_at)
            call.apply(event)
        elif outcome is Outcome.DUPLICATE:
            if st.latest_at is None or event.occurred_at > st.latest_at:
                st.latest_at = event.occurred_at
        elif outcome is Outcome.HELD:
            call.hold(event)

    def _rejudge(self, call: _Call) -> None:
        """Judge held events again, oldest first, restarting after each change until none."""
        st = call.state
        changed = True
        while changed:
            changed = False
            for index, event in enumerate(st.held):
                outcome, reason = classify(st, event)
                if outcome is Outcome.HELD:
                    continue
                del st.held[index]
                call.judgements.append(Judgement(event, outcome, reason))
                if outcome is Outcome.REJECTED:
                    call.unsee(event.event_id)
                else:
                    self._enact(call, event, outcome)
                changed = True
                break
