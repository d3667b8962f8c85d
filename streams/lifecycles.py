"""The canonical lifecycles of payments, mandates and refunds, kept as data.

DESIGN.md ("Canonical lifecycles") states each lifecycle as a main line in stage order, the
mandatory stages a forward move may not skip (per payment method), side moves and terminal
statuses. This module holds exactly that as frozen data and derives the transition table from it
once, at import, so the sequencer never branches on status names: legality is a set lookup and
reachability ("held" vs "rejected", reconcile's inferred stages) a breadth-first search over the
same table. Connectors map their PSP's vocabulary onto these names; nothing here does I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType

__all__ = [
    "LIFECYCLES",
    "MANDATE",
    "PAYMENT",
    "PAYMENT_METHODS",
    "REFUND",
    "Lifecycle",
    "gap_path",
    "is_legal",
    "is_terminal",
    "lifecycle_for",
    "resolve_method",
    "stage_index",
    "transitions",
]

PAYMENT_METHODS = ("direct_debit", "card")
"""Payment methods with their own mandatory stages; the first one is the default."""


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """One aggregate type's lifecycle, as DESIGN.md states it.

    ``mandatory_by_method`` is empty for aggregate types without methods (mandates, refunds);
    those use ``mandatory`` for every event. Payments key their mandatory stages by method, and
    an unknown/absent method falls back to ``default_method`` (the strictest one, so a payment
    of unknown method is never let through a stage a direct debit would need).
    """

    aggregate_type: str
    main_line: tuple[str, ...]
    side_moves: frozenset[tuple[str, str]]
    terminal: frozenset[str]
    mandatory: frozenset[str] = frozenset()
    mandatory_by_method: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    default_method: str | None = None

    @property
    def statuses(self) -> frozenset[str]:
        """Every status of this lifecycle: the main line plus both ends of every side move."""
        return frozenset(self.main_line) | {s for move in self.side_moves for s in move}

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods with their own mandatory stages (empty when the type has none)."""
        return tuple(self.mandatory_by_method)

    def mandatory_for(self, method: str | None) -> frozenset[str]:
        """The stages a forward move may not skip for ``method`` (resolved to the default)."""
        if not self.mandatory_by_method:
            return self.mandatory
        resolved = method if method in self.mandatory_by_method else self.default_method
        assert resolved is not None  # a lifecycle with methods always names its default
        return self.mandatory_by_method[resolved]


def _from(sources: tuple[str, ...], target: str) -> frozenset[tuple[str, str]]:
    return frozenset((source, target) for source in sources)


_PAY_MAIN = (
    "created",
    "pending_customer_approval",
    "pending_submission",
    "submitted",
    "confirmed",
    "paid_out",
)

PAYMENT = Lifecycle(
    aggregate_type="payment",
    main_line=_PAY_MAIN,
    side_moves=(
        _from(_PAY_MAIN[:5], "failed")
        | _from(_PAY_MAIN[:3], "cancelled")
        | {("failed", "pending_submission")}
        | _from(("confirmed", "paid_out"), "charged_back")
        | _from(("confirmed", "paid_out"), "partially_refunded")
        | _from(("confirmed", "paid_out"), "refunded")
        | _from(("partially_refunded",), "partially_refunded")
        | _from(("partially_refunded",), "refunded")
        | _from(("partially_refunded",), "charged_back")
    ),
    terminal=frozenset({"cancelled", "refunded", "charged_back"}),
    mandatory_by_method=MappingProxyType(
        {
            "direct_debit": frozenset({"pending_submission", "submitted", "confirmed"}),
            "card": frozenset({"confirmed"}),
        }
    ),
    default_method="direct_debit",
)

_MANDATE_MAIN = (
    "created",
    "pending_customer_approval",
    "pending_submission",
    "submitted",
    "active",
)

MANDATE = Lifecycle(
    aggregate_type="mandate",
    main_line=_MANDATE_MAIN,
    side_moves=(
        _from(_MANDATE_MAIN[:4], "failed")
        | {("failed", "pending_submission")}
        | _from((*_MANDATE_MAIN, "failed", "suspended"), "cancelled")
        | {("active", "suspended"), ("suspended", "active"), ("active", "expired")}
    ),
    terminal=frozenset({"cancelled", "expired"}),
    mandatory=frozenset({"submitted"}),
)

REFUND = Lifecycle(
    aggregate_type="refund",
    main_line=("created", "pending", "refunded"),
    side_moves=(
        _from(("created", "pending"), "failed")
        | _from(("created", "pending"), "rejected")
        | {("refunded", "failed"), ("refunded", "reversed")}
    ),
    terminal=frozenset({"failed", "rejected", "reversed"}),
)

