"""The ops stage: the janitor, which asks the PSP about aggregates that look stuck.

A webhook can be lost for good (the PSP gave up delivering it), and then an aggregate sits in a
non-final status forever. The janitor keeps, per aggregate, its latest status update from
``paybus.payments.status`` (which carries the PSP and its object id) in a changelog table; a
timer finds those whose last change is older than ``ops.janitor_stuck_after_s`` and asks their
connector for the current status. What it learns enters the bus like anything else: a
``PaymentEvent`` (source ``janitor``) on ``paybus.payments.events``, whose id is derived from
the aggregate, the status and the observation time, and the sequencer judges it as usual.

The same entries say which payment pages expired (the entry keeps the link's expiry from the
status update carrying it): a second timer publishes a ``cancel`` intent for each payment still
waiting for its customer past its link's expiry and a grace period
(:mod:`streams.page_expiry`), so the PSP object is closed and the CRM record shows why.

Scheduled collection of held direct debits is run by the retry stage (it holds them in order
with the rest of the aggregate's parked commands); see :mod:`streams.agents.retry`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import faust
from faust.stores.memory import Store as MemoryStore
from faust.types import EventT

from connectors.base import StatusLookup
from streams import metrics, page_expiry
from streams.agents.common import Connectors, connector_call, json_table, keyed_topic
from streams.app import PaybusApp
from streams.errors import PaybusError
from streams.records import CrmChange, PaymentEvent, StatusUpdate
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
        self.changes_topic = keyed_topic(app, tm.crm_changes.name, CrmChange)
        self.page_grace = timedelta(seconds=ops.page_expiry_grace_s)
        #: aggregate id -> latest status, since when, PSP reference.
        self.latest = json_table(app, "janitor-status")
        #: When each aggregate was last looked up here (in memory: a restart looks again).
        self.checked: dict[str, datetime] = {}
        #: When a cancel of each expired page was last published here (in memory: a restart
        #: publishes again, the same intent, which the ids make harmless).
        self.expiry_requested: dict[str, datetime] = {}
        app.agent(self.status_topic, name="paybus.janitor.status")(self.track)
        app.timer(ops.janitor_interval_s, name="paybus.janitor")(self.sweep)
        app.timer(ops.page_expiry_check_s, name="paybus.page_expiry")(self.expire_pages)

    async def track(self, stream: faust.StreamT[StatusUpdate]) -> AsyncIterator[None]:
        async for event in stream.events():
            self.remember(event)
            yield None

    def remember(self, event: EventT[StatusUpdate]) -> None:
        update = cast(StatusUpdate, event.value)
        known = self.latest.get(update.aggregate_id) or {}
        expires = page_expiry.expires_of(update.attributes)
        self.latest[update.aggregate_id] = {
            "type": update.aggregate_type,
            "status": update.to_status,
            "since": update.occurred_at.isoformat(),
            "psp": update.psp or known.get("psp"),
            "psp_object_id": update.psp_object_id or known.get("psp_object_id"),
            "payment_id": update.payment_id or known.get("payment_id"),
            "method": (update.attributes or {}).get("method") or known.get("method"),
            "crm_record_id": update.crm_record_id or known.get("crm_record_id"),
            page_expiry.EXPIRES_KEY: expires or known.get(page_expiry.EXPIRES_KEY),
        }
        store = getattr(self.latest, "data", None)
        partitions = getattr(store, "_key_partition", None)  # Faust internals: checked
        if isinstance(store, MemoryStore) and isinstance(partitions, dict):
            # Faust's memory store forgets a revoked partition's keys when recovery completes,
            # but only the keys it knows the partition of, which a plain table write does not
            # record: without this, a partition that moved to another worker stayed here as
            # it was, and both timers kept acting on it (a page paid meanwhile still waiting,
            # cancelled again every janitor period, its refusal written to the paid record).
            partitions[update.aggregate_id] = event.message.partition
        metrics.EVENTS.labels("janitor", "tracked", update.aggregate_type, update.source).inc()
        if update.to_status != page_expiry.WAITING:
            self._count_expiry_outcome(update)

    def _count_expiry_outcome(self, update: StatusUpdate) -> None:
        """The outcome of a cancel this worker asked for: the payment's next status."""
        requested_at: datetime | None = self.expiry_requested.pop(update.aggregate_id, None)
        if requested_at is not None:
            cancelled = update.to_status == "cancelled"
            outcome = page_expiry.CANCELLED if cancelled else page_expiry.OVERTAKEN
            metrics.PAGE_EXPIRY.labels(outcome).inc()

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

    async def expire_pages(self) -> None:
        """Publish a cancel intent for each payment still waiting for its customer
        ``ops.page_expiry_grace_s`` after its page link expired (see :mod:`streams.page_expiry`);
        once per payment, again only if it still waits a janitor period later."""
        now = datetime.now(UTC)
        for aggregate_id, listed in list(self.latest.items()):
            # Read again: publishing the cancels before it awaited the broker, and the status
            # agent may have seen this payment paid meanwhile.
            entry = self.latest.get(aggregate_id) if listed else None
            requested_at = self.expiry_requested.get(aggregate_id)
            outcome = page_expiry.decide(
                entry or {}, now, self.page_grace, requested_at, self.stuck_after
            )
            if outcome is not None and entry:
                await self._request_cancel(aggregate_id, entry, outcome, now)

    async def _request_cancel(
        self, aggregate_id: str, entry: dict[str, Any], outcome: str, now: datetime
    ) -> None:
        change = page_expiry.cancel_intent(aggregate_id, entry)
        try:
            fut = await self.changes_topic.send(key=aggregate_id, value=change)
            await fut
        except Exception as exc:  # one payment's failure must not stop the others' checks
            log.warning("page expiry: cancel of %s not published (next check tries again): %s",
                        aggregate_id, exc)  # fmt: skip
            metrics.PAGE_EXPIRY.labels(page_expiry.FAILED).inc()
            return
        self.expiry_requested[aggregate_id] = now
        metrics.PAGE_EXPIRY.labels(outcome).inc()
        log.info("page expiry: %s waited past its link's expiry; cancel %s published",
                 aggregate_id, change.change_id)  # fmt: skip
