"""The CRM writer through a Salesforce outage longer than the consumer's max poll interval.

While Salesforce does not answer, the writer holds its batch for as long as the outage lasts.
Its stream buffer fills, Faust stops fetching those partitions, and a worker left with nothing
to fetch polled no more: aiokafka took it out of the group after the max poll interval and it
never came back (it consumed nothing after the outage, until restarted); a buffer filled by
one large fetch also stopped every other stage on the worker. The interval is made 3 s here
(``PAYBUS_MAX_POLL_INTERVAL_S``; 1000 s by default) so that an outage of a few seconds is
longer than it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaProducer

from connectors.salesforce.sandbox import Sandbox, start_sandbox
from streams.admin import create_topics
from streams.broker import EmbeddedBroker
from streams.codec import AvroCodec
from streams.lag import group_lag
from streams.topics import TopicMap
from tests.integration.streams.test_crm_salesforce import sandbox_env, update, worker_metric
from tests.integration.streams.test_sequencer_agent import direct_debit_event, publish_events
from tests.support.workers import WorkerProcess, paybus_env, wait_for

pytestmark = pytest.mark.broker

MAX_POLL_S = 3.0
AGGS = [f"mp-{n:03d}" for n in range(400)]
WRITTEN = "paybus_crm_records_written_total"  # one count per update, whatever its outcome


@dataclass
class Stack:
    """Topics, the Salesforce sandbox (every record of ``AGGS`` seeded) and a producer."""

    broker: EmbeddedBroker
    tmp: Path
    tm: TopicMap
    sandbox: Sandbox
    producer: KafkaProducer

    def worker(self, name: str, *roles: str) -> WorkerProcess:
        env = paybus_env(
            self.broker.bootstrap, self.tm.prefix, self.tmp / name, **sandbox_env(self.sandbox),
            PAYBUS_MAX_POLL_INTERVAL_S=str(MAX_POLL_S),
            PAYBUS_SALESFORCE__FLUSH_INTERVAL_S="0.05",
            PAYBUS_SALESFORCE__UPDATES_PER_BATCH="50",
            PAYBUS_SALESFORCE__OUTAGE_RETRY_MAX_S="0.5",
            PAYBUS_CRM__POLL="false",
        )  # fmt: skip
        args = [a for role in roles for a in ("--role", role)]
        return WorkerProcess.paybus(env, self.tmp / f"{name}.log", *args)

    def publish(self, seqs: range) -> int:
        """Status updates ``seqs`` of every aggregate, in order; how many."""
        codec = AvroCodec()
        for seq in seqs:
            for agg in AGGS:
                value = codec.encode("StatusUpdate", update(agg, seq))
                self.producer.send(self.tm.status_updates.name, key=agg.encode(), value=value)
        self.producer.flush()
        return len(seqs) * len(AGGS)

    def all_at(self, seq: int) -> bool:
        records = self.sandbox.admin.records("Payment__c")
        return {r["External_Id__c"]: r["Bus_Seq__c"] for r in records} == dict.fromkeys(AGGS, seq)

    def outage(self) -> None:
        self.sandbox.admin.fail_next(count=10**6, status=503)  # every call, until cleared


@contextmanager
def stack(broker: EmbeddedBroker, tmp: Path) -> Iterator[Stack]:
    tm = TopicMap(f"t{uuid.uuid4().hex[:10]}", 8, 1)
    create_topics(broker.bootstrap, tm.all())
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    with start_sandbox(db_path=tmp / "sf.sqlite") as sandbox:
        sandbox.admin.seed(
            "Payment__c", [{"External_Id__c": a} for a in AGGS], as_user="integration"
        )
        try:
            yield Stack(broker, tmp, tm, sandbox, producer)
        finally:
            producer.close()


def written(workers: list[WorkerProcess]) -> list[float]:
    return [worker_metric(w, WRITTEN) for w in workers]


def test_an_outage_longer_than_the_max_poll_interval_leaves_no_worker_behind(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    with stack(broker, tmp_path) as s:
        workers = [s.worker("a", "crm"), s.worker("b", "crm")]
        try:
            for w in workers:
                w.start()
            for w in workers:
                w.wait_ready()
            # Salesforce up: the group has settled, each worker writes its partitions' records.
            s.publish(range(1, 2))
            wait_for(lambda: sum(written(workers)) >= len(AGGS), 60, "the first round written")
            before = written(workers)
            assert min(before) > 0
            s.outage()
            # ~5,000 updates a worker: its stream buffer fills and Faust stops fetching them;
            # the one without Faust's assignor partition is left with nothing to fetch.
            published = s.publish(range(2, 27))

            def waiting() -> bool:
                return all(worker_metric(w, "paybus_crm_unavailable") == 1 for w in workers)

            wait_for(waiting, 30, "both writers to wait the outage out")
            time.sleep(3 * MAX_POLL_S)
            assert waiting() and written(workers) == before  # nothing settled, none dead-lettered
            s.sandbox.admin.clear_faults()
            wait_for(lambda: s.all_at(26), 60, "every record at its latest status")
            after = written(workers)
            # Both workers still own their partitions: each writes some of the next round.
            published += s.publish(range(27, 28))
            wait_for(lambda: s.all_at(27), 30, "the round after the outage")
            wait_for(lambda: sum(written(workers)) >= sum(before) + published, 10, "counts")
            now = written(workers)
            assert all(n > a for n, a in zip(now, after, strict=True)), (after, now)
            # Every update handled exactly once: no rebalance, nothing read twice.
            assert sum(now) - sum(before) == published
            for w in workers:
                assert worker_metric(w, "paybus_dead_letters_total", stage="crm-writer") == 0
                assert worker_metric(w, "paybus_crm_unavailable") == 0

            def committed_to_the_end() -> bool:
                rows = group_lag(broker.bootstrap, f"{s.tm.prefix}-app")
                status = [r for r in rows if r.topic == s.tm.status_updates.name]
                return len(status) == 8 and all(r.lag == 0 for r in status)

            wait_for(committed_to_the_end, 15, "every status partition committed to its end")
        finally:
            for w in workers:
                w.stop()


def test_other_stages_of_the_worker_keep_moving_through_an_outage(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    with stack(broker, tmp_path) as s:
        s.outage()
        # A worker (re)started during an outage: its first fetches bring the whole backlog.
        published = s.publish(range(1, 21))
        worker = s.worker("w", "crm", "sequencer").start()
        try:
            worker.wait_ready()
            wait_for(lambda: worker_metric(worker, "paybus_crm_unavailable") == 1, 30, "the wait")
            events = [direct_debit_event(f"e-{n}", f"seq-{n}", "created", 1) for n in range(20)]
            publish_events(broker.bootstrap, s.tm.payment_events.name, events)

            def applied() -> float:
                labels = {"stage": "sequencer", "outcome": "applied"}
                return worker_metric(worker, "paybus_events_total", **labels)

            wait_for(lambda: applied() == 20, 15, "the sequencer to apply events meanwhile")
            assert worker_metric(worker, "paybus_crm_unavailable") == 1  # still waiting
            s.sandbox.admin.clear_faults()
            wait_for(lambda: s.all_at(20), 60, "every record at its latest status")
            # and the sequencer's 20 updates too (no CRM record: not_found)
            wait_for(lambda: worker_metric(worker, WRITTEN) >= published + 20, 30, "all settled")
            assert worker_metric(worker, "paybus_dead_letters_total", stage="crm-writer") == 0
        finally:
            worker.stop()
