"""The lifecycle tables against DESIGN.md, spelled out independently of how they are derived."""

from __future__ import annotations

import itertools

import pytest

from streams.lifecycles import (
    LIFECYCLES,
    gap_path,
    is_legal,
    is_terminal,
    lifecycle_for,
    resolve_method,
    stage_index,
    transitions,
)

# DESIGN.md "Canonical lifecycles", written out by hand: status -> legal next statuses.
PAYMENT_DIRECT_DEBIT = {
    "created": {"pending_customer_approval", "pending_submission", "failed", "cancelled"},
    "pending_customer_approval": {"pending_submission", "failed", "cancelled"},
    "pending_submission": {"submitted", "failed", "cancelled"},
    "submitted": {"confirmed", "failed"},
    "confirmed": {"paid_out", "failed", "charged_back", "partially_refunded", "refunded"},
    "paid_out": {"charged_back", "partially_refunded", "refunded"},
    "failed": {"pending_submission"},
    "partially_refunded": {"partially_refunded", "refunded", "charged_back"},
    "cancelled": set(),
    "refunded": set(),
    "charged_back": set(),
}
PAYMENT_CARD = {
    **PAYMENT_DIRECT_DEBIT,
    "created": {
        "pending_customer_approval",
        "pending_submission",
        "submitted",
        "confirmed",
        "failed",
        "cancelled",
    },
    "pending_customer_approval": {
        "pending_submission",
        "submitted",
        "confirmed",
        "failed",
        "cancelled",
    },
    "pending_submission": {"submitted", "confirmed", "failed", "cancelled"},
}
MANDATE = {
    "created": {
        "pending_customer_approval",
        "pending_submission",
        "submitted",
        "failed",
        "cancelled",
    },
    "pending_customer_approval": {"pending_submission", "submitted", "failed", "cancelled"},
    "pending_submission": {"submitted", "failed", "cancelled"},
    "submitted": {"active", "failed", "cancelled"},
    "active": {"suspended", "expired", "cancelled"},
    "suspended": {"active", "cancelled"},
    "failed": {"pending_submission", "cancelled"},
    "cancelled": set(),
    "expired": set(),
}
REFUND = {
    "created": {"pending", "refunded", "failed", "rejected"},
    "pending": {"refunded", "failed", "rejected"},
    "refunded": {"failed", "reversed"},
    "failed": set(),
    "rejected": set(),
    "reversed": set(),
}


@pytest.mark.parametrize(
    ("aggregate_type", "method", "expected"),
    [
        ("payment", "direct_debit", PAYMENT_DIRECT_DEBIT),
        ("payment", "card", PAYMENT_CARD),
        ("mandate", None, MANDATE),
        ("refund", None, REFUND),
    ],
)
def test_transition_table_matches_design(
    aggregate_type: str, method: str | None, expected: dict[str, set[str]]
) -> None:
    table = transitions(aggregate_type, method)
    assert {status: set(nxt) for status, nxt in table.items()} == expected
    for status in expected:
        for target in expected:
            assert is_legal(aggregate_type, method, status, target) == (target in expected[status])


def test_payment_without_method_follows_direct_debit() -> None:
    assert resolve_method("payment", None) == "direct_debit"
    assert resolve_method("payment", "card") == "card"
    assert resolve_method("mandate", "card") is None
    assert not is_legal("payment", None, "created", "confirmed")
    assert is_legal("payment", "card", "created", "confirmed")


@pytest.mark.parametrize("method", ["direct_debit", "card"])
def test_paid_out_needs_confirmed_first(method: str) -> None:
    for status in ("created", "pending_submission", "submitted"):
        assert not is_legal("payment", method, status, "paid_out")
        assert gap_path("payment", method, status, "paid_out") is not None
    assert is_legal("payment", method, "confirmed", "paid_out")


