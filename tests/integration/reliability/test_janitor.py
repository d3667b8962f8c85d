"""The janitor, end to end: a payment whose status changes at the PSP without any webhook
reaching the bus is looked up once it has been stuck for ``ops.janitor_stuck_after_s``, and
what the janitor learns enters through the sequencer as the aggregate's next status update.

One real worker (every role) on the embedded broker, the GoCardless sandbox behind a proxy
that logs the worker's look-ups (``GET /payments/{id}``). The sandbox has no webhook URL, so
its events stay in its outbox; PSP backfill is off by default: the janitor is the only way the
bus can learn that a payment moved on. A payment already final (cancelled through the bus) is
never looked up.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams.admin import create_topics
from streams.agents.ops import SETTLED
from streams.broker import EmbeddedBroker
from streams.publisher import Publisher
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess

from .support import (
    OutageProxy,
    Reader,
    cancel_intent,
    create_intent,
    gocardless,
    metric_sum,
    statuses,
    wait_until,
    worker_env,
)

pytestmark = [pytest.mark.broker]
INTERVAL_S, STUCK_AFTER_S = 1.0, 2.0
#: How far the janitor's clock reading may precede the request the proxy logs.
LOOKUP_SKEW = timedelta(seconds=0.3)
_LOOKUP = re.compile(r"^/payments/(PM[^/?]+)/?(?:\?.*)?$")


class LookupLog(OutageProxy):
    """The outage proxy (never down here) that also records every ``GET /payments/{id}`` the
    worker makes, with its wall-clock time: the janitor's look-ups (the connector reads a
    payment otherwise only when a cancel is refused, which does not happen here)."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.lookups: list[tuple[datetime, str]] = []

    def _record(self, method: str, path: str, body: bytes, status: int) -> None:
        if method == "GET" and (m := _LOOKUP.match(path)):
            self.lookups.append((datetime.now(UTC), m.group(1)))
        super()._record(method, path, body, status)

    def of(self, psp_id: str) -> list[datetime]:
        with self._lock:
            return [at for at, pid in self.lookups if pid == psp_id]


def _fresh_lookups(at: list[datetime], updates: list[dict[str, Any]]) -> list[str]:
    """Look-ups made before the aggregate's status then had lasted ``STUCK_AFTER_S`` (less a
    little: the janitor's clock reading precedes its request), or after it was final."""
    bad = []
    stuck = timedelta(seconds=STUCK_AFTER_S) - LOOKUP_SKEW
    for when in at:
        # An update the look-up itself produced is stamped with the janitor's clock reading,
        # which precedes the request the proxy saw: it is not the status "then".
        known = [
            u for u in updates
            if u["occurred_at"] <= when
            and not (u["source"] == "janitor" and when - u["occurred_at"] < LOOKUP_SKEW)
        ]  # fmt: skip
        last = known[-1] if known else None
        if last is None or when - last["occurred_at"] < stuck:
            bad.append(f"{when.isoformat()} (status then: {last})")
        elif last["to_status"] in SETTLED["payment"]:
            bad.append(f"{when.isoformat()} (already {last['to_status']})")
    return bad


