"""CRM write-back agent: ``paybus.payments.status`` -> Salesforce, batched and version-guarded.

Updates are taken in batches (:func:`~streams.agents.batches.take_ready`: the first update
of a batch waits at most ``salesforce.flush_interval_s`` for company, and a backlog forms
batches of up to ``updates_per_batch`` without waiting) because the org's API allowance is
the scarce resource: :class:`~connectors.salesforce.writer.CrmWriter` coalesces a batch per
record and reads and writes through the Composite resource (one call for the reads of the
records it has not seen, one per 5 collections of up to 200 records written, all objects
together), however many updates the batch held.
The writer caches the versions it read and wrote. The cache is safe only while this worker
alone writes its partitions' records, so it is forgotten on every rebalance (partitions
revoked or assigned: another worker may have written them meanwhile). The blocking HTTP work
runs in a thread. With ``salesforce.calls_per_minute`` set, each write first waits its turn in
a :class:`~connectors.salesforce.budget.CallBudget` shared with the poller (the flush wait
bounds calls per flush, not per day); updates arriving meanwhile make the next batch larger.

Every update of a batch ends in exactly one named, counted outcome before the batch returns
(and Faust acks its offsets):

* ``written`` / ``skipped_older`` (the CRM already shows this or a newer ``Bus_Seq__c``: a
  replay, a duplicate, or superseded within the batch);
* ``not_found`` with no ``crm_record_id``: the aggregate never came from the CRM (a shop
  payment), so there is nothing to update; counted and skipped;
* ``failed_permanent`` (validation rule, a named record that is gone): dead-lettered, and
  e-mailed when an SMTP relay is configured, because retrying cannot fix it and staff are
  looking at a wrong status;
* ``retries_exhausted``: a record's retryable failure (a row lock) is retried in-stage with
  exponential backoff and jitter (only the failing updates; the rest of the batch is already
  settled), up to ``salesforce.write_attempts`` writes; what still fails is dead-lettered for
  replay. Salesforce not answering at all (unreachable, 5xx, 429, the org out of API calls)
  is no record's fault and ends in no dead letter: the batch is retried, at most
  ``salesforce.outage_retry_max_s`` apart, until the CRM is back (``paybus_crm_unavailable``
  is 1 meanwhile), while the updates behind it wait in Kafka.

An outage holds one batch for as long as it lasts, so it must not cost the worker its place:
the worker stays in its consumer group with its partitions and heartbeats (while the writer
waits, the consumer counts as polling: :mod:`streams.consumer_waits`; otherwise aiokafka
dropped it after the max poll interval and it never rejoined), the writer's full buffer
does not stop the worker's other stages (:class:`~streams.app.PatientTopic`), and Faust's
stall errors and stall repairs leave its partitions alone meanwhile. When the CRM is back,
the batch and then the backlog are written in order, each update once, and the commits
catch up (``tests/integration/streams/test_crm_outage_membership.py``).

A crash anywhere before the ack re-delivers the batch; the version guard makes the rewrite a
no-op, so at-least-once delivery is exactly-once in the CRM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import requests
from faust.types import EventT
from simple_salesforce.exceptions import SalesforceAuthenticationFailed

from connectors.errors import ConnectorError, TransientError
from connectors.retry import backoff_delay, call_with_retries
from connectors.salesforce.alerts import FailureAlerter, SmtpSettings
from connectors.salesforce.budget import CallBudget
from connectors.salesforce.client import SalesforceClient
from connectors.salesforce.error_map import is_unavailable, map_error
from connectors.salesforce.guard_rule import MARKER, NO_RECORD_MARKER, OrgGuards, org_guards
from connectors.salesforce.settings import FieldMap, build_salesforce
from connectors.salesforce.writer import CrmWriter, Outcome, UpdateResult, WriteReport, redact
from streams import metrics
from streams.agents.batches import batched
from streams.agents.common import send_dead_letter
from streams.agents.crm_outcomes import (
    FAILED_PERMANENT,
    RETRIES_EXHAUSTED,
    disposition,
    note_error,
    redacted,
)
from streams.app import PatientTopic, PaybusApp
from streams.consumer_waits import waiting_on
from streams.errors import ConfigurationError
from streams.records import StatusUpdate

log = logging.getLogger(__name__)

STAGE = "crm-writer"
CRM = "salesforce"
#: Backoff between write attempts (seconds): doubles from the base, capped, jittered.
RETRY_BASE_S = 0.5
RETRY_CAP_S = 8.0
#: When the version-guard rule is looked up again: after a failed lookup, and after one that
#: found it (an admin may deactivate it; until then, writes by Id trust it unread).
GUARD_LOOKUP_RETRY_S = 300.0
GUARD_RECHECK_S = 3600.0
#: ``paybus_crm_version_guard`` modes: the writer reads first; the org's rule guards records
#: written by Id; and also the no-create rule, so records named by external id are upserted.
GUARD_MODES = ("read", "rule", "upsert")


def record_allowance(client: SalesforceClient) -> None:
    """Export the org's API usage from the client's last response (the whole org's, not just
    this bus's calls: the allowance is shared), for the allowance alert."""
    usage = client.api_usage
    if usage is not None:
        metrics.CRM_API_ALLOWANCE.labels(CRM, "used").set(usage.used)
        metrics.CRM_API_ALLOWANCE.labels(CRM, "limit").set(usage.limit)


def smtp_settings(app: PaybusApp) -> SmtpSettings | None:
    """Alert e-mail settings, or None when alerts are off (no host or no recipient)."""
    crm = app.settings.crm
    if not crm.alert_smtp_host or not crm.alert_to:
        return None
    password = crm.alert_smtp_password
    return SmtpSettings(
        host=crm.alert_smtp_host,
        port=crm.alert_smtp_port,
        sender=crm.alert_from,
        recipients=tuple(crm.alert_to),
        starttls=crm.alert_smtp_starttls,
        username=crm.alert_smtp_username,
        password=password.get_secret_value() if password is not None else None,
        ca_bundle=str(crm.alert_smtp_ca_bundle) if crm.alert_smtp_ca_bundle else None,
    )


class CrmWriterStage:
    """The write-back agent (see the module doc)."""

    #: When to look the version-guard rule up again (after a failed lookup), or None.
    _guard_lookup_due: float | None = None

    def __init__(self, app: PaybusApp, budget: CallBudget | None = None) -> None:
        metrics.expect_dead_letters(STAGE)
        self.app = app
        self.budget = budget
        sf = app.settings.salesforce
        self.take = sf.updates_per_batch or sf.batch_size
        self.within = sf.flush_interval_s
        self.attempts = sf.write_attempts
        self.outage_cap_s = sf.outage_retry_max_s
        if sf.session_id is None and not (sf.username and sf.password):
            raise ConfigurationError(
                "Salesforce write-back needs PAYBUS_SALESFORCE__SESSION_ID, or __USERNAME and "
                "__PASSWORD (with __SECURITY_TOKEN)"
            )
        self.fields = FieldMap.from_settings(sf)
        smtp = smtp_settings(app)
        self.alerter = FailureAlerter(smtp) if smtp else None
        self._writer: CrmWriter | None = None
        self.topic_name = app.topic_map.status_updates.name
        self.status_topic = PatientTopic(
            app,
            topics=[self.topic_name],
            key_type=str,
            key_serializer="raw",
            value_type=StatusUpdate,
        )
        app.agent(self.status_topic, name="paybus.crm.writer")(
            batched(
                app.settings, STAGE, self.process_batch, max_events=self.take, linger_s=self.within
            )
        )
        app.on_partitions_revoked.connect(self.on_rebalance)
        app.on_partitions_assigned.connect(self.on_rebalance)

    def writer(self) -> CrmWriter:
        """The writer, built on first use (a password login makes a call; not at attach).

        Called in the write's worker thread: the login and the rule look-ups are HTTP calls
        and stay off the event loop."""
        if self._writer is None:
            client = SalesforceClient(build_salesforce(self.app.settings.salesforce))
            guards = self._guards(client)
            self._writer = CrmWriter(client, self.fields, guarded=guards.guarded,
                                     upsertable=guards.upsertable)  # fmt: skip
        elif self._guard_lookup_due is not None and time.monotonic() >= self._guard_lookup_due:
            guards = self._guards(self._writer.client)
            self._writer.guarded, self._writer.upsertable = guards.guarded, guards.upsertable
        return self._writer

    def _guards(self, client: SalesforceClient) -> OrgGuards:
        """The objects the org's validation rules guard (``version_guard=rule``), looked up
        again hourly; a failed lookup keeps the read guard and is tried again in 5 minutes."""
        sf = self.app.settings.salesforce
        guards = OrgGuards()
        self._guard_lookup_due = None
        if sf.version_guard == "rule":
            try:
                guards = org_guards(client, self.fields.objects(), sf.guard_rule, sf.no_create_rule)
                self._guard_lookup_due = time.monotonic() + GUARD_RECHECK_S
            except ConnectorError as err:
                self._guard_lookup_due = time.monotonic() + GUARD_LOOKUP_RETRY_S
                log.warning("CRM version guard: rule lookup failed (%s); reading first", err)
        for mapping in self.fields.objects():
            obj = mapping.object_name
            mode = (
                "upsert" if obj in guards.upsertable else "rule" if obj in guards.guarded
                else "read"
            )  # fmt: skip
            for each in GUARD_MODES:
                metrics.CRM_VERSION_GUARD.labels(obj, each).set(1 if each == mode else 0)
            missing = {
                "read": (sf.guard_rule, MARKER, "its records are read before they are written"),
                "rule": (sf.no_create_rule, NO_RECORD_MARKER,
                         "its records named by external id are read before they are written"),
            }.get(mode)  # fmt: skip
            if sf.version_guard == "rule" and missing is not None:
                log.warning(
                    "CRM version guard: no active validation rule %r with %s on %s; %s "
                    "(deploy/salesforce has the rules)", *missing[:2], obj, missing[2],
                )  # fmt: skip
        return guards

    async def on_rebalance(self, app: Any, /, *partitions: Any, **kwargs: Any) -> None:
        """Partitions revoked or assigned (the app's signals, sent as ``(app, partitions,
        signal=...)``): forget the cached CRM versions (see the module doc).

        A write still running keeps the cache it started with; the next one reads afresh.
        """
        if self._writer is not None:
            self._writer.forget()
            log.info("CRM write-back: version cache forgotten (partitions rebalanced)")

    async def process_batch(self, events: Sequence[EventT[StatusUpdate]]) -> dict[str, int]:
        """Write a batch until every update is settled; return the outcome counts.

        Dead letters are delivered before this returns, and Faust acks the batch only after
        it returns, so no offset is committed for an update that is not settled. An update
        that failed because Salesforce did not answer (:func:`is_unavailable`: unreachable,
        5xx, 429, out of API calls) is retried until the CRM is back, however long that takes,
        and the updates behind it wait in Kafka, not in the DLQ; other retryable failures (a
        row lock) get ``salesforce.write_attempts``.
        """
        updates = [cast(StatusUpdate, e.value) for e in events]
        final: dict[int, UpdateResult] = {}
        errors: dict[int, list[str]] = {}
        tries: dict[int, int] = {}  # writes of each update (its dead letter's attempts)
        spent: dict[int, int] = {}  # of them, those Salesforce answered: write_attempts' count
        pending = list(range(len(updates)))
        attempt = 0
        outage_since: float | None = None
        held = contextlib.ExitStack()  # the worker's group membership, through an outage
        try:
            while pending:
                attempt += 1
                report = await self._write([updates[i] for i in pending])
                outage = False
                again: list[int] = []
                hint: float | None = None
                for index, result in zip(pending, report.results, strict=True):
                    tries[index] = tries.get(index, 0) + 1
                    if result.error is not None:
                        note_error(errors.setdefault(index, []), attempt, result.error)
                    retry = result.outcome is Outcome.FAILED and result.should_retry
                    unavailable = retry and is_unavailable(result.error)
                    outage = outage or unavailable
                    if not unavailable:  # writes an outage swallowed are not the record's
                        spent[index] = spent.get(index, 0) + 1
                    if retry and (unavailable or spent[index] < self.attempts):
                        again.append(index)
                        after = result.error.retry_after_s if result.error else None
                        hint = max(hint or 0.0, after) if after is not None else hint
                        code = (result.error.code if result.error else None) or "unknown"
                        metrics.CRM_WRITE_RETRIES.labels(code).inc()
                        continue
                    final[index] = result
                if again and outage:
                    if outage_since is None:
                        outage_since = time.monotonic()
                        held.enter_context(waiting_on(self.app, self.topic_name))
                    metrics.CRM_UNAVAILABLE.set(1)
                    delay = backoff_delay(min(attempt, 30), base_s=RETRY_BASE_S,
                                          cap_s=self.outage_cap_s, retry_after_s=hint)  # fmt: skip
                    log.warning(
                        "CRM unavailable for %.0fs (%s): %d update(s) wait; again in %.1fs",
                        time.monotonic() - outage_since,
                        next(r.error for r in report.results if is_unavailable(r.error)),
                        len(again), delay,
                    )  # fmt: skip
                    await asyncio.sleep(delay)
                elif again:
                    delay = backoff_delay(
                        attempt, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S, retry_after_s=hint
                    )
                    log.warning(
                        "CRM write: %d update(s) failed retryably (attempt %d/%d); again in "
                        "%.1fs", len(again), attempt, self.attempts, delay,
                    )  # fmt: skip
                    await asyncio.sleep(delay)
                pending = again
        finally:
            held.close()
            if outage_since is not None:
                metrics.CRM_UNAVAILABLE.set(0)
                log.warning("CRM available again after %.0fs", time.monotonic() - outage_since)
        return await self._settle(events, final, errors, tries)

    async def _write(self, updates: list[StatusUpdate]) -> WriteReport:
        """One write in a thread. The writer reports Salesforce failures per update; anything
        else it raises fails the whole attempt: Salesforce unreachable (a ``requests`` error,
        from the login) or the login refused as an outage, anything else (a bug, a surprise
        from the HTTP stack) as retryable, so it is retried and, if it persists, lands in the
        DLQ with the error instead of killing the agent and stalling every partition it
        owns."""
        if self.budget is not None:
            metrics.CRM_BUDGET_WAIT.labels("write").inc(await self.budget.wait_turn())
        started = time.perf_counter()
        try:
            report = await asyncio.to_thread(lambda: self.writer().write(updates))
        except Exception as exc:
            error: ConnectorError
            if isinstance(exc, requests.RequestException):
                # Salesforce unreachable where the writer maps nothing (the password login
                # made when it is built: a worker started during an outage) is that outage
                # all the same (is_unavailable), not a bug to dead-letter after write_attempts
                error = map_error(exc)
            elif isinstance(exc, SalesforceAuthenticationFailed):
                # The login refused, or answered with a 5xx that simple-salesforce reports
                # the same way (no status): no update can be written until it works again,
                # which is no update's fault. Waited out like an outage (the updates stay in
                # Kafka, paybus_crm_unavailable and its alert say why), not dead-lettered.
                error = TransientError(f"Salesforce login failed: {exc}", psp=CRM)
            else:
                log.exception("CRM write of %d update(s) raised", len(updates))
                error = TransientError(f"{type(exc).__name__}: {exc}", psp=CRM, code="UNEXPECTED")
            results = [UpdateResult(u, Outcome.FAILED, error=error) for u in updates]
            report = WriteReport(results, 0)
        metrics.CRM_WRITE_SECONDS.observe(time.perf_counter() - started)
        metrics.CRM_API_CALLS.labels(CRM, "write").inc(report.api_calls)
        if self._writer is not None:
            record_allowance(self._writer.client)
        if self.budget is not None:
            self.budget.spend(report.api_calls)
        return report

    async def _settle(
        self,
        events: Sequence[EventT[StatusUpdate]],
        final: dict[int, UpdateResult],
        errors: dict[int, list[str]],
        tries: dict[int, int],
    ) -> dict[str, int]:
        """Count every update's outcome, dead-letter the failures, e-mail the permanent ones."""
        counts: dict[str, int] = {}
        futures = []
        to_alert: list[UpdateResult] = []
        for index in sorted(final):
            result = final[index]
            outcome = disposition(result)
            counts[outcome] = counts.get(outcome, 0) + 1
            update = result.update
            metrics.CRM_RECORDS_WRITTEN.labels(outcome).inc()
            metrics.EVENTS.labels(STAGE, outcome, update.aggregate_type, update.source).inc()
            if outcome not in (FAILED_PERMANENT, RETRIES_EXHAUSTED):
                continue
            reason = (
                f"{outcome}: {update.aggregate_type} {update.aggregate_id} seq {update.seq} "
                f"-> {update.to_status}: {result.error or 'no matching CRM record'}"
            )
            futures.append(
                await send_dead_letter(
                    self.app, events[index], stage=STAGE, reason=redact(reason)[:1000],
                    aggregate_id=update.aggregate_id, attempts=tries.get(index, 1),
                    error_log=[redact(e) for e in errors.get(index, [reason])],
                )
            )  # fmt: skip
            if outcome == FAILED_PERMANENT:
                to_alert.append(redacted(result))
        await asyncio.gather(*futures)
        if to_alert:
            await self._alert(to_alert)
        return counts

    async def _alert(self, failures: list[UpdateResult]) -> None:
        """E-mail the failures (best effort: the dead letters already hold them durably)."""
        alerter = self.alerter
        if alerter is None:
            metrics.CRM_ALERTS.labels("disabled").inc()
            log.warning("CRM write-back: %d permanent failure(s); no alert relay", len(failures))
            return

        def send() -> bool:
            return call_with_retries(lambda: alerter.send(failures), attempts=3)

        try:
            await asyncio.to_thread(send)
        except TransientError as exc:
            metrics.CRM_ALERTS.labels("failed").inc()
            log.error("CRM write-back alert for %d failure(s) not sent: %s", len(failures), exc)
            return
        metrics.CRM_ALERTS.labels("sent").inc()
