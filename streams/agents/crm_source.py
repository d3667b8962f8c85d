"""CRM source: poll Salesforce for new and changed records, publish them as ``CrmChange``.

A leader-only timer (one poller per deployment: two would publish every change twice) runs
:meth:`ChangePoller.fetch` in a thread, publishes the changes with ``acks=all`` keyed like any
other CRM change, and only then commits the watermark to a compacted Kafka topic
(:class:`~streams.watermarks.KafkaWatermarkStore`). The order makes a crash harmless: killed
before the commit, the next leader re-reads the same records and publishes changes with the
same ``change_id`` (derived from record id and SystemModstamp); killed after it, nothing is
read twice. The watermark is reloaded on every round, so a worker that regains leadership
continues from where the previous leader stopped, not from its own stale memory.

The poller filters out records last modified by the integration user, the user the write-back
agent writes as (same credentials), so the bus's own write-backs never come back as changes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from connectors.salesforce.budget import CallBudget
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.poller import ChangeBatch, ChangePoller
from connectors.salesforce.settings import FieldMap, build_salesforce
from streams import metrics
from streams.agents.crm_writer import record_allowance
from streams.app import PaybusApp
from streams.records import CrmChange
from streams.redaction import redact, sensitive_fields
from streams.topics import partition_key
from streams.watermarks import KafkaWatermarkStore

log = logging.getLogger(__name__)

CRM = "salesforce"
SOURCE = "poller"
#: Rounds per tick while the poller keeps returning full pages (a backlog drains quickly,
#: without one tick monopolising the leader for ever).
MAX_ROUNDS_PER_TICK = 20


def watermark_topic_name(app: PaybusApp) -> str:
    return f"{app.settings.topic_prefix}.crm.watermarks"


class CrmSourceStage:
    """The polling timer (see the module doc)."""

    def __init__(
        self, app: PaybusApp, integration_username: str, budget: CallBudget | None = None
    ) -> None:
        self.app = app
        self.budget = budget
        settings = app.settings
        self.username = integration_username
        self.fields = FieldMap.from_settings(settings.salesforce)
        self.limit = settings.salesforce.poll_limit
        self.store = KafkaWatermarkStore(
            settings.bootstrap_servers,
            watermark_topic_name(app),
            key=f"{settings.app_id}/{CRM}",
            replication_factor=settings.effective_replication_factor,
        )
        self._client: SalesforceClient | None = None
        self._user_id: str | None = None
        self.changes_topic = app.topic(
            app.topic_map.crm_changes.name, key_type=str, key_serializer="raw", value_type=CrmChange
        )
        app.timer(settings.salesforce.poll_interval_s, on_leader=True, name="paybus.crm.poll")(
            self.tick
        )

    async def tick(self) -> None:
        """Poll until a round comes back short (or the round budget is spent)."""
        try:
            for _ in range(MAX_ROUNDS_PER_TICK):
                if not await self.poll_once():
                    break
        except Exception as exc:  # Salesforce or Kafka trouble: the next tick tries again
            metrics.CRM_POLLS.labels("failed").inc()
            log.warning("CRM poll failed (retried next tick): %s", exc)

    async def poll_once(self) -> bool:
        """One fetch -> publish -> commit round; True when more may be waiting."""
        if self.budget is not None:
            metrics.CRM_BUDGET_WAIT.labels("poll").inc(await self.budget.wait_turn())
        poller, batch, calls = await asyncio.to_thread(self._fetch)
        metrics.CRM_API_CALLS.labels(CRM, "poll").inc(calls)
        if self._client is not None:
            record_allowance(self._client)
        if self.budget is not None:
            self.budget.spend(calls)
        if batch.changes:
            futures = [await self._send(change) for change in batch.changes]
            await asyncio.gather(*futures)  # acks=all: every change is durable
            metrics.CRM_CHANGES.labels(SOURCE, "published").inc(len(batch.changes))
        if batch.ignored:
            metrics.CRM_CHANGES.labels(SOURCE, "ignored").inc(batch.ignored)
        if batch.watermark == poller.watermark:
            metrics.CRM_POLLS.labels("empty").inc()
            return False
        await asyncio.to_thread(poller.commit, batch)
        metrics.CRM_POLLS.labels("committed").inc()
        return len(batch.changes) + batch.ignored >= self.limit

    def _fetch(self) -> tuple[ChangePoller, ChangeBatch, int]:
        """Build a poller on the freshly loaded watermark and fetch (runs in a thread)."""
        if self._client is None:
            self._client = SalesforceClient(build_salesforce(self.app.settings.salesforce))
        client = self._client
        before = client.api_calls
        poller = ChangePoller(
            client,
            self.store,
            self.fields,
            integration_user_id=self._user_id,
            integration_username=None if self._user_id else self.username,
            limit=self.limit,
        )
        self._user_id = poller.integration_user_id()
        batch = poller.fetch()
        return poller, batch, client.api_calls - before

    async def _send(self, change: dict[str, Any]) -> Any:
        change = mask_sensitive(change)
        key = partition_key(
            str(change["aggregate_type"]), str(change["aggregate_id"]), change.get("payment_id")
        )
        return await self.changes_topic.send(key=key, value=CrmChange(**change))


def mask_sensitive(change: dict[str, Any]) -> dict[str, Any]:
    """``change`` with any card number or IBAN a CRM user typed into a field masked.

    A polled record cannot be refused at the door as a pushed one is (there is no sender to
    answer), and it must not reach Kafka as it is (DESIGN.md). Masked, it is published like
    any other change and the router fails it with the field's name
    (:func:`streams.intents.check_intent`), so the CRM record shows what to fix.
    """
    found = sensitive_fields(change)
    if not found:
        return change
    log.warning(
        "CRM record %s: %s held a card or bank account number; masked before publishing",
        change.get("crm_record_id"), ", ".join(found),
    )  # fmt: skip
    masked = dict(change)
    for name in found:
        field, _, key = name.partition(".")
        if key:
            masked[field] = {**masked[field], key: redact(masked[field][key])}
        else:
            masked[field] = redact(masked[field])
    return masked
