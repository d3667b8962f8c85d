"""In-process retries of connector calls: exponential backoff with jitter, honouring PSP hints.

Modelled on ``stripe/_http_client.py`` (``_sleep_time_seconds`` / ``_add_jitter_time``): the
delay doubles per attempt from ``base_s`` up to ``cap_s``, is then randomised into
``[delay/2, delay]`` so a fleet of workers hit by the same outage does not retry in lock-step,
and never drops below ``base_s``. A PSP's own ``Retry-After`` hint wins when it asks for longer.

Only :class:`~connectors.errors.ConnectorError` with ``should_retry`` is retried: a declined
card or a validation error will not get better by asking again, and anything that is not a
connector error is a bug that must surface. This is the short, in-process layer; a message
that still fails is parked on ``paybus.retry`` by the caller, not here. Everything is pure
(clock and randomness are injected), so it is unit-tested without sleeping.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from connectors.errors import ConnectorError

T = TypeVar("T")

__all__ = ["backoff_delay", "call_with_retries"]


def backoff_delay(
    attempt: int,
    *,
    base_s: float = 0.5,
    cap_s: float = 8.0,
    retry_after_s: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1 = the first retry).

    ``retry_after_s`` is the PSP's hint; it is honoured when longer than the computed delay
    (but capped at ``cap_s``, so a hostile or buggy header cannot park a worker for hours --
    the retry topic handles long waits).
    """
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, got {attempt}")
    delay = min(base_s * 2.0 ** (attempt - 1), cap_s)
    jittered = delay * 0.5 * (1.0 + rng())
    delay = max(base_s, jittered)
    if retry_after_s is not None and retry_after_s > delay:
        delay = min(retry_after_s, cap_s)
    return delay


def call_with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 3,
    sleep: Callable[[float], None] = time.sleep,
    base_s: float = 0.5,
    cap_s: float = 8.0,
    rng: Callable[[], float] = random.random,
    on_retry: Callable[[int, ConnectorError, float], None] | None = None,
) -> T:
    """Call ``fn`` up to ``attempts`` times, retrying retryable connector errors.

    The last error is re-raised unchanged (with its ``should_retry``), so the caller can park
    the message on the retry topic. ``on_retry(attempt, error, delay)`` is called before each
    sleep, for metrics.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    attempt = 1
    while True:
        try:
            return fn()
        except ConnectorError as exc:
            if not exc.should_retry or attempt >= attempts:
                raise
            delay = backoff_delay(
                attempt, base_s=base_s, cap_s=cap_s, retry_after_s=exc.retry_after_s, rng=rng
            )
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            sleep(delay)
            attempt += 1
