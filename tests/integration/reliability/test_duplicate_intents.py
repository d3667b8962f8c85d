"""A CRM record saved twice before its status came back asks for one payment twice, under two
change ids (so two command ids, two PSP idempotency keys): the PSP must see one payment."""

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
    create_intent,
    gocardless,
    payments_at_psp,
    statuses,
    wait_until,
    worker_env,
)

pytestmark = [pytest.mark.broker]


def _router_duplicates(worker: WorkerProcess) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in (worker.metrics_text() or "").splitlines()
        if line.startswith("paybus_events_total{")
        and 'stage="router"' in line
        and 'outcome="duplicate"' in line
    )


@pytest.mark.timeout(120)
def test_a_payment_asked_for_twice_is_created_once(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    with gocardless() as (sandbox, proxy, mandate):
        env = worker_env(broker.bootstrap, topic_prefix, tmp_path, proxy.base_url)
        worker = WorkerProcess.paybus(env, tmp_path / "worker.log").start()
        reader = Reader(broker.bootstrap, {tm.status_updates.name: "StatusUpdate"})
        twice, once = (f"pay-{uuid.uuid4().hex[:10]}" for _ in range(2))
        try:
            worker.wait_ready()
            first = create_intent(twice, mandate)
            edited = {**first, "change_id": f"{first['change_id']}-edit", "description": "typo"}
            with Publisher(broker.bootstrap, topic_prefix=topic_prefix) as pub:
                pub.publish_crm_change(first)
                pub.publish_crm_change(edited)  # the record saved again, status still new
                pub.publish_crm_change(create_intent(once, mandate))

            def both_submitted() -> bool:
                reader.poll()
                return {twice, once} <= set(statuses(reader.records[tm.status_updates.name]))

            wait_until(both_submitted, 60, "both payments' first status")
            wait_until(lambda: _router_duplicates(worker) == 1, 30, "the repeat counted")
        finally:
            reader.close()
            worker.stop()
        created = [a for kind, a in proxy.reached if kind == "create"]
        assert sorted(created) == sorted([twice, once]), created
        at_psp = [p.metadata.get("paybus_aggregate_id") for p in payments_at_psp(sandbox)]
        assert sorted(at_psp) == sorted([twice, once])


@pytest.mark.timeout(150)
def test_a_payment_asked_for_again_after_a_restart_is_not_created_again(
    broker: EmbeddedBroker, topic_prefix: str, tmp_path: Path
) -> None:
    """The router's memory of what it routed is a changelogged table: a worker started later
    (a deploy, a crash) still knows the payment exists."""
    tm = TopicMap(topic_prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    with gocardless() as (sandbox, proxy, mandate):
        env = worker_env(broker.bootstrap, topic_prefix, tmp_path, proxy.base_url)
        reader = Reader(broker.bootstrap, {tm.status_updates.name: "StatusUpdate"})
        agg = f"pay-{uuid.uuid4().hex[:10]}"
        first = create_intent(agg, mandate)
        pub = Publisher(broker.bootstrap, topic_prefix=topic_prefix)
        try:
            worker = WorkerProcess.paybus(env, tmp_path / "first.log").start()
            try:
                worker.wait_ready()
                pub.publish_crm_change(first)

                def submitted() -> bool:
                    reader.poll()
                    return agg in statuses(reader.records[tm.status_updates.name])

                wait_until(submitted, 60, "the payment's first status")
            finally:
                worker.stop()
            worker = WorkerProcess.paybus(env, tmp_path / "second.log").start()
            try:
                worker.wait_ready()
                pub.publish_crm_change({**first, "change_id": f"{first['change_id']}-edit"})
                wait_until(lambda: _router_duplicates(worker) >= 1, 60, "the repeat counted")
            finally:
                worker.stop()
        finally:
            pub.close()
            reader.close()
        created = [a for kind, a in proxy.reached if kind == "create"]
        assert created == [agg], created
        assert [p.metadata.get("paybus_aggregate_id") for p in payments_at_psp(sandbox)] == [agg]
