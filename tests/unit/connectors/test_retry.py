"""Backoff with jitter and the in-process retry loop (pure: no real sleeping)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.errors import PermanentError, TransientError
from connectors.retry import backoff_delay, call_with_retries


def test_backoff_doubles_up_to_the_cap_without_jitter() -> None:
    top = [backoff_delay(n, rng=lambda: 1.0) for n in range(1, 7)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]


def test_jitter_halves_at_most_and_never_goes_below_base() -> None:
    assert backoff_delay(3, rng=lambda: 0.0) == 1.0
    assert backoff_delay(1, rng=lambda: 0.0) == 0.5


@given(st.integers(1, 30), st.floats(0, 1, exclude_max=True))
def test_delay_is_within_bounds(attempt: int, r: float) -> None:
    delay = backoff_delay(attempt, rng=lambda: r)
    assert 0.5 <= delay <= 8.0


def test_retry_after_hint_wins_when_longer_but_is_capped() -> None:
    assert backoff_delay(1, retry_after_s=3.0, rng=lambda: 0.0) == 3.0
    assert backoff_delay(1, retry_after_s=600.0, rng=lambda: 0.0) == 8.0
    assert backoff_delay(4, retry_after_s=0.1, rng=lambda: 1.0) == 4.0


def test_invalid_attempt_is_refused() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_retries_retryable_errors_then_succeeds() -> None:
    calls: list[int] = []
    slept: list[float] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("503", http_status=503)
        return "ok"

    assert call_with_retries(flaky, attempts=3, sleep=slept.append, rng=lambda: 1.0) == "ok"
    assert len(calls) == 3 and slept == [0.5, 1.0]


def test_gives_up_after_attempts_with_the_last_error() -> None:
    errors = iter([TransientError("a"), TransientError("b"), TransientError("c")])

    def always() -> None:
        raise next(errors)

    with pytest.raises(TransientError, match="b"):
        call_with_retries(always, attempts=2, sleep=lambda _s: None)


def test_does_not_retry_permanent_or_unknown_errors() -> None:
    calls: list[int] = []

    def bad() -> None:
        calls.append(1)
        raise PermanentError("400")

    with pytest.raises(PermanentError):
        call_with_retries(bad, sleep=lambda _s: None)
    assert calls == [1]

    def bug() -> None:
        calls.append(1)
        raise KeyError("x")

    with pytest.raises(KeyError):
        call_with_retries(bug, sleep=lambda _s: None)
    assert calls == [1, 1]


def test_should_retry_override_and_on_retry_hook() -> None:
    seen: list[tuple[int, float]] = []
    state = {"n": 0}

    def conflict() -> str:
        state["n"] += 1
        if state["n"] == 1:
            raise PermanentError("409 lock", should_retry=True, retry_after_s=2.0)
        return "done"

    result = call_with_retries(
        conflict, sleep=lambda _s: None, on_retry=lambda a, _e, d: seen.append((a, d))
    )
    assert result == "done" and seen == [(1, 2.0)]