def test_first_event_is_legal_at_any_status() -> None:
    for lc in LIFECYCLES.values():
        for status in lc.statuses:
            assert is_legal(lc.aggregate_type, None, None, status)
            assert gap_path(lc.aggregate_type, None, None, status) == ()
    assert not is_legal("payment", None, None, "no_such_status")
    assert gap_path("payment", None, None, "no_such_status") is None


@pytest.mark.parametrize(
    ("aggregate_type", "method", "current", "target", "expected"),
    [
        ("payment", "direct_debit", "created", "submitted", ("pending_submission",)),
        (
            "payment",
            "direct_debit",
            "created",
            "paid_out",
            ("pending_submission", "submitted", "confirmed"),
        ),
        ("payment", "card", "created", "paid_out", ("confirmed",)),
        ("payment", "direct_debit", "submitted", "pending_submission", ("failed",)),
        (
            "payment",
            "direct_debit",
            "confirmed",
            "submitted",
            ("failed", "pending_submission"),
        ),
        ("payment", "direct_debit", "created", "pending_submission", ()),
        ("payment", "direct_debit", "cancelled", "confirmed", None),
        ("payment", "direct_debit", "paid_out", "submitted", None),
        ("payment", "direct_debit", "confirmed", "created", None),
        ("payment", "direct_debit", "partially_refunded", "partially_refunded", ()),
        ("payment", "direct_debit", "pending_submission", "pending_submission", ("failed",)),
        ("mandate", None, "created", "active", ("submitted",)),
        ("mandate", None, "suspended", "expired", ("active",)),
        ("mandate", None, "expired", "active", None),
        ("refund", None, "created", "reversed", ("refunded",)),
        ("refund", None, "failed", "refunded", None),
        ("refund", None, "pending", "nonsense", None),
    ],
)
def test_gap_path(
    aggregate_type: str,
    method: str | None,
    current: str,
    target: str,
    expected: tuple[str, ...] | None,
) -> None:
    assert gap_path(aggregate_type, method, current, target) == expected


def test_gap_path_is_a_legal_walk_wherever_one_exists() -> None:
    for lc in LIFECYCLES.values():
        for method in lc.methods or (None,):
            table = transitions(lc.aggregate_type, method)
            for current in lc.statuses:
                for target in lc.statuses:
                    path = gap_path(lc.aggregate_type, method, current, target)
                    if path is None:
                        continue
                    walk = (current, *path, target)
                    assert all(b in table[a] for a, b in itertools.pairwise(walk))


def test_terminal_statuses() -> None:
    assert {s for s in LIFECYCLES["payment"].statuses if is_terminal("payment", s)} == {
        "cancelled",
        "refunded",
        "charged_back",
    }
    assert not is_terminal("payment", "failed")  # resubmission leaves it
    assert {s for s in LIFECYCLES["mandate"].statuses if is_terminal("mandate", s)} == {
        "cancelled",
        "expired",
    }
    assert {s for s in LIFECYCLES["refund"].statuses if is_terminal("refund", s)} == {
        "failed",
        "rejected",
        "reversed",
    }


def test_stage_index() -> None:
    assert stage_index("payment", "created") == 0
    assert stage_index("payment", "paid_out") == 5
    assert stage_index("payment", "failed") is None
    assert stage_index("mandate", "active") == 4
    assert stage_index("mandate", "suspended") is None
    assert stage_index("refund", "refunded") == 2


def test_unknown_aggregate_type() -> None:
    with pytest.raises(ValueError, match="unknown aggregate_type 'invoice'"):
        lifecycle_for("invoice")


def test_mandatory_stages_per_method() -> None:
    payment = lifecycle_for("payment")
    assert payment.methods == ("direct_debit", "card")
    assert payment.mandatory_for("card") == {"confirmed"}
    assert payment.mandatory_for(None) == {"pending_submission", "submitted", "confirmed"}
    assert lifecycle_for("mandate").mandatory_for(None) == {"submitted"}
    assert lifecycle_for("refund").mandatory_for(None) == frozenset()
