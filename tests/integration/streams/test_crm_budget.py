"""The CRM writer keeps to ``salesforce.calls_per_minute``: a trickle of updates waits for the
budget and is written in fewer, larger batches, and nothing is lost."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaProducer

from connectors.salesforce.budget import CallBudget
from connectors.salesforce.sandbox import start_sandbox
from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.codec import AvroCodec
from streams.topics import TopicMap
from tests.integration.streams.test_crm_salesforce import Env, Reader, sandbox_env, update
from tests.support.workers import WorkerProcess, paybus_env, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.timeout(180)]

PER_MINUTE = 30.0  # 0.5 calls a second, a burst of 5


def test_a_trickle_of_updates_keeps_to_the_call_budget(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    tm = TopicMap(prefix, 8, 1)
    create_topics(broker.bootstrap, tm.all())
    aggs = [f"budget-{n:02d}" for n in range(60)]
    with start_sandbox(db_path=tmp_path / "sf.sqlite") as sandbox:
        seeded = [{"External_Id__c": a} for a in ["budget-warm", *aggs]]
        sandbox.admin.seed("Payment__c", seeded, as_user="x")
        worker_env = paybus_env(
            broker.bootstrap, prefix, tmp_path, **sandbox_env(sandbox),
            PAYBUS_SALESFORCE__FLUSH_INTERVAL_S="0.1",
            PAYBUS_SALESFORCE__CALLS_PER_MINUTE=str(PER_MINUTE),
            PAYBUS_CRM__POLL="false",
        )  # fmt: skip
        worker = WorkerProcess.paybus(worker_env, tmp_path / "worker.log", "--role", "crm")
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
        reader = Reader(broker.bootstrap, tm)
        env = Env(broker.bootstrap, tm, sandbox, None, worker, reader, producer, AvroCodec())  # type: ignore[arg-type]
        try:
            worker.start().wait_ready()
            # Until the worker consumes (its group joined), so the trickle below is a trickle.
            env.publish([update("budget-warm", 1)])
            wait_for(lambda: env.settled() >= 1, 60, "the warm-up update settled")
            calls_before = env.metric("paybus_crm_api_calls_total", operation="write")
            started = time.monotonic()
            for i in range(0, len(aggs), 6):  # 6 updates every 0.25 s: unpaced, ~10 batches
                env.publish([update(a, 1) for a in aggs[i : i + 6]])
                time.sleep(0.25)
            wait_for(lambda: env.settled() >= len(aggs) + 1, 90, "60 updates settled")
            elapsed = time.monotonic() - started
            calls = env.metric("paybus_crm_api_calls_total", operation="write") - calls_before
            waited = env.metric("paybus_crm_budget_wait_seconds_total", operation="write")
            stored = env.records_by_ext()
            allowance = {
                kind: env.metric("paybus_crm_api_allowance_calls", kind=kind)
                for kind in ("used", "limit")
            }
            org_usage = sandbox.admin.usage()
        finally:
            producer.close()
            reader.consumer.close()
            worker.stop()
    print(f"\n60 trickled updates: {calls:.0f} calls in {elapsed:.1f}s, {waited:.1f}s waited")
    assert {a: stored[a]["Bus_Seq__c"] for a in aggs} == dict.fromkeys(aggs, 1)
    budget = CallBudget(PER_MINUTE)
    # Within the burst (less the warm-up's read and write) plus the rate over the run, plus
    # the last batch's read and write (charged after it is made).
    assert calls <= budget.burst + budget.rate * elapsed + 2
    assert waited > 0  # the budget, not the flush wait, set the pace
    # The org's allowance as its responses reported it (the last call's count).
    assert allowance == {"used": org_usage["used"], "limit": org_usage["limit"]}
