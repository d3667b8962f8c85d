"""Backfill: a PSP's own event log, re-read and put on ``paybus.payments.events``.

Webhooks get lost (a PSP gives up after its retries, an endpoint was down for a day). Every
PSP keeps an event log, and its connector's ``backfill(since)`` maps it onto the same
canonical events, with the same ids, as its webhooks. Re-publishing them is therefore safe:
what was delivered already is a duplicate the sequencer drops, what was missed fills the gap.
One loop serves ``paybus backfill`` (:mod:`streams.cli.backfill_cmd`) and the scheduled stage
(:mod:`streams.agents.backfill`); only how a record is sent differs.

Unresolved events. A canonical event names its aggregate only when the PSP carried paybus's
metadata (GoCardless copies a resource's metadata into each event about it; paybus writes
the aggregate id at create time). An event about an object paybus did not create (made in the
PSP's dashboard, or before paybus) has an empty aggregate id. The webhook path resolves
those through the normaliser's table of links, which lives inside the workers; a backfill
cannot key such an event (its key *is* the aggregate id, the unit of ordering), so it does not
publish it: it counts and reports it as *unresolved* (the CLI lists them; the stage logs and
counts them), for an operator to decide about. A refund made at the PSP whose connector found
the bus's payment it refunds is named like the webhook path names it (:mod:`.psp_refunds`).
Events its connector marks foreign (other systems' objects on a shared PSP account) are only
counted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.base import FOREIGN_ATTRIBUTE
from streams import psp_refunds
from streams.records import _MAP_FIELDS, PaymentEvent
from streams.topics import partition_key

__all__ = [
    "BackfillReport",
    "event_record",
    "key_of",
    "parse_since",
    "run_backfill",
    "scheduled_since",
]

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An RFC 3339 time with its offset (``2024-05-01T12:00:00Z``), or a span back from now
    (``90m``, ``6h``, ``2d``); raises ValueError. Naive times are refused: a backfill window
    silently shifted by the operator's zone would miss events. A time ahead of this machine's
    clock is allowed: the PSP's clock is the one that stamps its events."""
    now = now or datetime.now(UTC)
    value = text.strip()
    relative = _RELATIVE.fullmatch(value)
    if relative:
        moment = now - timedelta(**{_UNITS[relative.group(2)]: float(relative.group(1))})
    else:
        try:
            moment = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"--since {text!r} is neither RFC 3339 (2024-05-01T12:00:00Z) nor a span (6h, 2d)"
            ) from None
        if moment.tzinfo is None:
            raise ValueError(f"--since {text!r} has no UTC offset; add Z or +01:00")
    return moment.astimezone(UTC)


def scheduled_since(last_start: datetime | None, now: datetime, interval_s: float) -> datetime:
    """Where a scheduled run starts reading: one interval before the previous run began.

    The overlap covers events the PSP wrote with a timestamp just before a run yet listed only
    after it; the duplicates it re-reads are dropped by the sequencer. Without a previous run
    in this process (a worker just became leader) it looks back two intervals; an outage longer
    than that is what ``paybus backfill --since`` is for.
    """
    overlap = timedelta(seconds=interval_s)
    start = last_start if last_start is not None else now - overlap
    return start - overlap


def key_of(event: PaymentEvent) -> str | None:
    """The Kafka key of a backfilled event, or ``None`` when its aggregate is unknown."""
    if not event.aggregate_id:
        return None
    return partition_key(event.aggregate_type, event.aggregate_id, event.payment_id)


def event_record(event: PaymentEvent) -> dict[str, Any]:
    """The event as the Avro codec wants it (empty maps, not nulls, as Faust's codec sends)."""
    data: dict[str, Any] = event.asdict()
    for name in _MAP_FIELDS.intersection(data):
        if data[name] is None:
            data[name] = {}
    return data


@dataclass
class BackfillReport:
    """What one backfill read and did, for the CLI's table and the stage's counters."""

    psp: str
    since: datetime
    #: (aggregate type, status) -> events published.
    published: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Events not published because their aggregate is unknown.
    unresolved: list[PaymentEvent] = field(default_factory=list)
    #: Events about other systems' objects on the same PSP account, skipped.
    foreign: int = 0

    @property
    def published_total(self) -> int:
        return sum(self.published.values())

    @property
    def read_total(self) -> int:
        return self.published_total + len(self.unresolved) + self.foreign

    def rows(self) -> list[tuple[str, str, int, int]]:
        """(aggregate type, status, published, unresolved), sorted, for a summary table."""
        missing = Counter((e.aggregate_type, e.status) for e in self.unresolved)
        keys = sorted(set(self.published) | set(missing))
        return [(t, s, self.published[(t, s)], missing[(t, s)]) for t, s in keys]


def run_backfill(
    psp: str,
    since: datetime,
    events: Iterable[PaymentEvent],
    send: Callable[[str, PaymentEvent], None],
    *,
    on_event: Callable[[BackfillReport], None] | None = None,
) -> BackfillReport:
    """Send each resolvable event with ``send(key, event)``; count everything into a report.

    ``send`` may be asynchronous underneath (queue and acknowledge later); the caller waits
    for its acknowledgements before trusting the report's ``published`` counts.
    """
    report = BackfillReport(psp=psp, since=since)
    for read in events:
        event = psp_refunds.resolve(read) or read  # a refund made at the PSP: its own id
        key = key_of(event)
        if key is None and (event.attributes or {}).get(FOREIGN_ATTRIBUTE):
            report.foreign += 1
        elif key is None:
            report.unresolved.append(event)
        else:
            send(key, event)
            report.published[(event.aggregate_type, event.status)] += 1
        if on_event is not None:
            on_event(report)
    return report
