"""The sequencer table's compact state form: lossless, small, and strict about what it reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.demo_data import delivery, histories
from streams.lifecycles import LIFECYCLES, PAYMENT_METHODS
from streams.sequencing import Sequencer
from streams.sequencing_state import AggregateState, Event
from streams.state_codec import (
    STATUSES,
    TYPES,
    VERSION,
    StateCodecError,
    decode_state,
    encode_state,
    has_held,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
text = st.text(max_size=30)
ids = st.text(min_size=1, max_size=40)
times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
) | st.datetimes(  # whole seconds take the short path; keep plenty of those
    min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
).map(lambda t: t.replace(microsecond=0))


@st.composite
def states(draw: st.DrawFn) -> AggregateState:
    """Any state the engine could hold, plus names the codec has no code for."""
    kind = draw(st.sampled_from(sorted(LIFECYCLES)))
    statuses = sorted(LIFECYCLES[kind].statuses)
    aggregate_id = draw(ids)
    method = draw(st.none() | st.sampled_from(PAYMENT_METHODS)) if kind == "payment" else None
    seen = draw(st.lists(ids | ids.map(lambda s: aggregate_id + s), max_size=12, unique=True))
    last = draw(st.none() | st.sampled_from(seen) | ids) if seen else draw(st.none() | ids)
    held = [
        Event(
            event_id=draw(ids),
            aggregate_id=aggregate_id,
            aggregate_type=kind,
            status=draw(st.sampled_from(statuses)),
            occurred_at=draw(times),
            source=draw(ids),  # an event's source is never empty (Event refuses it)
            method=draw(st.none() | st.sampled_from(PAYMENT_METHODS)),
            attributes=draw(st.dictionaries(text, text, max_size=4)),
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    return AggregateState(
        aggregate_id=aggregate_id,
        aggregate_type=kind,
        method=method,
        status=draw(st.none() | st.sampled_from(statuses)),
        latest_at=draw(st.none() | times),
        last_event_id=last,
        seq=draw(st.integers(0, 2**40)),
        seen=dict.fromkeys(seen),
        held=held,
    )


@settings(max_examples=400, deadline=None)
@given(states())
def test_round_trip_is_lossless(state: AggregateState) -> None:
    data = encode_state(state)
    assert data[0] == VERSION
    again = decode_state(state.aggregate_id, data)
    assert again == state
    assert list(again.seen) == list(state.seen)  # order matters: the oldest is evicted first
    assert again.latest_at is None or again.latest_at.tzinfo is not None
    assert has_held(data) == bool(state.held)


def test_engine_states_round_trip_and_stay_small() -> None:
    """Every state the engine reaches on shuffled, duplicated histories; a typical one is tiny."""
    engine = Sequencer(max_seen=64, max_held=32)
    hist = histories(300, seed=4)
    found: dict[str, AggregateState] = {}
    held_seen = False
    for ev in delivery(hist, seed=9):
        event = Event(
            ev.event_id,
            ev.aggregate_id,
            ev.aggregate_type,
            ev.status,
            ev.occurred_at,
            ev.source,
            ev.method,
            {"psp": "stripe", "psp_object_id": f"pi_{ev.aggregate_id}"},
        )
        stored = found.get(ev.aggregate_id)
        if stored is not None:
            stored = decode_state(ev.aggregate_id, encode_state(stored))
        state = engine.judge(stored, event).state
        held_seen |= bool(state.held)
        assert decode_state(state.aggregate_id, encode_state(state)) == state
        found[ev.aggregate_id] = state
    assert held_seen, "the sample never held an event: the held path went untested"
    sizes = sorted(len(encode_state(s)) for s in found.values())
    assert sizes[len(sizes) // 2] <= 60, sizes[len(sizes) // 2]


def test_typical_payment_is_compact() -> None:
    """Known statuses cost a byte, times whole seconds five, ids sharing a prefix a few."""
    agg = "pay-000123"
    state = AggregateState(
        aggregate_id=agg,
        aggregate_type="payment",
        method="card",
        status="paid_out",
        latest_at=T0 + timedelta(seconds=5),
        last_event_id=f"{agg}-e2",
        seq=3,
        seen=dict.fromkeys(f"{agg}-e{i}" for i in range(3)),
    )
    data = encode_state(state)
    assert agg.encode() not in data
    assert len(data) < 30, len(data)
    assert decode_state(agg, data) == state


def test_names_without_a_code_round_trip() -> None:
    """A status added to a lifecycle later is written literally until it gets a code."""
    state = AggregateState("m-1", "mandate", status="brand_new_status", seq=1)
    assert "brand_new_status" not in STATUSES
    assert decode_state("m-1", encode_state(state)).status == "brand_new_status"


def test_every_lifecycle_name_has_a_code() -> None:
    """Codes are the short path; a status without one still works but costs its length."""
    assert set(TYPES) == set(LIFECYCLES)
    assert set(PAYMENT_METHODS) <= {"direct_debit", "card"}
    for lc in LIFECYCLES.values():
        assert lc.statuses <= set(STATUSES), lc.statuses - set(STATUSES)


def test_the_key_is_needed_to_read_the_value_back() -> None:
    """Ids are coded against the aggregate id: decoding needs the key the value sits under."""
    agg = "pay-777"
    state = AggregateState(agg, "payment", status="created", seq=1, seen={f"{agg}-e0": None})
    data = encode_state(state)
    assert list(decode_state(agg, data).seen) == [f"{agg}-e0"]
    assert decode_state("pay-778", data).aggregate_id == "pay-778"


@pytest.mark.parametrize(
    "data",
    [b"", b"\x02\x00\x00\x00", b"\x01", b"\x01\x00\x00\x80", b"\x01\x00\x09\x00\x00\x00"],
)
def test_unreadable_bytes_raise_a_codec_error(data: bytes) -> None:
    with pytest.raises(StateCodecError):
        decode_state("x", data)


def test_truncated_and_extended_values_are_refused() -> None:
    state = AggregateState("a", "payment", status="created", latest_at=T0, seq=1, seen={"e": None})
    data = encode_state(state)
    for cut in range(1, len(data)):
        with pytest.raises(StateCodecError):
            decode_state("a", data[:cut])
    with pytest.raises(StateCodecError):
        decode_state("a", data + b"\x00")
