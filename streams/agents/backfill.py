"""Scheduled backfill: every ``ops.backfill_interval_s``, the leader re-reads each PSP's events.

The same loop as ``paybus backfill`` (:mod:`streams.backfill`), run by a Faust timer on the
leader only (one worker of the group reads the PSP's log, not N). Off unless the interval is
set.

Where each run starts: one interval before the previous run of this process began, or two
intervals back when there was none (:func:`streams.backfill.scheduled_since`). Nothing is
stored: the overlap re-reads events the sequencer already has, and it drops them as
duplicates, which costs one PSP list call and a few records; a durable cursor would only
matter after an outage longer than two intervals, and after that an operator runs
``paybus backfill --since`` over the outage (the DLQ and lag alerts say when). A failed run
keeps the previous start, so the next run covers its window too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from connectors.errors import ConnectorError, UnknownConnectorError
from streams import metrics
from streams.agents.common import Connectors
from streams.app import PaybusApp
from streams.backfill import BackfillReport, run_backfill, scheduled_since
from streams.records import PaymentEvent

log = logging.getLogger(__name__)


class BackfillStage:
    """A leader-only timer re-publishing each PSP's recent events (when configured)."""

    def __init__(
        self,
        app: PaybusApp,
        psps: list[str],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.app = app
        self.psps = list(psps)
        self.interval_s = app.settings.ops.backfill_interval_s
        self.connectors = Connectors(app)
        self.clock = clock
        #: PSP -> when its last successful run began (this process only; see module doc).
        self.last_start: dict[str, datetime] = {}
        #: PSPs whose connector has no event log to read; not asked again.
        self.unsupported: set[str] = set()
        self.events_topic = app.topic(
            app.topic_map.payment_events.name,
            key_type=str,
            key_serializer="raw",
            value_type=PaymentEvent,
        )
        if self.interval_s is not None:
            app.timer(self.interval_s, on_leader=True, name="paybus.backfill")(self.tick)

    async def tick(self) -> None:
        """One scheduled run over every PSP; a failure of one never stops the others."""
        for psp in self.psps:
            if psp in self.unsupported:
                continue
            try:
                await self.run_once(psp)
            except Exception as exc:  # the timer must survive; the next tick retries
                metrics.BACKFILL_RUNS.labels(psp, "error").inc()
                log.warning("scheduled backfill of %s failed: %s", psp, type(exc).__name__)

    async def run_once(self, psp: str) -> BackfillReport | None:
        """Read ``psp``'s events since the window start and publish them (acks=all)."""
        started = self.clock()
        since = scheduled_since(self.last_start.get(psp), started, self.interval_s or 0.0)
        try:
            connector = self.connectors.get(psp)
            events = await asyncio.to_thread(lambda: list(connector.backfill(since)))
        except (NotImplementedError, UnknownConnectorError):
            self.unsupported.add(psp)
            metrics.BACKFILL_RUNS.labels(psp, "unsupported").inc()
            log.info("scheduled backfill: %s has no event log to read; skipped from now on", psp)
            return None
        except ConnectorError as exc:
            metrics.BACKFILL_RUNS.labels(psp, "error").inc()
            log.warning("scheduled backfill of %s failed: %s", psp, exc)
            return None
        futures: list[Any] = []
        queued: list[tuple[str, PaymentEvent]] = []
        report = run_backfill(psp, since, events, lambda key, event: queued.append((key, event)))
        for key, event in queued:
            futures.append(await self.events_topic.send(key=key, value=event))
        await asyncio.gather(*futures)
        metrics.BACKFILL_EVENTS.labels(psp, "published").inc(report.published_total)
        metrics.BACKFILL_EVENTS.labels(psp, "unresolved").inc(len(report.unresolved))
        metrics.BACKFILL_EVENTS.labels(psp, "foreign").inc(report.foreign)
        metrics.BACKFILL_RUNS.labels(psp, "ok").inc()
        if report.unresolved:
            log.warning(
                "scheduled backfill of %s: %d event(s) name no known aggregate, not published: %s",
                psp,
                len(report.unresolved),
                ", ".join(f"{e.event_id} ({e.psp_object_id})" for e in report.unresolved[:20]),
            )
        self.last_start[psp] = started
        return report
