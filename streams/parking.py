"""Ordered parking of commands: the pure rules behind ``paybus.retry``. No I/O.

A command that still fails transiently after the connector's in-process retries is *parked*:
an envelope carrying its original bytes goes to ``paybus.retry`` (co-partitioned with the
command topics: same key, same partition count) and its *origin* (topic:partition:offset of
the command record) is appended to the aggregate's entry in the ``parked`` changelog table.
While that entry is not empty, every later command of the aggregate is parked behind it
without being executed. The table's list is the single source of order: the retry agent only
ever executes the envelope whose origin is first in the list, and removes it when done.

Why this is crash-safe without transactions:

* The table entry is written *before* the envelope is sent, and the command is acked after
  both. A crash in between re-delivers the command, which finds its origin already listed and
  only sends the envelope again; the retry agent keeps one envelope per origin.
* The retry agent acks an envelope only when its command is finished (executed, re-parked
  with a higher attempt, or dead-lettered), so after a crash everything not finished is read
  again from the committed offset. An envelope whose origin is no longer listed is finished
  work and is dropped; of two envelopes for one origin the higher attempt wins.
* Executing twice is harmless: every PSP call carries an idempotency key derived from the
  command id, and the events it yields carry the same ids (the sequencer drops repeats).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

#: Envelope stages: a failed call waiting for its retry, a command waiting behind another one,
#: and a direct debit held until its collection date.
RETRY = "retry"
WAITING = "waiting"
SCHEDULED = "scheduled"

#: Kafka header of an envelope parked because the PSP refused paybus's credentials, or did not
#: know an object it created for paybus (another account's key: :mod:`streams.unknown_objects`),
#: with value :data:`CREDENTIALS` (absent: parked for a transient failure or behind another
#: command). A header rather than a ``RetryEnvelope`` field, so a worker of the release before
#: (a rolling upgrade, a rollback) reads the envelope as an ordinary parked retry.
PARKED_FOR_HEADER = "x-paybus-parked-for"
CREDENTIALS = "credentials"
#: Kafka header next to it: a fingerprint of the key the PSP refused (see
#: :func:`streams.secrets_check.key_fingerprint`), so a worker holding another key tries the
#: command at once and one holding the same key does not.
REFUSED_KEY_HEADER = "x-paybus-refused-key"

#: Most error lines an envelope carries (the newest win).
MAX_ERROR_LINES = 10


def origin_id(topic: str, partition: int, offset: int) -> str:
    """Where a command record was first read: stable across re-deliveries and re-parking."""
    return f"{topic}:{partition}:{offset}"


def psp_of_topic(topic: str) -> str:
    """The PSP of a command topic (``<prefix>.commands.<psp>``)."""
    return topic.rsplit(".", 1)[-1]


def retry_id(origin: str, attempt: int) -> str:
    """Deterministic envelope id: a re-sent envelope repeats it."""
    return f"{origin}#{attempt}"


#: Parked retries come due up to this share later than the schedule says: the commands
#: parked by one outage would otherwise all come due in the same second and meet the PSP,
#: just back, as one burst (the in-process retries jitter the same way).
RETRY_JITTER = 0.2


def retry_due(
    attempt: int,
    schedule: Sequence[float],
    now: datetime,
    rng: Callable[[], float] = random.random,
) -> datetime:
    """When retry number ``attempt`` (1 = first parked retry) is due: the schedule's delay,
    stretched by up to :data:`RETRY_JITTER`."""
    if attempt < 1:
        return now
    delay = schedule[min(attempt, len(schedule)) - 1]
    return now + timedelta(seconds=delay * (1.0 + RETRY_JITTER * rng()))


def due_for(
    due_at: datetime,
    *,
    parked_for: str | None,
    parked_at: datetime,
    started_at: datetime,
    now: datetime,
    refused_key: str | None = None,
    own_key: str | None = None,
) -> datetime:
    """When a worker runs an envelope the schedule says is due at ``due_at``: then, except
    that a command parked for refused credentials runs at once where the key may have been
    fixed, so whoever fixed it does not wait out the rest of the schedule (hours, by its last
    delays). Settings are read once per process, so a new key comes with a restart.

    With fingerprints of the refused key and of this worker's own: at once exactly when they
    differ (a worker holding a new key, whenever it started: in a rolling restart the workers
    still on the old key keep parking after the new ones started; one restarted with the same
    wrong key does not try again). Without (an envelope of an earlier release of this rule):
    at once when it was parked before this worker started."""
    if parked_for != CREDENTIALS:
        return due_at
    if refused_key is not None and own_key is not None:
        return min(due_at, now) if refused_key != own_key else due_at
    return min(due_at, now) if parked_at < started_at else due_at


def exhausted(attempt: int, schedule: Sequence[float]) -> bool:
    """Whether a failure of retry ``attempt`` is the last one the schedule allows."""
    return attempt >= len(schedule)


def error_log(previous: str, error: str) -> str:
    """The envelope's error text: earlier lines plus this one, newest last, bounded."""
    lines = [line for line in previous.splitlines() if line] + [error]
    return "\n".join(lines[-MAX_ERROR_LINES:])


