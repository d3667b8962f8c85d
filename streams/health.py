"""``GET /healthz`` (liveness) and ``GET /readyz`` (readiness) on every worker's web port.

The two answer different questions, because an orchestrator acts differently on each: a failed
liveness probe restarts the process, a failed readiness probe only takes the pod out of its
Service (no webhooks routed to it) and holds a rolling update until the new pod is ready.

Both answer from state the worker already keeps, read in the request: a probe never waits on
Kafka, so it stays cheap and answers within its timeout while the broker is slow or gone.
200 with ``{"status": ..., "checks": {name: "ok" | reason}}``; 503 adds ``"failing"``, the
names of the checks that failed.

**Liveness** fails only for what a restart cures, and never because Kafka is unreachable: a
broker outage would otherwise restart every pod at once, over and over, for nothing (the
clients reconnect by themselves once it is back; readiness says so meanwhile).

* The handler answers at all: the worker's event loop (agents, web server, producer) is
  turning.
* ``app``: the Faust app has not crashed and is not stopping (a crashed app does not come back;
  a worker whose stop hangs is ended by :mod:`streams.stop_watchdog`, or by this probe).
* ``producer``: the producer service has not crashed.
* ``consumer``: the consumer thread (Faust runs the Kafka consumer on an event loop of its own)
  has not crashed, and its loop ran within :data:`LOOP_SILENT_S` (mode stamps
  ``last_wakeup_at`` from that loop about every second). A wedged consumer loop fetches
  nothing and heartbeats nothing, while the main loop still answers probes.

**Readiness** is liveness plus what the worker needs to do its job now:

* ``publish``: the producer is started and the broker answered its last metadata refresh, within
  :data:`METADATA_STALE_S`. Every role publishes (the receiver's webhooks, each stage's
  outputs). The app refreshes the producer's metadata every
  :data:`PRODUCER_METADATA_MAX_AGE_MS` (see :func:`streams.app.build_app`), so that state is
  never older than that while the broker answers: a failed refresh (a broken connection forces
  one at once) or one that hangs past the limit both show. No request is made for the probe.
* ``group`` (only for workers with agents or tables; the ``web`` role and a ``crm`` role without
  Salesforce have none and are ready once they can publish): the consumer knows its group
  coordinator (lost within a session timeout of the broker going away, as heartbeats fail), is a
  member of the current generation with no rejoin pending, and Faust has finished a rebalance
  and is not in one (``app.rebalancing`` is set from the revocation until the tables are
  recovered and the streams resumed). A worker mid-rebalance processes nothing, and a rolling
  update that waits for readiness replaces the next pod only once the new one has taken its
  partitions.

A group member with no partitions (more members than partitions) is ready: it is a healthy
standby the next rebalance may use.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import faust
from faust.web import Request, Response, View

log = logging.getLogger(__name__)

HEALTHZ = "/healthz"
READYZ = "/readyz"

#: How often the producer refreshes its metadata (aiokafka's ``metadata_max_age_ms``): one small
#: request per worker every 10 s keeps the ``publish`` check's evidence fresh.
PRODUCER_METADATA_MAX_AGE_MS = 10_000
#: Seconds without a successful metadata refresh after which the broker counts as unreachable
#: (three refresh periods: one slow answer is not an outage).
METADATA_STALE_S = 3 * PRODUCER_METADATA_MAX_AGE_MS / 1000
#: Seconds the consumer thread's loop may go without running before liveness fails (it wakes
#: about every second; thirty is far beyond a busy moment).
LOOP_SILENT_S = 30.0

OK = "ok"


@dataclass(frozen=True)
class Snapshot:
    """What the checks read, taken from the app at one moment (see :func:`snapshot`)."""

    app_crash: str | None = None
    app_stopping: bool = False
    producer_started: bool = False
    producer_crash: str | None = None
    #: Seconds since the producer's last successful metadata refresh; None: never.
    metadata_age_s: float | None = None
    #: The latest metadata refresh failed (it is newer than the latest success).
    metadata_failed: bool = False
    consumer_crash: str | None = None
    #: Seconds since the consumer thread's loop last ran; None: not running yet.
    consumer_loop_silent_s: float | None = None
    needs_group: bool = False
    consumer_started: bool = False
    coordinator_known: bool = False
    group_member: bool = False
    rejoin_pending: bool = False
    rebalancing: bool = False
    rebalances: int = 0


def liveness(s: Snapshot) -> dict[str, str]:
    """Each liveness check's verdict: ``"ok"`` or why not (nothing here depends on Kafka)."""
    app = OK
    if s.app_crash is not None:
        app = f"crashed: {s.app_crash}"
    elif s.app_stopping:
        app = "stopping"
    consumer = OK
    if s.consumer_crash is not None:
        consumer = f"consumer thread crashed: {s.consumer_crash}"
    elif s.consumer_loop_silent_s is not None and s.consumer_loop_silent_s > LOOP_SILENT_S:
        consumer = f"consumer thread's event loop silent for {s.consumer_loop_silent_s:.0f} s"
    producer = OK if s.producer_crash is None else f"crashed: {s.producer_crash}"
    return {"app": app, "producer": producer, "consumer": consumer}


def readiness(s: Snapshot) -> dict[str, str]:
    """Liveness's checks plus ``publish`` and, for workers with agents, ``group``."""
    checks = liveness(s)
    checks["publish"] = _publish(s)
    if s.needs_group:
        checks["group"] = _group(s)
    return checks


