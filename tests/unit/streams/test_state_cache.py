"""The sequencer's decoded-state cache hands back a state only for the very bytes it came from."""

from __future__ import annotations

import gc
from datetime import UTC, datetime

from streams import gc_policy
from streams.agents.state_cache import DecodedStates
from streams.sequencing import Sequencer
from streams.sequencing_state import AggregateState, Event
from streams.state_codec import encode_state


def _state(agg: str, *statuses: str) -> AggregateState:
    engine, state = Sequencer(), None
    for i, status in enumerate(statuses):
        event = Event(
            event_id=f"{agg}-{i}", aggregate_id=agg, aggregate_type="payment", status=status,
            occurred_at=datetime(2026, 1, 1, 0, 0, i, tzinfo=UTC), source="stripe",
        )  # fmt: skip
        state = engine.judge(state, event).state
    assert state is not None
    return state


def test_remembered_bytes_give_back_the_same_state_without_decoding() -> None:
    cache = DecodedStates(10)
    state = _state("p1", "created", "submitted")
    stored = encode_state(state)
    cache.remember("p1", stored, state)
    assert cache.load("p1", stored) is state
    assert cache.load("p1", bytes(stored)) is state  # equal bytes (a store on disk copies)
    assert (cache.hits, cache.misses) == (2, 0)


def test_other_bytes_are_decoded_afresh() -> None:
    cache = DecodedStates(10)
    old = _state("p1", "created")
    cache.remember("p1", encode_state(old), old)
    newer = _state("p1", "created", "submitted")  # e.g. recovered from the changelog
    loaded = cache.load("p1", encode_state(newer))
    assert loaded is not old and loaded == newer
    assert cache.load("p1", None) is None
    assert cache.misses == 1


def test_bounded_least_recently_written_first_out() -> None:
    cache = DecodedStates(2)
    states = {agg: _state(agg, "created") for agg in ("a", "b", "c")}
    for agg in ("a", "b", "a", "c"):  # "a" rewritten after "b": "b" is the oldest
        cache.remember(agg, encode_state(states[agg]), states[agg])
    assert len(cache) == 2
    assert cache.load("a", encode_state(states["a"])) is states["a"]
    assert cache.load("b", encode_state(states["b"])) is not states["b"]


def test_size_zero_keeps_nothing() -> None:
    cache = DecodedStates(0)
    state = _state("p1", "created")
    cache.remember("p1", encode_state(state), state)
    assert len(cache) == 0


def test_gc_settle_freezes_the_startup_heap_and_widens_the_young_generation() -> None:
    before = gc.get_threshold()
    try:
        gc_policy.settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (gc_policy.YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