@pytest.mark.timeout(90)
def test_janitor_finds_status_changed_silently_at_psp(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    stuck, final = f"stuck-{uuid.uuid4().hex[:8]}", f"final-{uuid.uuid4().hex[:8]}"
    status_topic = tm.status_updates.name
    with gocardless() as (sandbox, _proxy, mandate):
        # no webhook ever reaches the bus: the sandbox has nowhere to send one
        assert sandbox.admin("GET", "/_sandbox/webhooks")["url"] is None
        looked = LookupLog(sandbox.base_url)
        env = worker_env(
            broker.bootstrap, topic_prefix, tmp_path, looked.base_url,
            PAYBUS_OPS__JANITOR_INTERVAL_S=str(INTERVAL_S),
            PAYBUS_OPS__JANITOR_STUCK_AFTER_S=str(STUCK_AFTER_S),
        )  # fmt: skip
        assert "PAYBUS_OPS__BACKFILL_INTERVAL_S" not in env  # PSP backfill stays off
        reader = Reader(broker.bootstrap, {status_topic: "StatusUpdate"})
        worker = WorkerProcess.paybus(env, tmp_path / "worker.log").start()
        started = time.monotonic()

        def updates(agg: str) -> list[dict[str, Any]]:
            reader.poll()
            by_id = statuses(reader.records[status_topic]).get(agg, {})
            return sorted(by_id.values(), key=lambda u: u["seq"])

        def latest(agg: str) -> str | None:
            seen = updates(agg)
            return seen[-1]["to_status"] if seen else None

        def janitor_moved(psp_id: str, before: str, to: str, seq: int) -> dict[str, Any]:
            """Wait (a few janitor periods) for ``stuck`` to go ``before`` -> ``to``, the next
            ``seq``, from an event the janitor made."""
            wait_until(lambda: latest(stuck) == to, 6 * STUCK_AFTER_S, f"{stuck} {to}", 0.2)
            update = updates(stuck)[-1]
            assert update["seq"] == seq, update
            assert update["source"] == "janitor", update
            assert update["from_status"] == before, update
            assert update["psp_object_id"] == psp_id, update
            return update

        def psp_moves(psp_id: str) -> list[str]:
            """Advance every open sandbox object one step; what happened to ``psp_id``."""
            events = sandbox.advance(steps=1)
            return [e["action"] for e in events if e["links"].get("payment") == psp_id]

        try:
            worker.wait_ready()
            with Publisher(broker.bootstrap, topic_prefix=topic_prefix) as pub:
                pub.publish_crm_changes(
                    [create_intent(stuck, mandate), create_intent(final, mandate)]
                )
                wait_until(lambda: latest(final) is not None, 40, f"{final} created", 0.2)
                pub.publish_crm_change(cancel_intent(final))
            wait_until(lambda: latest(stuck) == "pending_submission", 40, f"{stuck} created", 0.2)
            wait_until(lambda: latest(final) == "cancelled", 30, f"{final} cancelled", 0.2)
            first = updates(stuck)
            psp_id = first[-1]["psp_object_id"]
            final_psp_id = updates(final)[-1]["psp_object_id"]
            assert psp_id and final_psp_id
            assert [u["seq"] for u in first] == list(range(1, len(first) + 1))
            print("first statuses:", [u["to_status"] for u in first])

            # the PSP moves the payment on; the event stays in the sandbox's outbox
            assert psp_moves(psp_id) == ["submitted"]
            moved_at = time.monotonic()
            one = janitor_moved(psp_id, "pending_submission", "submitted", len(first) + 1)
            print(f"submitted via the janitor {time.monotonic() - moved_at:.1f}s after the PSP")

            # and once more: a second silent change is found the same way
            assert psp_moves(psp_id) == ["confirmed"]
            moved_at = time.monotonic()
            janitor_moved(psp_id, "submitted", "confirmed", one["seq"] + 1)
            print(f"confirmed via the janitor {time.monotonic() - moved_at:.1f}s after the PSP")

            # through the sequencer: it applied exactly the janitor's two events
            applied = {"stage": "sequencer", "outcome": "applied", "source": "janitor"}
            assert metric_sum(worker, "paybus_events_total", **applied) == 2
            assert metric_sum(worker, "paybus_janitor_total", result="changed") == 2
            assert metric_sum(worker, "paybus_webhooks_total") == 0
            assert sandbox.admin("GET", "/_sandbox/outbox")["event_ids"], "events undelivered"
            # the stuck payment was looked up, each time only once its status had lasted
            # STUCK_AFTER_S; the cancelled one never after it was final, nor while fresh
            assert len(looked.of(psp_id)) >= 2
            assert _fresh_lookups(looked.of(psp_id), updates(stuck)) == []
            assert _fresh_lookups(looked.of(final_psp_id), updates(final)) == []
            print(f"look-ups: {psp_id} {len(looked.of(psp_id))}, "
                  f"{final_psp_id} {len(looked.of(final_psp_id))}")  # fmt: skip
            # nothing more for either aggregate than asked for, in order, no seq skipped
            last = updates(stuck)
            assert [u["to_status"] for u in last] == [
                *(u["to_status"] for u in first),
                "submitted",
                "confirmed",
            ]
            assert [u["seq"] for u in last] == list(range(1, len(last) + 1))
            assert latest(final) == "cancelled"
        except AssertionError:
            print(f"worker log:\n{worker.log_tail()}")
            raise
        finally:
            elapsed = time.monotonic() - started
            reader.close()
            worker.stop()
            looked.stop()
        print(f"janitor test: {elapsed:.0f}s")
