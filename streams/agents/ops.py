"""The ops stage: the janitor, which asks the PSP about aggregates that look stuck.

A webhook can be lost for good (the PSP gave up delivering it), and then an aggregate sits in a
non-final status forever. The janitor keeps, per aggregate, its latest status update from
``paybus.payments.status`` (which carries the PSP and its object id) in a changelog table; a
timer finds those whose last change is older than ``ops.janitor_stuck_after_s`` and asks their
connector for the current status. What it learns enters the bus like anything else: a
``PaymentEvent`` (source ``janitor``) on ``paybus.payments.events``, whose id is derived from
the aggregate, the status and the observation time, and the sequencer judges it as usual.

Scheduled collection of held direct debits is run by the retry stage (it holds them in order
with the rest of the aggregate's parked commands); see :mod:`streams.agents.retry`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
from faust.types import EventT

from connectors.base import StatusLookup
from streams import metrics
from streams.agents.common import Connectors, connector_call, json_table, keyed_topic
from streams.app import PaybusApp
from streams.errors import PaybusError
from streams.records import PaymentEvent, StatusUpdate
from streams.topics import partition_key

log = logging.getLogger(__name__)

#: Statuses the janitor leaves alone: final, or expected to last (an active mandate).
SETTLED: dict[str, frozenset[str]] = {
    "payment": frozenset(
        {"paid_out", "cancelled", "refunded", "charged_back", "failed", "partially_refunded"}
    ),
    "mandate": frozenset({"active", "cancelled", "expired", "failed", "suspended"}),
    "refund": frozenset({"refunded", "failed", "rejected", "reversed"}),
}


def is_stuck(entry: dict[str, Any], now: datetime, stuck_after: timedelta) -> bool:
    """A non-final aggregate whose status has not changed for ``stuck_after``."""
    if entry.get("status") in SETTLED.get(str(entry.get("type")), frozenset()):
        return False
    since = datetime.fromisoformat(str(entry["since"]))
    return now - since >= stuck_after


def janitor_event(entry: dict[str, Any], aggregate_id: str, found: StatusLookup) -> PaymentEvent:
    """What a look-up learnt, as an ordinary event (id from aggregate, status, time)."""
    observed = found.observed_at.isoformat()
    return PaymentEvent(
        event_id=f"janitor:{aggregate_id}:{found.status}:{observed}",
        aggregate_id=aggregate_id,
        aggregate_type=str(entry["type"]),
        status=found.status,
        occurred_at=found.observed_at,
        source="janitor",
        method=entry.get("method"),
        psp=entry.get("psp"),
        psp_object_id=found.psp_object_id,
        payment_id=entry.get("payment_id"),
        settlement_date=found.settlement_date,
    )


class OpsStage:
    def __init__(self, app: PaybusApp, psps: list[str] | None = None) -> None:
        self.app = app
        self.connectors = Connectors(app)
        ops = app.settings.ops
        self.stuck_after = timedelta(seconds=ops.janitor_stuck_after_s)
        tm = app.topic_map
        self.status_topic = keyed_topic(app, tm.status_updates.name, StatusUpdate)
        self.events_topic = keyed_topic(app, tm.payment_events.name, PaymentEvent)
        #: aggregate id -> latest status, since when, PSP reference.
        self.latest = json_table(app, "janitor-status")
        #: When each aggregate was last looked up here (in memory: a restart looks again).
        self.checked: dict[str, datetime] = {}
        app.agent(self.status_topic, name="paybus.janitor.status")(self.track)
        app.timer(ops.janitor_interval_s, name="paybus.janitor")(self.sweep)

    async def track(self, stream: faust.StreamT[StatusUpdate]) -> AsyncIterator[None]:
        async for event in stream.events():
            self.remember(event)
            yield None

    def remember(self, event: EventT[StatusUpdate]) -> None:
        update = cast(StatusUpdate, event.value)
        known = self.latest.get(update.aggregate_id) or {}
        self.latest[update.aggregate_id] = {
            "type": update.aggregate_type,
            "status": update.to_status,
            "since": update.occurred_at.isoformat(),
            "psp": update.psp or known.get("psp"),
            "psp_object_id": update.psp_object_id or known.get("psp_object_id"),
            "payment_id": update.payment_id or known.get("payment_id"),
            "method": (update.attributes or {}).get("method") or known.get("method"),
        }
        metrics.EVENTS.labels("janitor", "tracked", update.aggregate_type, update.source).inc()

    async def sweep(self) -> None:
        """Look up every stuck aggregate (at most once per stuck period) and publish news."""
        now = datetime.now(UTC)
        for aggregate_id, entry in list(self.latest.items()):
            if not entry or not is_stuck(entry, now, self.stuck_after):
                continue
            last = self.checked.get(aggregate_id)
            if last is not None and now - last < self.stuck_after:
                continue
            self.checked[aggregate_id] = now
            await self._look_up(aggregate_id, entry)

    async def _look_up(self, aggregate_id: str, entry: dict[str, Any]) -> None:
        psp, object_id = entry.get("psp"), entry.get("psp_object_id")
        if not psp or not object_id:
            metrics.JANITOR.labels("no_reference").inc()
            return
        try:
            connector = self.connectors.get(str(psp))
            found = await connector_call(
                str(psp),
                "lookup_status",
                lambda: connector.lookup_status(str(entry["type"]), str(object_id)),
            )
        except (PaybusError, NotImplementedError) as exc:
            log.warning("janitor: look-up of %s via %s failed: %s", aggregate_id, psp, exc)
            metrics.JANITOR.labels("failed").inc()
            return
        if found.status == entry.get("status"):
            metrics.JANITOR.labels("unchanged").inc()
            return
        metrics.JANITOR.labels("changed").inc()
        log.info("janitor: %s is %s at %s (bus: %s)", aggregate_id, found.status, psp,
                 entry.get("status"))  # fmt: skip
        event = janitor_event(entry, aggregate_id, found)
        key = partition_key(event.aggregate_type, aggregate_id, event.payment_id)
        fut = await self.events_topic.send(key=key, value=event)
        await fut