def _publish(s: Snapshot) -> str:
    if not s.producer_started:
        return "producer not started"
    if s.metadata_age_s is None:
        return "broker not reached yet"
    if s.metadata_failed:
        return "broker unreachable: the last metadata refresh failed"
    if s.metadata_age_s > METADATA_STALE_S:
        return f"broker unreachable: no metadata for {s.metadata_age_s:.0f} s"
    return OK


def _group(s: Snapshot) -> str:
    if not s.consumer_started:
        return "consumer not started"
    if not s.coordinator_known:
        if s.rebalances:  # it had one: heartbeats failed for a session timeout, or were refused
            return "group coordinator lost (broker unreachable?)"
        return "looking for the group coordinator"
    if not s.group_member:
        return "joining the consumer group"
    if s.rebalancing or s.rejoin_pending:
        return "rebalancing"
    if s.rebalances == 0:
        return "waiting for the first partition assignment"
    return OK


def verdict(checks: dict[str, str], good: str, bad: str) -> tuple[int, dict[str, Any]]:
    """The status code and JSON body for ``checks``: 200 when all are ok, else 503."""
    failing = [name for name, result in checks.items() if result != OK]
    if not failing:
        return 200, {"status": good, "checks": checks}
    return 503, {"status": bad, "failing": failing, "checks": checks}


def _crash(service: Any) -> str | None:
    if service is None or not getattr(service, "crashed", False):
        return None
    return repr(getattr(service, "crash_reason", None))[:200]


def _attr(obj: Any, *path: str) -> Any:
    """``obj.a.b...`` along ``path``, or None where a link is missing (not created yet)."""
    for name in path:
        obj = getattr(obj, name, None)
    return obj


def loop_silent_s(thread: Any, mono: float) -> float | None:
    """Seconds since a mode ``ServiceThread``'s own loop last ran its keepalive (which stamps
    ``last_wakeup_at`` about every 1.1 s), or None before the first stamp."""
    woke = float(getattr(thread, "last_wakeup_at", 0.0) or 0.0)
    return mono - woke if woke else None


def snapshot(app: faust.App, wall: float | None = None, mono: float | None = None) -> Snapshot:
    """Read the app's state (``wall``: ``time.time()``, ``mono``: ``time.monotonic()``).

    Private attributes of Faust, mode and aiokafka are read where they hold the state (pinned
    by the integration tests); ``app._producer`` and ``app._consumer`` rather than the
    properties, which would create a client that does not exist yet. The consumer thread's
    attributes are plain values, safe to read from this thread.
    """
    wall = time.time() if wall is None else wall
    mono = time.monotonic() if mono is None else mono
    producer: Any = app._producer
    cluster = _attr(producer, "_producer", "client", "cluster")
    success_ms = float(getattr(cluster, "_last_successful_refresh_ms", 0) or 0)
    attempt_ms = float(getattr(cluster, "_last_refresh_ms", 0) or 0)
    consumer: Any = app._consumer
    thread = _attr(consumer, "_thread")
    coordinator = _attr(thread, "_consumer", "_coordinator")
    rejoin = _attr(coordinator, "_rejoin_needed_fut")
    return Snapshot(
        app_crash=_crash(app),
        app_stopping=bool(app.should_stop),
        producer_started=bool(producer is not None and producer.started),
        producer_crash=_crash(producer),
        metadata_age_s=(wall - success_ms / 1000) if success_ms else None,
        metadata_failed=attempt_ms > success_ms,
        consumer_crash=_crash(thread) or _crash(consumer),
        consumer_loop_silent_s=loop_silent_s(thread, mono),
        needs_group=len(app.agents) > 0 or len(app.tables) > 0,
        consumer_started=bool(consumer is not None and consumer.started)
        and coordinator is not None,
        coordinator_known=_attr(coordinator, "coordinator_id") is not None,
        group_member=getattr(coordinator, "generation", -1) != -1,  # aiokafka's "none yet"
        rejoin_pending=bool(rejoin is not None and rejoin.done()),
        rebalancing=bool(app.rebalancing),
        rebalances=int(app.rebalancing_count),
    )


def liveness_answer(app: faust.App) -> tuple[int, dict[str, Any]]:
    """``/healthz``'s status and body. A check that breaks (a library renamed what it
    reads) is the check's fault, not the worker's: 200, saying so, and no restart."""
    try:
        return verdict(liveness(snapshot(app)), "alive", "not alive")
    except Exception as exc:
        log.warning("liveness check failed: %r", exc)
        return 200, {"status": "alive", "checks": {"snapshot": f"check failed: {exc!r}"}}


def readiness_answer(app: faust.App) -> tuple[int, dict[str, Any]]:
    """``/readyz``'s status and body; a check that breaks cannot vouch: 503, saying why."""
    try:
        return verdict(readiness(snapshot(app)), "ready", "not ready")
    except Exception as exc:
        log.warning("readiness check failed: %r", exc)
        checks = {"snapshot": f"check failed: {exc!r}"}
        return 503, {"status": "not ready", "failing": ["snapshot"], "checks": checks}


def attach(app: faust.App) -> None:
    """Serve :data:`HEALTHZ` and :data:`READYZ` on ``app``'s web port."""

    @app.page(HEALTHZ)
    class Healthz(View):
        """Liveness: 503 only for what a restart cures (see :mod:`streams.health`)."""

        async def get(self, request: Request) -> Response:
            status, body = liveness_answer(app)
            return self.json(body, status=status)

    @app.page(READYZ)
    class Readyz(View):
        """Readiness: 503 naming each failing check until the worker can do its job."""

        async def get(self, request: Request) -> Response:
            status, body = readiness_answer(app)
            return self.json(body, status=status)
