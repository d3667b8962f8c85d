"""GoCardless refuses paybus's key (revoked, mistyped): the payments wait parked, none turns
``failed`` in the CRM, and a worker restarted with the right key carries them out at once
rather than after the rest of the retry schedule (hours, in production).

Three workers in turn against the GoCardless sandbox, which checks the bearer token: one with
the key creates a payment; one with a revoked key is asked to cancel it and to create another
(both refused with 401); one with the key again does both.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.publisher import Publisher
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess

from .support import (
    Reader,
    cancel_intent,
    create_intent,
    gocardless,
    metric_sum,
    payments_at_psp,
    statuses,
    wait_until,
    worker_env,
)

pytestmark = [pytest.mark.broker]


@pytest.mark.timeout(240)
def test_refused_key_parks_payments_and_a_restart_with_the_key_carries_them_out(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    earlier, during = (f"pay-{uuid.uuid4().hex[:10]}" for _ in range(2))
    reader = Reader(broker.bootstrap, {tm.status_updates.name: "StatusUpdate"})

    def status_of(agg: str) -> set[str]:
        reader.poll()
        updates = statuses(reader.records[tm.status_updates.name]).get(agg, {})
        return {u["to_status"] for u in updates.values()}

    with gocardless() as (sandbox, _proxy, mandate):
        # one retry, ten minutes on: only the restart can bring the parked commands back in time
        good = worker_env(
            broker.bootstrap, topic_prefix, tmp_path, sandbox.base_url,
            PAYBUS_RETRY_SCHEDULE_S="[600]",
        )  # fmt: skip
        revoked = {**good, "PAYBUS_GOCARDLESS__ACCESS_TOKEN": "revoked-token"}
        pub = Publisher(broker.bootstrap, topic_prefix=topic_prefix)
        try:
            worker = WorkerProcess.paybus(good, tmp_path / "first.log").start()
            try:
                worker.wait_ready()
                pub.publish_crm_change(create_intent(earlier, mandate))
                wait_until(lambda: "pending_submission" in status_of(earlier), 60, "created")
            finally:
                worker.stop()

            worker = WorkerProcess.paybus(revoked, tmp_path / "revoked.log").start()
            try:
                worker.wait_ready()
                pub.publish_crm_changes([cancel_intent(earlier), create_intent(during, mandate)])

                def both_parked() -> bool:
                    # (a command routed again after the restart waits behind its first copy)
                    return (
                        metric_sum(worker, "paybus_connector_errors_total", kind="credentials") >= 2
                        and metric_sum(worker, "paybus_parked_messages") >= 2
                    )

                wait_until(both_parked, 60, "the cancel and the create parked")
                # nothing is failed: not the payment that exists, not the one that does not yet
                assert "failed" not in status_of(earlier) | status_of(during)
                at_psp = payments_at_psp(sandbox)
                assert [(p.metadata.get("paybus_aggregate_id"), p.status) for p in at_psp] == [
                    (earlier, "pending_submission")
                ]
            finally:
                worker.stop()

            worker = WorkerProcess.paybus(good, tmp_path / "fixed.log").start()
            try:
                worker.wait_ready()

                def carried_out() -> bool:
                    return "cancelled" in status_of(earlier) and "pending_submission" in status_of(
                        during
                    )

                wait_until(carried_out, 60, "the cancel and the create carried out")
                recheck = metric_sum(worker, "paybus_retries_total", outcome="credentials_recheck")
                assert recheck >= 2
                assert "failed" not in status_of(earlier) | status_of(during)
                by_agg = {
                    p.metadata.get("paybus_aggregate_id"): p for p in payments_at_psp(sandbox)
                }
                assert sorted(by_agg) == sorted([earlier, during])  # each created once
                assert by_agg[earlier].status == "cancelled"
            finally:
                worker.stop()
        finally:
            pub.close()
            reader.close()