LIFECYCLES: Mapping[str, Lifecycle] = MappingProxyType(
    {lc.aggregate_type: lc for lc in (PAYMENT, MANDATE, REFUND)}
)


def lifecycle_for(aggregate_type: str) -> Lifecycle:
    """The lifecycle of ``aggregate_type``; ValueError names the known types otherwise."""
    try:
        return LIFECYCLES[aggregate_type]
    except KeyError:
        known = ", ".join(LIFECYCLES)
        raise ValueError(f"unknown aggregate_type {aggregate_type!r} (known: {known})") from None


def resolve_method(aggregate_type: str, method: str | None) -> str | None:
    """The method whose rules apply: the default for a payment without one, None for others."""
    lc = lifecycle_for(aggregate_type)
    if not lc.mandatory_by_method:
        return None
    return method if method in lc.mandatory_by_method else lc.default_method


@cache
def transitions(aggregate_type: str, method: str | None) -> Mapping[str, frozenset[str]]:
    """status -> legal next statuses, derived once from the lifecycle data.

    A forward main-line move i -> j is legal when none of the stages strictly between them is
    mandatory for the method; side moves are legal as listed; nothing leaves a terminal status.
    """
    lc = lifecycle_for(aggregate_type)
    mandatory = lc.mandatory_for(method)
    table: dict[str, set[str]] = {status: set() for status in lc.statuses}
    main = lc.main_line
    for i, source in enumerate(main):
        for j in range(i + 1, len(main)):
            table[source].add(main[j])
            if main[j] in mandatory:
                break  # every stage further on would skip this mandatory one
    for source, target in lc.side_moves:
        table[source].add(target)
    for status in lc.terminal:
        table[status].clear()
    return MappingProxyType({status: frozenset(nxt) for status, nxt in table.items()})


def is_legal(aggregate_type: str, method: str | None, current: str | None, target: str) -> bool:
    """Whether ``current -> target`` is one legal step (any known status is legal first)."""
    table = transitions(aggregate_type, resolve_method(aggregate_type, method))
    if current is None:
        return target in table
    return target in table.get(current, frozenset())


@cache
def _gap_path_cached(
    aggregate_type: str, method: str | None, current: str, target: str
) -> tuple[str, ...] | None:
    table = transitions(aggregate_type, method)
    if current not in table or target not in table:
        return None
    # Breadth-first from current; the shortest path through statuses the aggregate has not
    # reached yet. Ties between equally short paths resolve in main-line-then-name order so
    # reconcile's inferred stages are deterministic.
    order = _status_order(aggregate_type)
    parent: dict[str, str] = {}
    queue: deque[str] = deque([current])
    visited = {current}
    while queue:
        status = queue.popleft()
        for nxt in sorted(table[status], key=order.__getitem__):
            if nxt == target:
                path: list[str] = []
                step = status
                while step != current:
                    path.append(step)
                    step = parent[step]
                return tuple(reversed(path))
            if nxt not in visited:
                visited.add(nxt)
                parent[nxt] = status
                queue.append(nxt)
    return None


def gap_path(
    aggregate_type: str, method: str | None, current: str | None, target: str
) -> tuple[str, ...] | None:
    """The intermediate statuses of the shortest legal path ``current -> ... -> target``.

    ``()`` means ``target`` is one legal step away (or ``current`` is None: the first event of
    an aggregate is accepted at any status); None means no path exists (reject it). The path
    has at least one step, so ``current == target`` yields a cycle (``("failed",)`` for a
    payment at ``pending_submission``) or ``()`` for a self-loop (``partially_refunded``);
    the sequencer never asks this question, because a repeated status is a duplicate first.
    """
    lc = lifecycle_for(aggregate_type)
    if current is None:
        return () if target in lc.statuses else None
    return _gap_path_cached(aggregate_type, resolve_method(aggregate_type, method), current, target)


@cache
def _status_order(aggregate_type: str) -> Mapping[str, int]:
    lc = lifecycle_for(aggregate_type)
    others = sorted(lc.statuses - set(lc.main_line))
    return MappingProxyType({s: i for i, s in enumerate((*lc.main_line, *others))})


def is_terminal(aggregate_type: str, status: str) -> bool:
    """Whether nothing may follow ``status``."""
    return status in lifecycle_for(aggregate_type).terminal


def stage_index(aggregate_type: str, status: str) -> int | None:
    """The position of ``status`` on the main line; None off the main line (the tie rule)."""
    main = lifecycle_for(aggregate_type).main_line
    return main.index(status) if status in main else None
