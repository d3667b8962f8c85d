"""Automatic replay of dead letters: the pure rules. No I/O.

Some webhooks need a PSP call to be normalised (a GoCardless payout's payments, a refund made
in the PSP's dashboard, a Stripe payout's transactions). When that call fails transiently
after the connector's own in-call retries (a 5xx, a timeout, a rate limit), nothing is wrong
with the webhook: asked again a little later, the PSP answers. Dead-lettering it for an
operator left the payment's status stale until someone ran ``paybus dlq replay``.

So such a letter carries ``retry_at`` and the ops role replays it then, through the same code
path as ``paybus dlq replay`` (original bytes to the original topic and partition, then a
replay marker closing the letter, see :mod:`streams.dlq_store`). The time travels in a Kafka
header (:data:`RETRY_AT_HEADER`), not in a field of the ``DeadLetter`` schema: a worker or CLI
of an earlier release (a rolling upgrade, a rollback) knows only the released schema and
could not decode such a letter at all, so its DLQ gauge skipped it (a webhook never normalised,
and no alert) and its ``paybus dlq list`` failed on it. Without the header the letter is an
ordinary one, waiting for an operator. The replayed record carries
the number of automatic replays so far in a Kafka header (:data:`REPLAY_ATTEMPT_HEADER`), so
when it fails again its letter is scheduled with the schedule's next delay; the letter's
``attempts`` says the same to whoever reads the DLQ. Once the schedule is used up, the letter
has no ``retry_at`` and waits for an operator, as every other letter does.

Replaying twice (a crash between the replay and its marker, or two ops workers during a
rebalance) is harmless: a webhook's events have the PSP's ids (or ids derived from them), and
the sequencer drops the repeats.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.errors import worth_asking_later
from streams.kafka_headers import Headers, header_text
from streams.parking import exhausted, retry_due

#: Kafka header of a replayed record: how many automatic replays of the original came before
#: it, this one included (absent: the original, or a replay by an operator, which starts the
#: schedule afresh: whoever replays by hand has fixed something).
REPLAY_ATTEMPT_HEADER = "x-paybus-replay-attempt"

#: Kafka header of a dead letter the ops role replays by itself: when, in milliseconds since
#: the epoch (ASCII digits, as Avro's timestamp-millis counts). Absent or garbled: the letter
#: waits for an operator.
RETRY_AT_HEADER = "x-paybus-retry-at"

#: ``paybus_events_total`` outcomes of a webhook the normaliser could not map: a letter the
#: bus replays by itself, one whose automatic replays are used up, one that will never map.
RETRYING = "retrying"
EXHAUSTED = "exhausted"
REJECTED = "rejected"

#: ``paybus_dlq_auto_replays_total`` outcomes: replayed and marked; the replay failed (tried
#: again at the next tick); left to operators because more letters wait than the ops role
#: keeps (``ops.dlq_auto_replay_max_letters``).
REPLAYED = "replayed"
FAILED = "failed"
OVER_CAP = "over_cap"

#: A letter still waiting this long past its ``retry_at`` (or :data:`OVERDUE_TICKS` replay
#: periods, if longer) is *overdue*: its automatic replay is not happening (no ops worker,
#: a replay failing every time), so it counts as pending for a human again and the pending
#: alert sees it.
OVERDUE_MIN = timedelta(minutes=5)
OVERDUE_TICKS = 10


def _number(headers: Headers, header: str) -> int | None:
    """The non-negative integer in ``header`` (None when absent or not one)."""
    text = header_text(headers, header)
    if text is None or not text.isascii() or not text.isdigit():
        return None
    return int(text)


def replays_of(headers: Headers) -> int:
    """The automatic replays a record's headers say came before it (0 for an original).

    A value that is not a non-negative integer counts as 0: the schedule starts again, which
    is bounded, where trusting a garbled count could not be."""
    return _number(headers, REPLAY_ATTEMPT_HEADER) or 0


def retry_at_headers(at: datetime | None) -> list[tuple[str, bytes]]:
    """The Kafka headers of a dead letter replayed automatically at ``at`` (none for None)."""
    if at is None:
        return []
    return [(RETRY_AT_HEADER, str(int(at.timestamp() * 1000)).encode())]


def retry_at_of(headers: Headers) -> datetime | None:
    """When a dead letter's headers say the ops role replays it (None: an operator does)."""
    millis = _number(headers, RETRY_AT_HEADER)
    return None if millis is None else datetime.fromtimestamp(millis / 1000, UTC)


def is_retryable(exc: BaseException | None) -> bool:
    """Whether asking the PSP again later can help: a connector error marked ``should_retry``
    (after the connector's own in-call retries), or paybus's credentials refused (fixed by an
    operator, the same look-up succeeds). A bug or a refusal will not get better."""
    return worth_asking_later(exc)


def retry_at(
    replays: int,
    schedule: Sequence[float],
    now: datetime,
    rng: Callable[[], float] = random.random,
) -> datetime | None:
    """When to replay a record that failed after ``replays`` automatic replays: the
    schedule's next delay (stretched by up to 20 %, like parked retries, so the webhooks one
    outage failed do not all meet the PSP in the same second), or None once the schedule's
    replays are used up (its length is their number; empty: never)."""
    if exhausted(replays, schedule):
        return None
    return retry_due(replays + 1, schedule, now, rng)


def replay_headers(record: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    """The headers an automatic replay of the letter ``record`` puts on the record: the
    replay's number, which is the letter's attempts so far (its first try failed: replay 1)."""
    return [(REPLAY_ATTEMPT_HEADER, str(int(record.get("attempts") or 1)).encode())]


def overdue_after(interval_s: float) -> timedelta:
    """How long past its ``retry_at`` a letter may wait before it is overdue."""
    return max(OVERDUE_MIN, timedelta(seconds=OVERDUE_TICKS * interval_s))


def waits_for_replay(record: Mapping[str, Any], now: datetime, grace: timedelta) -> bool:
    """Whether an open letter waits for an automatic replay (not for a human): it has a
    ``retry_at`` and is not overdue."""
    at = record.get("retry_at")
    return isinstance(at, datetime) and now < at + grace


def is_due(record: Mapping[str, Any], now: datetime) -> bool:
    """Whether an open letter's automatic replay is due."""
    at = record.get("retry_at")
    return isinstance(at, datetime) and at <= now


def describe(record: Mapping[str, Any], now: datetime, grace: timedelta) -> str:
    """What ``paybus dlq list`` says of an open letter: when the bus replays it, or that it
    waits for an operator (``pending``, what the pending gauge counts)."""
    at = record.get("retry_at")
    if not isinstance(at, datetime):
        return "pending"
    shown = at.isoformat(timespec="seconds")
    return f"retrying at {shown}" + ("" if waits_for_replay(record, now, grace) else " (overdue)")
