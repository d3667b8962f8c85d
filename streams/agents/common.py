"""What the stages share: connector instances, dead letters, failed-status events, keys."""

from __future__ import annotations

import asyncio
import contextvars
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import faust
from faust.streams import _current_event
from faust.types import EventT

from connectors import registry
from connectors.base import PspConnector
from connectors.errors import AuthenticationError, ConnectorError, NotFoundError
from streams import auto_replay, metrics
from streams.app import PaybusApp
from streams.deadletters import make_dead_letter
from streams.records import PaymentEvent
from streams.redaction import redact
from streams.topics import partition_key

T = TypeVar("T")


class Connectors:
    """One connector instance per PSP per worker, built on first use."""

    def __init__(self, app: PaybusApp) -> None:
        self.app = app
        self._cache: dict[str, PspConnector] = {}
        self._threads: dict[str, ThreadPoolExecutor] = {}

    def get(self, name: str) -> PspConnector:
        if name not in self._cache:
            self._cache[name] = registry.load(name, self.app.settings)
        return self._cache[name]

    def threads(self, name: str) -> ThreadPoolExecutor:
        """The threads the command stage calls PSP ``name`` on: ``connector_concurrency`` of
        them. The event loop's default pool has ``cores + 4`` (6 on 2 cores), shared with the
        normaliser, the CRM writer and the lag reader, so it capped the PSP calls in flight
        below the setting."""
        if name not in self._threads:
            self._threads[name] = ThreadPoolExecutor(
                self.app.settings.connector_concurrency, thread_name_prefix=f"paybus-{name}"
            )
        return self._threads[name]


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label of ``paybus_connector_errors_total`` for a failed connector call.

    ``not_found`` (a 404) apart from ``permanent``: the PSP does not know the object named,
    an id the CRM mistyped or, for an object the PSP created for paybus, another account's
    key (the command waits parked: :func:`streams.unknown_objects.another_account`)."""
    if isinstance(exc, AuthenticationError):  # paybus's key: an operator's to fix, alerted
        return "credentials"
    if isinstance(exc, NotFoundError):
        return "not_found"
    if isinstance(exc, ConnectorError):
        return "transient" if exc.should_retry else "permanent"
    return "unsupported" if isinstance(exc, NotImplementedError) else "unexpected"


async def connector_call(
    psp: str, operation: str, call: Callable[[], T], threads: Executor | None = None
) -> T:
    """Run a blocking connector call in a worker thread, measured as the command stage measures
    its calls: latency in ``paybus_connector_call_seconds``, result (ok, error) in
    ``paybus_connector_calls_total``, a failure's kind in ``paybus_connector_errors_total``.

    For the calls made outside the command stage (reconcile's and the janitor's status
    look-ups): unmeasured, a slow or failing PSP API showed only as held events aging.
    The error is re-raised for the caller to name its own outcome. ``threads``: where the
    call runs (the loop's default pool when None).
    """
    started = time.perf_counter()
    try:
        context = contextvars.copy_context()  # as asyncio.to_thread does
        result = await asyncio.get_running_loop().run_in_executor(threads, context.run, call)
    except Exception as exc:
        metrics.CONNECTOR_CALLS.labels(psp, operation, "error").inc()
        metrics.CONNECTOR_ERRORS.labels(psp, operation, error_kind(exc)).inc()
        raise
    finally:
        metrics.CONNECTOR_LATENCY.labels(psp, operation).observe(time.perf_counter() - started)
    metrics.CONNECTOR_CALLS.labels(psp, operation, "ok").inc()
    return result


def keyed_topic(app: PaybusApp, name: str, value_type: type[Any]) -> faust.TopicT:
    """A bus topic as the stages read it: raw string keys, Avro values of ``value_type``."""
    return app.topic(name, key_type=str, key_serializer="raw", value_type=value_type)


def json_table(app: PaybusApp, name: str) -> Any:
    """A changelogged table of JSON values by string key, partitioned as the bus topics."""
    return app.Table(
        name,
        default=None,
        schema=faust.Schema(key_type=str, key_serializer="raw", value_serializer="json"),
        partitions=app.settings.partitions,
    )


def event_key(event: PaymentEvent) -> str:
    return partition_key(event.aggregate_type, event.aggregate_id, event.payment_id)


def failed_event(
    *,
    event_id: str,
    aggregate_id: str,
    aggregate_type: str,
    reason: str,
    source: str,
    payment_id: str | None = None,
    psp: str | None = None,
    crm_record_id: str | None = None,
) -> PaymentEvent:
    """A ``failed`` status for an intent the bus could not carry out, with the reason.

    The reason is redacted: it quotes PSP refusals and exceptions, which may quote a card or
    account number, and the event travels on Kafka to the CRM."""
    attributes = {"crm_record_id": crm_record_id} if crm_record_id else {}
    return PaymentEvent(
        event_id=event_id,
        aggregate_id=aggregate_id,
        aggregate_type=aggregate_type,
        status="failed",
        occurred_at=datetime.now(UTC),
        source=source,
        psp=psp,
        payment_id=payment_id,
        reason=redact(reason)[:500],
        attributes=attributes,
    )


async def send_dead_letter(
    app: PaybusApp,
    event: EventT[Any],
    *,
    stage: str,
    reason: str,
    aggregate_id: str | None,
    attempts: int = 1,
    error_log: list[str] | None = None,
    carried: tuple[str, bytes] | None = None,
    retry_at: datetime | None = None,
) -> Any:
    """Queue a dead letter with the original bytes of ``event``; return its delivery future.

    ``carried`` is ``(part, value)`` for a letter about another record judged while ``event``
    was handled (a held event the sequencer gives up on): the letter carries that value under
    the letter id ``event``'s position plus ``part``, with ``event``'s key (same partition).

    ``retry_at`` schedules the ops role's automatic replay (:mod:`streams.auto_replay`; it
    travels as a header, so the release's readers see an ordinary letter). Such
    a letter is not counted in ``paybus_dead_letters_total``: that counter feeds the
    ``PaybusDeadLetters`` alert, which says a human is needed, and a PSP blip the bus heals
    by itself needs none (its stage counts it, e.g. the normaliser's ``retrying`` outcome).
    """
    message = event.message
    part, value = carried if carried is not None else (None, message.value)
    letter = make_dead_letter(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key if isinstance(message.key, bytes) else None,
        value=value if isinstance(value, bytes) else None,
        stage=stage,
        reason=reason,
        aggregate_id=aggregate_id,
        attempts=attempts,
        error_log=error_log or [reason],
        part=part,
    )
    if retry_at is None:
        metrics.DEAD_LETTERS.labels(stage).inc()
    return await app.send(
        # Keyed by the letter's own id: the DLQ is compacted, and letters of one aggregate
        # must not replace each other (replay orders them by original offset anyway).
        app.topic_map.dlq.name,
        key=letter.dead_letter_id.encode(),
        value=letter,
        headers=auto_replay.retry_at_headers(retry_at) or None,
    )


@contextmanager
def as_current(event: EventT[Any]) -> Iterator[None]:
    """Make ``event`` the current one, so a table write goes to its partition's changelog."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