def collection_due(charge_date: str, lead_days: int = 0) -> datetime:
    """When a direct debit with this collection date is submitted: ``lead_days`` before it."""
    day = date.fromisoformat(charge_date) - timedelta(days=lead_days)
    return datetime.combine(day, time(0, 0), tzinfo=UTC)


# --- the parked table's value: {"pending": [origin, ...], "stages": {origin: stage},
#     "blocked_by": dead letter id (set when the head went to the DLQ)} ----------------------


def pending(stored: Mapping[str, Any] | None) -> list[str]:
    return list((stored or {}).get("pending") or [])


def appended(stored: Mapping[str, Any] | None, origin: str, stage: str) -> dict[str, Any]:
    """The entry with ``origin`` parked last (unchanged when it is already parked)."""
    listed = pending(stored)
    stages: dict[str, str] = dict((stored or {}).get("stages") or {})
    if origin not in listed:
        listed.append(origin)
        stages[origin] = stage
    return {**(stored or {}), "pending": listed, "stages": stages}


def removed(stored: Mapping[str, Any] | None, origin: str) -> dict[str, Any] | None:
    """The entry without ``origin``; ``None`` when nothing is left parked."""
    rest = [o for o in pending(stored) if o != origin]
    if not rest:
        return None
    stages = dict((stored or {}).get("stages") or {})
    stages.pop(origin, None)
    kept = {o: s for o, s in stages.items() if o in rest}
    return {**(stored or {}), "pending": rest, "stages": kept}


def blocked_by(stored: Mapping[str, Any] | None) -> str | None:
    """The dead letter the aggregate's parked commands wait behind (they follow it to the DLQ,
    so a replay puts them back in their original order)."""
    found = (stored or {}).get("blocked_by")
    return str(found) if found else None


# --- the retry agent's in-memory queue --------------------------------------------------------


@dataclass
class Parked:
    """One envelope the retry agent holds (not acked) until its command is finished."""

    key: str
    origin: str
    attempt: int
    due_at: datetime
    stage: str
    handle: Any = None
    #: The schedule's due time of an envelope run before it (parked for refused credentials
    #: before this worker started, see :func:`due_for`); ``None`` otherwise.
    scheduled: datetime | None = None
    #: :data:`PARKED_FOR_HEADER`'s value (``credentials``), or ``None``.
    parked_for: str | None = None


@dataclass
class RetryQueue:
    """Envelopes by aggregate key and origin; which ones may run now.

    ``offer`` says what to do with an arriving envelope: ``"stale"`` (its origin is finished:
    ack and drop), ``"superseded"`` (a higher attempt of the origin is held: ack and drop) or
    ``"held"``. When a higher attempt arrives, the lower one it replaces is returned for acking.
    """

    by_key: dict[str, dict[str, Parked]] = field(default_factory=dict)

    def offer(self, item: Parked, listed: Sequence[str]) -> tuple[str, Parked | None]:
        if item.origin not in listed:
            return "stale", None
        held = self.by_key.setdefault(item.key, {})
        current = held.get(item.origin)
        if current is not None and current.attempt >= item.attempt:
            return "superseded", None
        held[item.origin] = item
        return "held", current

    def runnable(
        self, listed_of: Mapping[str, Sequence[str]] | Any, now: datetime, busy: set[str]
    ) -> list[Parked]:
        """Heads that are due: per aggregate only the first listed origin, never one running."""
        out: list[Parked] = []
        for key, held in self.by_key.items():
            if key in busy or not held:
                continue
            listed = listed_of(key) if callable(listed_of) else listed_of.get(key, ())
            if not listed:
                continue
            head = held.get(listed[0])
            if head is not None and head.due_at <= now:
                out.append(head)
        return sorted(out, key=lambda p: p.due_at)

    def discard(self, item: Parked) -> None:
        held = self.by_key.get(item.key)
        if held is not None and held.get(item.origin) is item:
            del held[item.origin]
            if not held:
                del self.by_key[item.key]

    def drop_orphans(self, key: str, listed: Sequence[str]) -> list[Parked]:
        """Held envelopes whose origin is no longer listed (finished elsewhere): to ack."""
        held = self.by_key.get(key, {})
        gone = [p for o, p in held.items() if o not in listed]
        for item in gone:
            self.discard(item)
        return gone

    def items(self) -> list[Parked]:
        return [p for held in self.by_key.values() for p in held.values()]

    def __len__(self) -> int:
        return sum(len(held) for held in self.by_key.values())
