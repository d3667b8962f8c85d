"""Direct debits with a future collection date are held back and submitted when due.

A first worker holds both payments (nothing reaches the PSP). A second worker, configured to
submit five days ahead, finds one of them due (charge date in four days; GoCardless needs
three): it is submitted through the retry stage; the other (in thirty days) stays held.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.publisher import Publisher
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess, wait_for

from .support import create_intent, gocardless, payments_at_psp, worker_env

pytestmark = [pytest.mark.broker]


def _metric(worker: WorkerProcess, name: str) -> float:
    for line in (worker.metrics_text() or "").splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.timeout(180)
def test_due_collection_submitted_future_one_held(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    today = datetime.now(UTC).date()
    soon, later = f"soon-{uuid.uuid4().hex[:8]}", f"later-{uuid.uuid4().hex[:8]}"
    with gocardless() as (sandbox, _proxy, mandate):
        env = worker_env(
            broker.bootstrap, topic_prefix, tmp_path, sandbox.base_url,
            PAYBUS_OPS__COLLECTION_INTERVAL_S="0.5", PAYBUS_OPS__COLLECTION_BATCH_SIZE="1",
        )  # fmt: skip
        first = WorkerProcess.paybus(env, tmp_path / "first.log").start()
        try:
            first.wait_ready()
            with Publisher(broker.bootstrap, topic_prefix=topic_prefix) as pub:
                pub.publish_crm_changes([
                    create_intent(soon, mandate, charge_date=str(today + timedelta(days=4))),
                    create_intent(later, mandate, charge_date=str(today + timedelta(days=30))),
                ])  # fmt: skip
            held = 'paybus_scheduled_collections_total{outcome="scheduled"}'
            wait_for(lambda: _metric(first, held) == 2, 60, "both payments held")
            wait_for(lambda: _metric(first, "paybus_parked_messages") == 2, 30, "both parked")
            assert payments_at_psp(sandbox) == []
        finally:
            first.stop()
        second_env = {**env, "PAYBUS_OPS__COLLECTION_LEAD_DAYS": "5"}
        second = WorkerProcess.paybus(second_env, tmp_path / "second.log").start()
        try:
            second.wait_ready()

            def submitted() -> bool:
                return [
                    p.metadata.get("paybus_aggregate_id") for p in payments_at_psp(sandbox)
                ] == [soon]

            try:
                wait_for(submitted, 60, "the due collection submitted")
            except AssertionError:
                lines = (second.metrics_text() or "").splitlines()
                raise AssertionError(
                    [
                        x
                        for x in lines
                        if "paybus_" in x and "_created" not in x and not x.startswith("#")
                    ]
                ) from None
            released = 'paybus_scheduled_collections_total{outcome="released"}'
            assert _metric(second, released) == 1
            wait_for(lambda: _metric(second, "paybus_parked_messages") == 1, 30, "one still held")
            assert [p.metadata.get("paybus_aggregate_id") for p in payments_at_psp(sandbox)] == [
                soon
            ]
        finally:
            second.stop()
