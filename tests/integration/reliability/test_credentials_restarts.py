"""Workers restarted while GoCardless still refuses the key. Restarted with the very key it
refused (a rolling deploy, a crash loop), a worker does not try the parked command again.
With another key (a second wrong one), it tries at once, and a try refused again must not use
up the retry schedule: the command stays parked on its schedule, and nothing is dead-lettered
before the schedule's last retry."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.publisher import Publisher
from streams.topics import TopicMap
from tests.support.workers import WorkerProcess

from .support import Reader, create_intent, gocardless, metric_sum, wait_until, worker_env

pytestmark = [pytest.mark.broker]


@pytest.mark.timeout(240)
def test_restarts_with_the_key_still_refused_do_not_use_up_the_schedule(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    agg = f"pay-{uuid.uuid4().hex[:10]}"
    reader = Reader(broker.bootstrap, {tm.dlq.name: "DeadLetter"})

    with gocardless() as (sandbox, _proxy, mandate):
        # two retries ten minutes apart: only restarts come before them in this test
        env = worker_env(
            broker.bootstrap, topic_prefix, tmp_path, sandbox.base_url,
            PAYBUS_RETRY_SCHEDULE_S="[600,600]",
            PAYBUS_GOCARDLESS__ACCESS_TOKEN="revoked-token",
        )  # fmt: skip
        pub = Publisher(broker.bootstrap, topic_prefix=topic_prefix)
        try:
            worker = WorkerProcess.paybus(env, tmp_path / "parks.log").start()
            try:
                worker.wait_ready()
                pub.publish_crm_change(create_intent(agg, mandate))
                wait_until(lambda: metric_sum(worker, "paybus_parked_messages") >= 1, 60, "parked")
            finally:
                worker.stop()
            for n, token in enumerate(["revoked-token", "second-wrong", "third-wrong"]):
                again = {**env, "PAYBUS_GOCARDLESS__ACCESS_TOKEN": token}
                worker = WorkerProcess.paybus(again, tmp_path / f"restart{n}.log").start()
                try:
                    worker.wait_ready()

                    def refused(w: WorkerProcess = worker) -> bool:
                        return (
                            metric_sum(w, "paybus_connector_errors_total", kind="credentials") >= 1
                        )

                    def waiting(w: WorkerProcess = worker) -> bool:
                        return metric_sum(w, "paybus_parked_for_credentials") >= 1

                    if n == 0:  # the key it refused: the tick that gauges it would have tried
                        wait_until(waiting, 60, "the parked create read back")
                        assert metric_sum(worker, "paybus_connector_errors_total") == 0
                        assert (
                            metric_sum(
                                worker, "paybus_retries_total", outcome="credentials_recheck"
                            )
                            == 0
                        )
                    else:
                        wait_until(refused, 60, "the parked create tried again at start")
                        wait_until(waiting, 30, "still parked")
                finally:
                    worker.stop()
                reader.poll()
                letters = [r for r in reader.records[tm.dlq.name] if r.get("aggregate_id") == agg]
                assert letters == [], f"restart {n}: {[r['reason'] for r in letters]}"
        finally:
            pub.close()
            reader.close()
